"""SQL persistence of stylefarm: typed ORM models, engine/session handling, migrations.

Only ``shared.jobs`` writes job rows; everything else reads through it.
"""

from shared.db.models import Base, Input, Job, Model
from shared.db.session import configure, get_engine, session_scope

__all__ = ["Base", "Input", "Job", "Model", "configure", "get_engine", "session_scope"]
