"""The worker's on-disk caches of stored files: each downloaded once per machine, verified,
and published atomically (a temp file or folder, then ``os.replace``), so concurrent jobs
and worker processes never see half a file.

* ``cached_download``: a model file, keyed by its checksum.
* ``sync_prefix_cached``: the images directly under a storage prefix (a ``prefix:NAME``
  dataset), keyed by a hash of the key list.
* ``extract_archive_cached``: an uploaded zip / tar of images, extracted into a flat
  folder keyed by the archive's sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from shared.checksums import sha256_file
from shared.errors import InvalidSpec, ModelUnavailable
from shared.imaging import IMAGE_SUFFIXES
from shared.jobs.specs import prefix_dataset_images
from shared.storage import Storage

log = logging.getLogger("stylefarm.worker")




def cached_download(storage: Storage, key: str, checksum: str, cache_dir: Path, suffix: str = "") -> Path:
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
            raise ModelUnavailable(f"model file {key} is corrupt (checksum {got[:12]}..., expected {checksum[:12]}...)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def sync_prefix_cached(storage: Storage, prefix: str, root: Path) -> Path:
    """Download the image objects directly under ``prefix`` into ``root/prefix-<hash>`` once.

    The folder is keyed by a hash of the prefix and the sorted list of keys: objects are
    taken as immutable, so a dataset that gains or loses files gets a new folder, while a
    file changed in place under the same key is not noticed (put a new version under a new
    name).
    """
    keys = prefix_dataset_images(storage.list(prefix), prefix)
    if not keys:
        raise InvalidSpec(f"dataset prefix {prefix}: no images directly under it ({', '.join(IMAGE_SUFFIXES)})")
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


def extract_archive_cached(storage: Storage, key: str, sha256: str, root: Path) -> Path:
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
            raise InvalidSpec(f"dataset {sha256[:12]}... contains no images ({', '.join(IMAGE_SUFFIXES)})")
        try:
            os.replace(flat, final)
        except OSError:
            if not final.is_dir():  # another process won the race: use theirs
                raise
        log.info("dataset %s extracted: %d images", sha256[:12], n)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
