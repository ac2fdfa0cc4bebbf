"""What the API's and the workers' Prometheus metrics share: buckets, label helpers and
prometheus-client's multiprocess mode.

Every metric is named ``stylefarm_*`` with its unit in the name (``_seconds``, ``_bytes``,
``_total``); ``docs/operations.md`` lists them all. The API's are in ``api.metrics``, the
workers' in ``worker.metrics``.

Multiprocess mode (Celery's prefork pool, or an API run with several server processes): every
process writes its samples to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and the
process serving ``/metrics`` adds them up (``multiprocess_registry``). prometheus-client
chooses that file store when it is first imported, so the directory must be in the
environment before then: this module imports it only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Job run times: a 64 px ``fast`` job takes under a second, a training job hours.
JOB_SECONDS_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
#: API request latencies.
HTTP_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Peak memory of a job: 64 MiB to 128 GiB, doubling.
MEMORY_BYTES_BUCKETS = tuple(float(2**k) for k in range(26, 38))

UNKNOWN = "unknown"

_FILE_PID = re.compile(r"_(\d+)\.db$")


def problem_type_label(problem: dict[str, Any] | str | None) -> str:
    """The short name of a problem type (``https://stylefarm.dev/problems/invalid-mask`` ->
    ``invalid-mask``), from a problem dict or its ``type``; ``unknown`` when there is none."""
    kind = problem.get("type") if isinstance(problem, dict) else problem
    if not isinstance(kind, str) or not kind.strip() or kind == "about:blank":
        return UNKNOWN
    return kind.rstrip("/").rsplit("/", 1)[-1] or UNKNOWN


def multiprocess_dir() -> Path | None:
    """The ``PROMETHEUS_MULTIPROC_DIR`` of this process, if it runs in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(path: Path) -> Path:
    """Create ``path`` and remove the sample files a previous run left in it (their counts
    would otherwise be added to this run's), then name it in the environment for this process
    and the processes it starts or forks."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def pids_with_files(path: Path) -> set[int]:
    """The processes that have written samples to ``path``."""
    return {int(m.group(1)) for f in path.glob("*.db") if (m := _FILE_PID.search(f.name))}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists; one of another user's, or a number no pid can be,
    counts as alive (not ours to judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class _ReapingMultiProcessCollector:
    """``MultiProcessCollector`` that first does the bookkeeping for processes that died
    without saying so (a pool process killed by the OOM killer): their live gauges are
    dropped (``mark_process_dead``); their counters and histograms keep counting."""

    def __init__(self, path: Path) -> None:
        from prometheus_client import multiprocess

        self.path = path
        self._inner = multiprocess.MultiProcessCollector(None, path=str(path))

    def collect(self) -> Iterable[Any]:
        from prometheus_client import multiprocess

        for pid in pids_with_files(self.path):
            if pid != os.getpid() and not pid_alive(pid):
                multiprocess.mark_process_dead(pid, str(self.path))
        return self._inner.collect()


def multiprocess_registry(path: Path, *extra: Collector) -> CollectorRegistry:
    """A registry that adds up every process's samples in ``path``, plus ``extra`` collectors
    (computed by the scraping process itself)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_ReapingMultiProcessCollector(path))
    for collector in extra:
        registry.register(collector)
    return registry
