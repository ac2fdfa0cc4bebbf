"""Each job's scratch folder, and the removal of those that a killed pool process left behind.

A job runs in ``<tmp>/stylefarm-<job id>-p<pid>-<random>`` (``job_dir``), removed when the
job's task returns, whatever the outcome. A pool process that is killed (out of memory, a
hard time limit, ``kill -9``) cannot remove it: its inputs, previews and checkpoints stay on
the disk, tens to hundreds of MB each. Every new pool process therefore runs
``sweep_orphans()`` when it starts: it removes the scratch folders whose process is gone.
A folder whose pid is alive (or that this user may not signal) is kept, so workers that
share a temporary directory never remove each other's running jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "stylefarm-"
_NAME = re.compile(r"^stylefarm-.+-p(?P<pid>\d+)-[^-]+$")


@contextlib.contextmanager
def job_dir(job_id: str) -> Iterator[Path]:
    """A new scratch folder for ``job_id`` that names this process, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{job_id}-p{os.getpid()}-") as tmp:
        yield Path(tmp)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the job folders under ``root`` (default: the temporary directory) whose process
    is gone; the removed paths, for the log."""
    base = Path(root if root is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _NAME.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        if int(match["pid"]) == os.getpid() or process_alive(int(match["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    if removed:
        log.info("removed %d scratch folder(s) of killed pool processes: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed
