"""Each job's scratch folder, and the removal of those that a killed pool process left behind.

A job runs in ``<tmp>/stylefarm-<job id>-<host>-p<pid>-<random>`` (``job_dir``; ``<host>``: 8 hex
digits of a hash of the host name), removed when the job's task returns, whatever the outcome.
A pool process that is killed (out of memory, a hard time limit, ``kill -9``) cannot remove it:
its inputs, previews and checkpoints stay on the disk, tens to hundreds of MB each. Every new
pool process therefore runs ``sweep_orphans()`` when it starts: it removes the scratch folders
of this host whose process is gone. A folder whose pid is alive (or that this user may not
signal) is kept, and so is one of another host (a temporary directory shared across machines
or containers, whose pids mean nothing here): a live job's folder is never removed. A folder
of a process whose pid was reused since stays until that process is gone too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.metrics import pid_alive

log = logging.getLogger(__name__)

PREFIX = "stylefarm-"
_NAME = re.compile(r"^stylefarm-.+-(?P<host>[0-9a-f]{8})-p(?P<pid>\d{1,10})-[^-]+$")


def host_tag() -> str:
    """8 hex digits naming this host (its name may contain dashes; the tag does not)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def job_dir(job_id: str) -> Iterator[Path]:
    """A new scratch folder for ``job_id`` that names this process, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{job_id}-{host_tag()}-p{os.getpid()}-") as tmp:
        yield Path(tmp)


def sweep_orphans(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the job folders under ``root`` (default: the temporary directory) whose process
    is gone; the removed paths, for the log."""
    base = Path(root if root is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    host = host_tag()
    for path in entries:
        match = _NAME.match(path.name)
        if match is None or match["host"] != host:
            continue
        try:
            if path.is_symlink() or not path.is_dir():
                continue
            pid = int(match["pid"])
            if pid == os.getpid() or pid_alive(pid):
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
        except OSError as exc:  # one bad entry stops nothing
            log.debug("scratch sweep skipped %s: %s", path, exc)
    if removed:
        log.info("removed %d scratch folder(s) of killed pool processes: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed
