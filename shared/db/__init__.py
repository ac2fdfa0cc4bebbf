"""SQL persistence of stylefarm: typed ORM models, engine/session handling, migrations.

Only ``shared.jobs.store`` writes job rows; everything else reads through it.
"""

from shared.db.orm import Base, Input, Job, ModelRow
from shared.db.session import configure, get_engine, session_scope

__all__ = ["Base", "Input", "Job", "ModelRow", "configure", "get_engine", "session_scope"]
