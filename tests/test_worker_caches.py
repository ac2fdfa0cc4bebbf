"""worker.caches on LocalStorage: archive extraction under the caps (a stored bomb that never
went through the API is refused on the worker too) with nothing left behind on failure, and
the disk caches kept within their budget, least recently used first, never evicting what a
job holds (in this process or another)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from archive_samples import image_bytes, tar_bytes, zeros_bomb, zip_bytes

from shared.archives import ArchiveLimits
from shared.errors import ArchiveTooLarge, InvalidImage, InvalidSpec
from shared.storage import LocalStorage, input_key
from worker.caches import LOCKS_DIR, DiskCache, cached_download, extract_archive_cached

LIMITS = ArchiveLimits(max_bytes=8 << 20, max_members=50, max_member_pixels=1_000_000, max_total_pixels=3_000_000)
KB = 1024


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def cache(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "datasets", budget_bytes=1 << 30)


@pytest.fixture
def holds() -> contextlib.ExitStack:
    with contextlib.ExitStack() as stack:
        yield stack


def stored_archive(storage: LocalStorage, data: bytes) -> tuple[str, str]:
    """Put ``data`` where an upload would have (bypassing the API's check): (key, sha256)."""
    sha = hashlib.sha256(data).hexdigest()
    key = input_key("default", sha)
    storage.put_bytes(key, data)
    return key, sha


def leftovers(cache: DiskCache) -> list[str]:
    """Everything in the cache folder except the lock files."""
    return sorted(p.name for p in cache.root.iterdir() if p.name != LOCKS_DIR) if cache.root.exists() else []


def put_entry(cache: DiskCache, name: str, size: int, used: float) -> Path:
    """An existing cache entry (a folder holding ``size`` bytes) last used at ``used``."""
    entry = cache.root / name
    entry.mkdir(parents=True)
    (entry / "000001.png").write_bytes(bytes(size))
    os.utime(entry, (used, used))
    return entry


# --- extraction -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zip", "w:gz", "w:xz"])
def test_given_stored_archive_when_extracted_expect_flat_folder_of_its_images(
    storage: LocalStorage, cache: DiskCache, holds: contextlib.ExitStack, mode: str
) -> None:
    members = {"a/one.png": image_bytes(10, 10), "two.jpg": image_bytes(fmt="JPEG"), "readme.md": b"#"}
    data = zip_bytes(members) if mode == "zip" else tar_bytes(members, mode)
    key, sha = stored_archive(storage, data)

    folder = extract_archive_cached(storage, key, sha, cache, holds, LIMITS)

    assert folder == cache.root / sha
    assert sorted(p.name for p in folder.iterdir()) == ["000001.png", "000002.jpg"]
    assert leftovers(cache) == [sha]  # no temp folder, no downloaded archive


@pytest.mark.parametrize(
    ("data", "error", "member"),
    [
        (zeros_bomb("zip"), ArchiveTooLarge, "bomb.png"),
        (zeros_bomb("gz"), ArchiveTooLarge, "bomb.png"),
        (zip_bytes({f"{i}.png": image_bytes(1000, 1000, mode="L") for i in range(4)}), ArchiveTooLarge, "3.png"),
        (zip_bytes({"ok.png": image_bytes(), "bad.png": b"not a png"}), InvalidImage, "bad.png"),
        (zip_bytes({"../../escape.png": image_bytes()}), InvalidImage, "../../escape.png"),
    ],
    ids=["zip-bomb", "tar-gz-bomb", "too-many-pixels", "damaged-member", "escaping-name"],
)
def test_given_hostile_stored_archive_when_extracted_expect_refused_and_nothing_left(
    storage: LocalStorage, cache: DiskCache, holds: contextlib.ExitStack, data: bytes, error: type, member: str
) -> None:
    key, sha = stored_archive(storage, data)
    with pytest.raises(error) as info:
        extract_archive_cached(storage, key, sha, cache, holds, LIMITS)
    assert info.value.extra["member"] == member
    assert leftovers(cache) == []  # the images extracted before the refusal are gone with the temp folder


def test_given_stored_bytes_that_are_no_archive_expect_invalid_spec_and_nothing_left(
    storage: LocalStorage, cache: DiskCache, holds: contextlib.ExitStack
) -> None:
    key, sha = stored_archive(storage, b"plain text")
    with pytest.raises(InvalidSpec, match="neither a zip nor a tar"):
        extract_archive_cached(storage, key, sha, cache, holds, LIMITS)
    assert leftovers(cache) == []


# --- budget and eviction ------------------------------------------------------------------


def test_given_full_cache_when_entry_added_expect_least_recently_used_evicted(
    storage: LocalStorage, tmp_path: Path, holds: contextlib.ExitStack
) -> None:
    cache = DiskCache(tmp_path / "datasets", budget_bytes=100 * KB)
    put_entry(cache, "old", 40 * KB, used=1_000)
    put_entry(cache, "used-recently", 40 * KB, used=2_000)
    data = zip_bytes({"x.png": image_bytes(100, 100, mode="L")})
    key, sha = stored_archive(storage, data)

    extract_archive_cached(storage, key, sha, cache, holds, LIMITS, size_hint=30 * KB)

    assert leftovers(cache) == sorted([sha, "used-recently"])  # "old" went, folder and all
    assert sum(e.size for e in cache.entries()) <= cache.budget_bytes


def test_given_entry_used_again_expect_it_touched_and_kept_over_a_newer_one(
    tmp_path: Path, holds: contextlib.ExitStack
) -> None:
    cache = DiskCache(tmp_path / "c", budget_bytes=100 * KB)
    put_entry(cache, "a", 40 * KB, used=1_000)
    put_entry(cache, "b", 40 * KB, used=2_000)

    cache.get("a", lambda path: pytest.fail("a is cached: nothing to build"), holds)  # a use: touched
    holds.close()
    cache.get("c", lambda path: put_entry(cache, "c", 40 * KB, used=3_000), contextlib.ExitStack(), size_hint=40 * KB)

    assert leftovers(cache) == ["a", "c"]


def test_given_entry_held_by_a_running_job_expect_never_evicted(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", budget_bytes=50 * KB)
    put_entry(cache, "held", 40 * KB, used=1_000)
    with contextlib.ExitStack() as job:
        cache.hold("held", job)
        assert cache.evict("held") is False
        assert cache.make_room(40 * KB) == 40 * KB  # over budget, but the held entry stays
        assert leftovers(cache) == ["held"]
    assert cache.evict("held") is True  # the job ended
    assert leftovers(cache) == []


def test_given_entry_held_by_another_process_expect_never_evicted(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", budget_bytes=10 * KB)
    put_entry(cache, "theirs", 40 * KB, used=1_000)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         ("import contextlib, sys\n"
         "from pathlib import Path\n"
         "from worker.caches import DiskCache\n"
         "with contextlib.ExitStack() as job:\n"
         f"    DiskCache(Path({str(cache.root)!r}), 1).hold('theirs', job)\n"
         "    print('held', flush=True)\n"
         "    sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        cache.make_room()
        assert leftovers(cache) == ["theirs"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the other worker's job ends
        holder.wait(30)
    cache.make_room()
    assert leftovers(cache) == []


def test_given_small_model_budget_expect_released_model_evicted_for_the_next(
    storage: LocalStorage, tmp_path: Path
) -> None:
    cache = DiskCache(tmp_path / "models", budget_bytes=150 * KB)
    files = {name: os.urandom(100 * KB) for name in ("m1", "m2")}
    for name, data in files.items():
        storage.put_bytes(f"global/models/{name}/model.pt", data)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}

    with contextlib.ExitStack() as job1:
        first = cached_download(storage, "global/models/m1/model.pt", sums["m1"], cache, job1, ".pt", 100 * KB)
        assert first.read_bytes() == files["m1"]
    with contextlib.ExitStack() as job2:
        second = cached_download(storage, "global/models/m2/model.pt", sums["m2"], cache, job2, ".pt", 100 * KB)

    assert leftovers(cache) == [second.name] and not first.exists()


def test_given_job_runtime_expect_its_datasets_held_until_the_job_ends(storage: LocalStorage, tmp_path: Path) -> None:
    from shared.settings import Settings
    from shared.storage import dataset_prefix
    from worker.job_runtime import JobRuntime

    settings = Settings(home=tmp_path / "home", dataset_cache_budget_bytes=1)  # everything is over budget
    for i in range(2):
        storage.put_bytes(f"{dataset_prefix('default', 'photos')}{i}.png", image_bytes())
    rt = JobRuntime(job_id="j1", tenant="default", settings=settings, storage=storage)
    cache = DiskCache(settings.resolved_dataset_cache_dir, settings.dataset_cache_budget_bytes)

    folder = rt.dataset_dir("prefix:photos")
    assert sorted(p.name for p in folder.iterdir()) == ["000001.png", "000002.png"]
    assert cache.evict(folder.name) is False  # the running job holds it

    rt.release_caches()  # the task's finally when the job ends
    cache.make_room()
    assert not folder.exists()
