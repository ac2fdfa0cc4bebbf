"""Build the ``EngineContext`` of one job: the worker's bridge between the pure engine and
SQL / blob storage (the files it downloads are cached by ``worker.caches``).

* ``read_input(ref)``: the input row (tenant, sha256) -> its storage key -> bytes (memoized
  for the job, a style used twice is fetched once).
* ``resolve_model(ref)``: the models row (id or name) -> a local file cached by checksum
  under ``Settings.resolved_model_cache_dir`` (downloaded once per machine, atomically).
* ``dataset_dir(ref)``: an archive input (zip / tar[.gz|.bz2|.xz]) downloaded and extracted
  into a flat folder of images, cached by sha256; or a ``prefix:NAME`` dataset, the images
  under the tenant's storage prefix, synced once.
* ``progress``: throttled to ``Settings.progress_interval_s`` (the last step always goes
  through); ``record_progress`` answering True (cancel requested) is remembered.
* ``is_canceled``: the DB flag (checked at most every ``CANCEL_POLL_S``) plus the soft
  time-limit deadline, which raises ``TimeLimitExceeded`` inside the engine.
* ``on_checkpoint``: uploads the training checkpoint to ``checkpoint_key`` (throttled);
  ``restore_checkpoint`` downloads it again when a retried training resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.engine.context import EngineContext, Progress
from shared.errors import InvalidSpec, NotFound, TimeLimitExceeded
from shared.jobs import inputs, model_registry, store
from shared.jobs.specs import dataset_prefix_name
from shared.settings import Settings
from shared.storage import Storage, checkpoint_key, dataset_prefix
from worker.caches import cached_download, extract_archive_cached, sync_prefix_cached

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
    inputs: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

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
        return cached_download(self.storage, model.storage_key, model.checksum,
                               self.settings.resolved_model_cache_dir, suffix=".pt")

    # --- datasets ---
    def dataset_dir(self, ref: str) -> Path:
        root = (self.settings.home / "datasets").resolve()
        name = dataset_prefix_name(ref)
        if name is not None:
            return sync_prefix_cached(self.storage, dataset_prefix(self.tenant, name), root)
        try:
            row = inputs.get_input(ref, self.tenant)
        except NotFound:
            raise InvalidSpec(
                f"dataset {ref!r}: no uploaded archive with this id; upload a zip or tar of images with POST /v1/inputs"
            ) from None
        return extract_archive_cached(self.storage, row.key, row.sha256, root)

    # --- progress / cancel / limits ---
    def progress(self, p: Progress) -> None:
        self.last_progress = p
        now = time.monotonic()
        final = p.total > 0 and p.step >= p.total
        if not final and now - self.last_progress_write < self.settings.progress_interval_s:
            return
        with self.lock:
            self.last_progress_write = now
            try:
                stop = store.record_progress(self.job_id, step=p.step, total=p.total, loss=p.loss, stage=p.stage)
            except Exception as exc:  # a missed progress write must not kill the job
                log.warning("job %s: progress write failed: %s", self.job_id, exc)
                return
            if stop:
                self.cancel_seen = True
                self.last_cancel_check = now

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
            device=device,
            precision=precision,
        )
