"""Build the ``EngineContext`` of one job: the worker's bridge between the pure engine and
SQL / blob storage.

* ``read_input(ref)``: the input row (tenant, sha256) -> its storage key -> bytes (memoized
  for the job, a style used twice is fetched once).
* ``resolve_model(ref)``: the models row (id or name) -> a local file cached by checksum
  under ``Settings.resolved_model_cache_dir`` (downloaded once per machine, atomically).
* ``dataset_dir(ref)``: an archive input (zip / tar[.gz|.bz2|.xz]) downloaded and extracted
  into a flat folder of images, cached by sha256.
* ``progress``: throttled to ``Settings.progress_interval_s`` (the last step always goes
  through); ``record_progress`` answering True (cancel requested) is remembered. A preview
  image in the progress (optimize / masked, every ``Settings.preview_every`` of the steps)
  is uploaded to ``preview_key`` with the next write, which bumps ``preview_version``.
* ``is_canceled``: the DB flag (checked at most every ``CANCEL_POLL_S``) plus the soft
  time-limit deadline, which raises ``TimeLimitExceeded`` inside the engine.
* ``on_checkpoint``: uploads the training checkpoint to ``checkpoint_key``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from shared.jobs import store

from shared.jobs import inputs

from shared.jobs import model_registry
from shared.engine.context import EngineContext, Progress
from shared.engine.images import encode_png
from shared.errors import InvalidSpec, NotFound, TimeLimitExceeded
from shared.settings import Settings
from shared.jobs.specs import IMAGE_SUFFIXES, dataset_prefix_name, prefix_dataset_images
from shared.storage import checkpoint_key, dataset_prefix, preview_key

log = logging.getLogger("stylefarm.worker")

CANCEL_POLL_S = 1.0


@dataclass
class JobRuntime:
    """Mutable state of one running job, shared by the context callbacks."""

    job_id: str
    tenant: str
    settings: Settings
    storage: Any
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
                               self.settings.resolved_model_cache_dir, suffix=".pt")  # fmt: skip

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
                                             preview=preview)  # fmt: skip
            except Exception as exc:  # a missed progress write must not kill the job
                log.warning("job %s: progress write failed: %s", self.job_id, exc)
                return
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
            self.storage.put_bytes(preview_key(self.tenant, self.job_id), encode_png(image), content_type="image/png")
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


# --- caches ---------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_download(storage: Any, key: str, checksum: str, cache_dir: Path, suffix: str = "") -> Path:
    """``cache_dir/<checksum><suffix>``, downloading ``key`` once; verified, atomic."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{checksum}{suffix}"
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".dl-", suffix=suffix)
    os.close(fd)
    try:
        storage.download_to(key, tmp)
        got = sha256_file(Path(tmp))
        if checksum and len(checksum) == 64 and got != checksum:
            from shared.errors import ModelUnavailable

            raise ModelUnavailable(f"model file {key} is corrupt (checksum {got[:12]}..., expected {checksum[:12]}...)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def sync_prefix_cached(storage: Any, prefix: str, root: Path) -> Path:
    """Download the image objects directly under ``prefix`` into ``root/prefix-<hash>`` once.

    The folder is keyed by a hash of the prefix and the sorted list of keys: objects are
    taken as immutable, so a dataset that gains or loses files gets a new folder, while a
    file changed in place under the same key is not noticed (put a new version under a new
    name).
    """
    keys = prefix_dataset_images(storage.list(prefix), prefix)
    if not keys:
        raise InvalidSpec(f"dataset prefix {prefix}: no images directly under it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    digest = hashlib.sha256("\n".join([prefix, *keys]).encode()).hexdigest()
    final = root / f"prefix-{digest}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=".sync-"))
    try:
        for n, key in enumerate(keys, 1):
            storage.download_to(key, work / f"{n:06d}{Path(key).suffix.lower()}")
        try:
            os.replace(work, final)
        except OSError:
            if not final.is_dir():  # another process won the race: use theirs
                raise
        log.info("dataset %s synced: %d images", prefix, len(keys))
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _safe_members_zip(zf: zipfile.ZipFile, dest: Path) -> None:
    for info in zf.infolist():
        if info.is_dir():
            continue
        target = (dest / info.filename).resolve()
        if not str(target).startswith(str(dest.resolve()) + os.sep):
            raise InvalidSpec(f"dataset archive contains an unsafe path: {info.filename!r}")
    zf.extractall(dest)


def extract_archive_cached(storage: Any, key: str, sha256: str, root: Path) -> Path:
    """Download and extract an archive of images into ``root/<sha256>`` (flat), once."""
    final = root / sha256
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        archive = work / "archive"
        storage.download_to(key, archive)
        raw = work / "raw"
        raw.mkdir()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _safe_members_zip(zf, raw)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(raw, filter="data")
        else:
            raise InvalidSpec(f"dataset {sha256[:12]}... is neither a zip nor a tar archive")
        flat = work / "flat"
        flat.mkdir()
        n = 0
        for path in sorted(raw.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                n += 1
                os.replace(path, flat / f"{n:06d}{path.suffix.lower()}")
        if n == 0:
            raise InvalidSpec(f"dataset {sha256[:12]}... contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        try:
            os.replace(flat, final)
        except OSError:
            if not final.is_dir():  # another process won the race: use theirs
                raise
        log.info("dataset %s extracted: %d images", sha256[:12], n)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
