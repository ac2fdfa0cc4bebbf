"""Build the ``EngineContext`` of one job: the worker's bridge between the pure engine and
SQL / blob storage (the files it downloads are cached by ``worker.caches``).

* ``read_input(ref)``: the input row (tenant, sha256) -> its storage key -> bytes (memoized
  for the job, a style used twice is fetched once).
* ``resolve_model(ref)``: the models row (id or name) -> a local file cached by checksum
  under ``Settings.resolved_model_cache_dir`` (downloaded once per machine, atomically).
* ``dataset_dir(ref)``: an archive input (zip / tar[.gz|.bz2|.xz]) downloaded and extracted
  into a flat folder of images under the ``Settings.archive_*`` caps, cached by sha256; or
  a ``prefix:NAME`` dataset, the images under the tenant's storage prefix, synced once.
* Both caches stay within their ``Settings.*_cache_budget_bytes`` (least recently used
  entries evicted); every entry the job used is held until ``release_caches()``, which the
  task calls when the job ends.
* ``progress``: throttled to ``Settings.progress_interval_s`` (the last step always goes
  through); ``record_progress`` answering True (cancel requested) is remembered. A preview
  image in the progress (optimize / masked, every ``Settings.preview_every`` of the steps)
  is uploaded to ``preview_key`` with the next write, which bumps ``preview_version``.
* ``is_canceled``: the DB flag (checked at most every ``CANCEL_POLL_S``) plus the soft
  time-limit deadline, which raises ``TimeLimitExceeded`` inside the engine.
* ``on_checkpoint``: uploads the training checkpoint to ``checkpoint_key`` (throttled);
  ``restore_checkpoint`` downloads it again when a retried training resumes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shared.archives import ArchiveLimits
from shared.engine.context import EngineContext, Progress
from shared.errors import InvalidSpec, NotFound, TimeLimitExceeded
from shared.imaging import png_bytes
from shared.jobs import inputs, model_registry, store
from shared.jobs.specs import dataset_prefix_name
from shared.settings import Settings
from shared.storage import Storage, checkpoint_key, dataset_prefix, preview_key
from worker import metrics as worker_metrics
from worker.caches import DiskCache, cached_download, extract_archive_cached, sync_prefix_cached

log = logging.getLogger("stylefarm.worker")

CANCEL_POLL_S = 1.0


@dataclass
class JobRuntime:
    """Mutable state of one running job, shared by the context callbacks."""

    job_id: str
    tenant: str
    settings: Settings
    storage: Storage
    deadline: float | None = None  # monotonic time of the soft limit
    soft_limit_s: float | None = None
    cancel_seen: bool = False
    last_progress_write: float = 0.0
    last_cancel_check: float = 0.0
    last_progress: Progress | None = None
    last_checkpoint_upload: float | None = None  # monotonic
    pending_preview: Image.Image | None = None
    inputs: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache_holds: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # --- inputs ---
    def read_input(self, ref: str) -> bytes:
        if ref in self.inputs:
            return self.inputs[ref]
        row = inputs.get_input(ref, self.tenant)
        data = self.storage.get_bytes(row.key)
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
        final = p.total > 0 and p.step >= p.total
        if not final and now - self.last_progress_write < self.settings.progress_interval_s:
            return
        with self.lock:
            self.last_progress_write = now
            preview = self.upload_preview()
            try:
                stop = store.record_progress(self.job_id, step=p.step, total=p.total, loss=p.loss, stage=p.stage,
                                             preview=preview)
            except Exception as exc:  # a missed progress write must not kill the job
                log.warning("job %s: progress write failed: %s", self.job_id, exc)
                return
            worker_metrics.count_progress_write()
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
        if self.cancel_seen:
            return True
        now = time.monotonic()
        if now - self.last_cancel_check >= CANCEL_POLL_S:
            self.last_cancel_check = now
            try:
                self.cancel_seen = store.is_cancel_requested(self.job_id)
            except Exception as exc:
                log.warning("job %s: cancel check failed: %s", self.job_id, exc)
        return self.cancel_seen

    # --- checkpoints ---
    def on_checkpoint(self, path: Path) -> None:
        """Upload the engine's checkpoint: the first at once, then at most once per
        ``checkpoint_upload_interval_s`` (a fast GPU checkpoints every few seconds; a retried
        job then loses at most that interval of work)."""
        now = time.monotonic()
        interval = self.settings.checkpoint_upload_interval_s
        if self.last_checkpoint_upload is not None and now - self.last_checkpoint_upload < interval:
            return
        key = checkpoint_key(self.tenant, self.job_id)
        try:
            self.storage.upload_file(path, key)
            self.last_checkpoint_upload = now
            log.info("job %s: checkpoint %s uploaded to %s", self.job_id, Path(path).name, key)
        except Exception as exc:  # the next checkpoint will try again
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
        )
