"""Build the ``EngineContext`` of one job: the worker's bridge between the pure engine and
SQL / blob storage (the files it downloads are cached by ``worker.caches``), and the lease the
worker holds on the job while it runs.

* ``read_input(ref)``: the input row (tenant, sha256) -> its storage key -> bytes (memoized
  for the job, a style used twice is fetched once; across jobs, the process keeps recently
  read inputs in memory within ``Settings.input_cache_bytes``, ``worker.input_cache``: the
  row is still read every time).
* ``resolve_model(ref)``: the models row (id or name) -> a local file cached by checksum
  under ``Settings.resolved_model_cache_dir`` (downloaded once per machine, atomically).
* ``dataset_dir(ref)``: an archive input (zip / tar[.gz|.bz2|.xz]) downloaded and extracted
  into a flat folder of images under the ``Settings.archive_*`` caps, cached by sha256; or
  a ``prefix:NAME`` dataset, the images under the tenant's storage prefix, synced once.
* Both caches stay within their ``Settings.*_cache_budget_bytes`` (least recently used
  entries evicted); every entry the job used is held until ``release_caches()``, which the
  task calls when the job ends.
* ``progress``: throttled to ``Settings.progress_interval_s``, counted from the claim (the
  claim itself wrote the row): the last step always goes through once a progress write has,
  or once the job has run that long, so a job that ends within one interval of its claim
  writes no progress at all (its claim and its final status say everything a client polling
  or watching it could have seen; most ``fast`` and ``adain`` jobs); each write carries the
  claim's fencing token and renews the lease;
  ``record_progress`` answering True (cancel requested) is remembered. A preview
  image in the progress (optimize / masked, every ``Settings.preview_every`` of the steps)
  is uploaded to ``preview_key`` with the next write, which bumps ``preview_version``.
* ``is_canceled``: True to stop the engine at its next step: the DB cancel flag (checked at
  most every ``CANCEL_POLL_S``, the first time that long after the claim, which found none), a
  lost lease, or a graceful leave that hands the job back (``worker.leave``,
  ``should_hand_back``); the soft time-limit deadline raises ``TimeLimitExceeded`` inside the
  engine.
* ``keep_lease``: a heartbeat thread renews the lease every ``Settings.lease_renew_s`` while
  the job runs (also through long steps without progress: downloads, a slow first step);
  a refused renewal (``LeaseLost``: the sweeper requeued the job) stops the engine.
* ``on_checkpoint``: uploads the training checkpoint to ``checkpoint_key`` (throttled), only
  while the lease holds; ``restore_checkpoint`` downloads it again when a retried training
  resumes; ``flush_checkpoint`` uploads the newest one the throttle held back (hand-back).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shared.archives import ArchiveLimits
from shared.engine.context import EngineContext, Progress
from shared.errors import InvalidSpec, LeaseLost, NotFound, TimeLimitExceeded
from shared.imaging import png_bytes
from shared.jobs import inputs, model_registry, store
from shared.jobs.specs import dataset_prefix_name
from shared.settings import Settings
from shared.storage import Storage, checkpoint_key, dataset_prefix, preview_key
from worker import leave
from worker import metrics as worker_metrics
from worker.caches import DiskCache, cached_download, extract_archive_cached, sync_prefix_cached
from worker.input_cache import process_cache

log = logging.getLogger("stylefarm.worker")

CANCEL_POLL_S = 1.0


@dataclass
class JobRuntime:
    """Mutable state of one running job, shared by the context callbacks."""

    job_id: str
    tenant: str
    settings: Settings
    storage: Storage
    #: The fencing token of this worker's claim; every write names it. ``None``: not a claim
    #: (unit tests), nothing is fenced and no lease is kept.
    token: int | None = None
    deadline: float | None = None  # monotonic time of the soft limit
    soft_limit_s: float | None = None
    cancel_seen: bool = False
    #: The lease is gone (the job was requeued or claimed again): stop, write nothing more.
    lease_lost: bool = False
    #: Graceful leave decided to hand the job back (requeue, not cancel).
    handing_back: bool = False
    #: monotonic time of the last progress write and cancel check; the claim counts as both
    last_progress_write: float = field(default_factory=lambda: time.monotonic())
    last_cancel_check: float = field(default_factory=lambda: time.monotonic())
    progress_written: bool = False  # a progress write of this run went through
    last_progress: Progress | None = None
    #: (monotonic time, step) of the first and the latest progress report of this run: the rate
    #: behind the graceful-leave estimate.
    first_sample: tuple[float, int] | None = None
    last_sample: tuple[float, int] | None = None
    last_checkpoint_upload: float | None = None  # monotonic
    pending_preview: Image.Image | None = None
    pending_checkpoint: Path | None = None  # written by the engine, held back by the upload throttle
    inputs: dict[str, bytes] = field(default_factory=dict)
    input_seconds: float = 0.0  # this attempt's wall time in read_input: the result's ``metrics.input_seconds``
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache_holds: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # --- inputs ---
    def read_input(self, ref: str) -> bytes:
        if ref in self.inputs:
            return self.inputs[ref]
        started = time.perf_counter()
        try:
            row = inputs.get_input(ref, self.tenant)  # every time: whether this job may use it is SQL's to say
            if self.settings.input_cache_bytes > 0:
                cache = process_cache(self.settings.input_cache_bytes)
                data, from_memory = cache.read(row.key, row.sha256, self.storage.get_bytes)
            else:
                data, from_memory = self.storage.get_bytes(row.key), False
            worker_metrics.count_input_read(from_memory)
        finally:
            with self.lock:
                self.input_seconds += time.perf_counter() - started
        self.inputs[ref] = data
        return data

    # --- models ---
    def resolve_model(self, ref: str) -> Path:
        model = model_registry.get_model(ref, self.tenant)
        cache = DiskCache(self.settings.resolved_model_cache_dir, self.settings.model_cache_budget_bytes)
        return cached_download(self.storage, model.storage_key, model.checksum, cache, self.cache_holds,
                               suffix=".pt", size_hint=model.size_bytes or 0)

    # --- datasets ---
    def dataset_dir(self, ref: str) -> Path:
        cache = DiskCache(self.settings.resolved_dataset_cache_dir, self.settings.dataset_cache_budget_bytes)
        name = dataset_prefix_name(ref)
        if name is not None:
            return sync_prefix_cached(self.storage, dataset_prefix(self.tenant, name), cache, self.cache_holds)
        try:
            row = inputs.get_input(ref, self.tenant)
        except NotFound:
            raise InvalidSpec(
                f"dataset {ref!r}: no uploaded archive with this id; upload a zip or tar of images with POST /v1/inputs"
            ) from None
        return extract_archive_cached(self.storage, row.key, row.sha256, cache, self.cache_holds,
                                      ArchiveLimits.from_settings(self.settings), size_hint=row.size)

    def release_caches(self) -> None:
        """Let the cache entries this job used be evicted again."""
        self.cache_holds.close()

    # --- progress / cancel / limits ---
    def progress(self, p: Progress) -> None:
        self.last_progress = p
        if p.preview is not None:
            self.pending_preview = p.preview  # goes out with the next progress write
        now = time.monotonic()
        self.last_sample = (now, p.step)
        if self.first_sample is None:
            self.first_sample = self.last_sample
        final = p.total > 0 and p.step >= p.total
        if self.token is None or self.lease_lost:
            return
        if now - self.last_progress_write < self.settings.progress_interval_s and not (final and self.progress_written):
            return  # within an interval: the next write (or the final status) says it
        with self.lock:
            self.last_progress_write = now
            preview = self.upload_preview()
            try:
                stop = store.record_progress(self.job_id, token=self.token, step=p.step, total=p.total, loss=p.loss,
                                             stage=p.stage, preview=preview)
            except LeaseLost as exc:  # answered "stop": is_canceled stops the engine at its next step
                self._lose_lease(exc)
                return
            except Exception as exc:  # a missed progress write must not kill the job
                log.warning("job %s: progress write failed: %s", self.job_id, exc)
                return
            worker_metrics.count_progress_write()
            self.progress_written = True
            if stop:
                self.cancel_seen = True
                self.last_cancel_check = now

    def upload_preview(self) -> bool:
        """Upload the pending preview image to ``preview_key`` (overwriting the last one);
        True when one was uploaded."""
        image, self.pending_preview = self.pending_preview, None
        if image is None:
            return False
        try:
            self.storage.put_bytes(preview_key(self.tenant, self.job_id), png_bytes(image), content_type="image/png")
            return True
        except Exception as exc:  # a missed preview must not kill the job
            log.warning("job %s: preview upload failed: %s", self.job_id, exc)
            return False

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeLimitExceeded(
                f"the job ran longer than its {self.soft_limit_s:.0f}s time limit and was stopped",
                limit_s=self.soft_limit_s,
            )

    def is_canceled(self) -> bool:
        self.check_deadline()
        if self.lease_lost or self.handing_back:
            return True
        if leave.leaving() and self.should_hand_back():
            log.warning("job %s: this worker is leaving; handing the job back", self.job_id)
            self.flush_checkpoint()
            self.handing_back = True
            return True
        if self.cancel_seen or self.token is None:
            return self.cancel_seen
        now = time.monotonic()
        if now - self.last_cancel_check >= CANCEL_POLL_S:
            self.last_cancel_check = now
            try:
                self.cancel_seen = store.is_cancel_requested(self.job_id)
            except Exception as exc:
                log.warning("job %s: cancel check failed: %s", self.job_id, exc)
        return self.cancel_seen

    def should_hand_back(self) -> bool:
        """During a graceful leave: False while the job should end within the leave's grace
        period (``Settings.shutdown_grace_s`` from ``worker.leave.since()``) at the rate its
        steps went so far; True once it would not, or when there is no rate to tell yet."""
        began = leave.since()
        if began is None:
            return False
        left_s = began + self.settings.shutdown_grace_s - time.time()
        if left_s <= 0 or self.first_sample is None or self.last_sample is None or self.last_progress is None:
            return True
        (t0, step0), (t1, step1) = self.first_sample, self.last_sample
        if step1 <= step0 or t1 <= t0:
            return True
        remaining_steps = max(0, self.last_progress.total - step1)
        return remaining_steps * (t1 - t0) / (step1 - step0) > left_s

    # --- the lease ---
    def _lose_lease(self, exc: LeaseLost) -> None:
        if not self.lease_lost:
            log.warning("job %s: %s", self.job_id, exc.detail)
        self.lease_lost = True

    def check_lease(self) -> None:
        """``LeaseLost`` unless this claim still holds the job (asked before every upload)."""
        if self.token is None:
            return
        try:
            store.check_lease(self.job_id, self.token)
        except LeaseLost as exc:
            self._lose_lease(exc)
            raise

    @contextlib.contextmanager
    def keep_lease(self) -> Iterator[None]:
        """Renew the lease every ``Settings.lease_renew_s`` in a thread while the body runs."""
        if self.token is None:
            yield
            return
        token = self.token
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.settings.lease_renew_s):
                try:
                    store.renew_lease(self.job_id, token)
                except LeaseLost as exc:
                    self._lose_lease(exc)
                    return
                except Exception as exc:  # the database is away: keep trying until the lease runs out
                    log.warning("job %s: lease renewal failed: %s", self.job_id, exc)

        thread = threading.Thread(target=beat, name=f"lease-{self.job_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

    # --- checkpoints ---
    def on_checkpoint(self, path: Path) -> None:
        """Upload the engine's checkpoint: the first at once, then at most once per
        ``checkpoint_upload_interval_s`` (a fast GPU checkpoints every few seconds; a retried
        job then loses at most that interval of work). Only while this claim holds the lease:
        a stale holder must not overwrite the checkpoint of the job's new holder. While the job
        is handed back, at once: it is the checkpoint the run saved as it stopped."""
        now = time.monotonic()
        interval = self.settings.checkpoint_upload_interval_s
        recent = self.last_checkpoint_upload is not None and now - self.last_checkpoint_upload < interval
        if recent and not self.handing_back:
            self.pending_checkpoint = Path(path)
            return
        self._upload_checkpoint(Path(path), now)

    def flush_checkpoint(self) -> None:
        """Upload the newest checkpoint the throttle held back (the job is being handed back)."""
        path, self.pending_checkpoint = self.pending_checkpoint, None
        if path is not None and path.is_file():
            self._upload_checkpoint(path, time.monotonic())

    def _upload_checkpoint(self, path: Path, now: float) -> None:
        key = checkpoint_key(self.tenant, self.job_id)
        try:
            self.check_lease()
            self.storage.upload_file(path, key)
            self.last_checkpoint_upload = now
            self.pending_checkpoint = None
            log.info("job %s: checkpoint %s uploaded to %s", self.job_id, path.name, key)
        except LeaseLost:
            return  # is_canceled stops the engine
        except Exception as exc:  # the next checkpoint will try again
            self.pending_checkpoint = path
            log.warning("job %s: checkpoint upload failed: %s", self.job_id, exc)

    def restore_checkpoint(self, work_dir: Path) -> Path | None:
        """Download the last uploaded checkpoint of this job (a retried training resumes)."""
        key = checkpoint_key(self.tenant, self.job_id)
        if not self.storage.exists(key):
            return None
        target = work_dir / "checkpoint.pt"
        self.storage.download_to(key, target)
        log.info("job %s: resuming from checkpoint %s", self.job_id, key)
        return target

    def context(self, work_dir: Path, device: str, precision: str) -> EngineContext:
        return EngineContext(
            read_input=self.read_input,
            resolve_model=self.resolve_model,
            dataset_dir=self.dataset_dir,
            progress=self.progress,
            is_canceled=self.is_canceled,
            work_dir=work_dir,
            on_checkpoint=self.on_checkpoint,
            preview_every=self.settings.preview_every,
            device=device,
            precision=precision,
            tile_size=self.settings.tile_size,
            tile_overlap=self.settings.tile_overlap,
            tile_stats_size=self.settings.tile_stats_size,
        )
