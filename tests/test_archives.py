"""shared.archives: caps counted while streaming, what is kept when extracting, and how
little a hostile archive gets to decompress before it is refused."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from archive_samples import image_bytes, tar_bytes, zeros_bomb, zip_bytes

from shared import archives
from shared.archives import CHUNK, ArchiveLimits, scan_archive
from shared.errors import ArchiveTooLarge, InvalidImage

LIMITS = ArchiveLimits(max_bytes=4 * CHUNK, max_members=20, max_member_pixels=10_000, max_total_pixels=30_000)


class EndlessStream(io.RawIOBase):
    """A member stream that never ends (a header that understated its size): ``head``, then
    zeros, counting what was asked of it."""

    def __init__(self, head: bytes = b"") -> None:
        self.head, self.served = head, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = CHUNK if size is None or size < 0 else size
        data = (self.head + bytes(n))[:n] if self.served == 0 else bytes(n)
        self.served += n
        return data


def test_given_member_longer_than_its_header_when_copied_expect_cut_off_at_the_cap() -> None:
    source = EndlessStream(head=image_bytes()[:16])  # begins like a PNG
    with pytest.raises(ArchiveTooLarge) as info:
        archives._copy_member(source, io.BytesIO(), archives._Tally(LIMITS), "endless.png")  # type: ignore[arg-type]
    assert info.value.extra["limit"] == "archive_max_bytes" and info.value.extra["member"] == "endless.png"
    assert source.served <= LIMITS.max_bytes + CHUNK  # bounded reads: at most one chunk past the cap


def test_given_member_not_beginning_like_an_image_expect_refused_after_one_chunk() -> None:
    source = EndlessStream()
    with pytest.raises(InvalidImage, match="not an image") as info:
        archives._copy_member(source, io.BytesIO(), archives._Tally(LIMITS), "zeros.png")  # type: ignore[arg-type]
    assert info.value.extra["member"] == "zeros.png" and source.served == CHUNK


def test_given_tar_bomb_expect_refused_from_its_header_before_its_data(tmp_path: Path) -> None:
    data = zeros_bomb("gz")
    with pytest.raises(ArchiveTooLarge) as info:
        scan_archive(io.BytesIO(data), LIMITS, keep_images_in=tmp_path)
    assert info.value.extra["member"] == "bomb.png"
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [len(image_bytes())]  # only the good image came out


class CountingBytes(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.served = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.served += len(data)
        return data


def test_given_oversized_pax_header_expect_refused_after_reading_about_the_slack() -> None:
    source = CountingBytes(tar_bytes({"a.png": image_bytes()}, "w", {"comment": "x" * (8 << 20)}))
    with pytest.raises(InvalidImage, match="header"):
        scan_archive(source, LIMITS)
    assert source.served <= archives.TAR_HEADER_SLACK + 256 * 1024  # of an 8 MB header (and the zip probe)


def test_given_archive_when_extracted_expect_only_images_numbered_in_archive_order(tmp_path: Path) -> None:
    data = zip_bytes({
        "photos/": b"",
        "photos/z.png": image_bytes(10, 10),
        "a.JPG": image_bytes(12, 10, fmt="JPEG"),
        "notes.txt": b"not an image, ignored",
        "photos/._z.png": b"macOS resource fork: hidden, ignored (not decoded)",
    })
    summary = scan_archive(io.BytesIO(data), LIMITS, keep_images_in=tmp_path)
    assert summary is not None
    assert (summary.members, summary.images, summary.pixels) == (5, 2, 220)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000001.png", "000002.jpg"]
    assert (tmp_path / "000001.png").read_bytes() == image_bytes(10, 10)


def test_given_bytes_that_are_no_archive_expect_none() -> None:
    for data in (b"just some text", image_bytes(), gzip.compress(b"gzipped text, not a tar " * 40)):
        assert scan_archive(io.BytesIO(data), LIMITS) is None


def test_given_broken_compressed_tar_expect_damaged() -> None:
    data = tar_bytes({"a.png": image_bytes()}, "w:bz2")
    with pytest.raises(InvalidImage, match="damaged"):
        scan_archive(io.BytesIO(data[:40] + bytes(len(data) - 40)), LIMITS)
