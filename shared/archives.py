"""Zip and tar archives of images, read as a stream with caps checked while decompressing.

One implementation for both sides: the API inspects an uploaded archive and keeps nothing
(``api.uploads``); the worker extracts a dataset into a flat folder of images
(``worker.caches``), because a prefix dataset or an archive uploaded before the caps existed
never went through the API's check. Nothing in an archive is trusted:

* **Caps** (``ArchiveLimits``, from ``Settings.archive_*``): number of members, total
  uncompressed bytes, pixels per image member and pixels over all of them. Crossing one
  raises ``ArchiveTooLarge`` (413) whose ``limit`` names the setting and ``member`` the
  member where it was crossed.
* **Bytes are counted as they are decompressed**, in bounded reads (``CHUNK``): a zip
  member whose header understates its size is cut off at the cap (and then fails its CRC);
  the declared sizes only let a zip be refused before any decompression. A tar (plain,
  gz, bz2 or xz) is read front to back as a stream through ``_TarStream``, which hands the
  tar reader no more bytes than the members seen so far declare plus ``TAR_HEADER_SLACK``
  for the next header, so neither a huge member nor a huge pax header is decompressed.
* **Names and kinds**: a member must stay inside the archive (no absolute path, no
  ``..``); links, devices and fifos are refused.
* **Images**: members named like images (``IMAGE_SUFFIXES``, hidden files skipped, other
  files ignored) have their header read by Pillow and the pixel caps checked against it;
  ``full_decode=True`` (the API) also decodes each one, so a truncated or damaged member is
  refused with its name (``InvalidImage``, 422, ``member``).
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import io
import lzma
import stat
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from shared.errors import ArchiveTooLarge, InvalidImage
from shared.imaging import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from shared.settings import Settings

CHUNK = 1 << 20  # the most bytes asked of a decompressor at once
TAR_HEADER_SLACK = 1 << 20  # bytes a tar may spend on headers (and padding) between two members' data
SPOOL_BYTES = 8 << 20  # members checked but not kept stay in memory up to this size, then spill to a temp file
#: Pillow formats an image inside a dataset archive may have (the suffixes of ``IMAGE_SUFFIXES``).
MEMBER_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
ZIP_TYPE, TAR_TYPE = "application/zip", "application/x-tar"
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on one archive; the field names are the ``Settings`` names without ``archive_``."""

    max_bytes: int
    max_members: int
    max_member_pixels: int
    max_total_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        return cls(
            max_bytes=settings.archive_max_bytes,
            max_members=settings.archive_max_members,
            max_member_pixels=settings.archive_max_member_pixels or settings.max_pixels,
            max_total_pixels=settings.archive_max_total_pixels,
        )


@dataclass(frozen=True)
class ArchiveSummary:
    content_type: str  # ZIP_TYPE | TAR_TYPE
    members: int  # every entry, folders included
    images: int  # image members checked (and kept, when extracting)
    bytes: int  # uncompressed bytes of the image members
    pixels: int  # their pixels, summed


def is_dataset_image(name: str) -> bool:
    """A member the dataset uses: an image suffix, not hidden (``._x.png`` from macOS zips)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return not base.startswith(".") and PurePosixPath(base).suffix.lower() in IMAGE_SUFFIXES


class _Tally:
    """Running totals of one archive; raises ``ArchiveTooLarge`` the moment a cap is crossed."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.members = self.images = self.bytes = self.declared = self.pixels = 0

    @staticmethod
    def _over(limit: str, maximum: int, member: str, what: str) -> ArchiveTooLarge:
        return ArchiveTooLarge(
            f"The archive {what}; the limit is {maximum} (archive_{limit}), crossed at member {member!r}.",
            limit=f"archive_{limit}", maximum=maximum, member=member,
        )

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise self._over(
                "max_members", self.limits.max_members, name, f"has more than {self.limits.max_members} members"
            )
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise InvalidImage(f"The archive member {name!r} points outside the archive.", member=name)

    def declare(self, size: int, name: str) -> None:
        """A member's size as its header states it (refuses early, before decompressing)."""
        self.declared += max(0, size)
        if self.declared > self.limits.max_bytes:
            raise self._over(
                "max_bytes",
                self.limits.max_bytes,
                name,
                f"declares more than {self.limits.max_bytes} uncompressed bytes",
            )

    def add_bytes(self, n: int, name: str) -> None:
        """Bytes actually decompressed."""
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise self._over(
                "max_bytes", self.limits.max_bytes, name, f"holds more than {self.limits.max_bytes} uncompressed bytes"
            )

    def add_image(self, pixels: int | None, name: str) -> None:
        """One image member of ``pixels`` (None: more than Pillow's own bomb limit)."""
        self.images += 1
        if pixels is None or pixels > self.limits.max_member_pixels:
            what = (
                "has an image over Pillow's decompression-bomb limit"
                if pixels is None
                else f"has an image of {pixels} pixels"
            )
            raise self._over("max_member_pixels", self.limits.max_member_pixels, name, what)
        self.pixels += pixels
        if self.pixels > self.limits.max_total_pixels:
            raise self._over(
                "max_total_pixels",
                self.limits.max_total_pixels,
                name,
                f"holds more than {self.limits.max_total_pixels} pixels of images",
            )


#: How each of ``MEMBER_FORMATS`` begins: a member that begins otherwise is refused after
#: its first chunk instead of being decompressed to the end.
IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",
    b"GIF87a", b"GIF89a",
)


def _copy_member(src: IO[bytes], dst: IO[bytes], tally: _Tally, name: str) -> None:
    """Decompress ``src`` into ``dst`` in bounded reads, counting every byte; a member that
    does not begin like an image is refused after its first chunk."""
    first = True
    while True:
        try:
            chunk = src.read(CHUNK)
        except (*_DECOMPRESS_ERRORS, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
            raise InvalidImage(f"The archive member {name!r} could not be decompressed ({exc}).", member=name) from None
        if first and not chunk.startswith(IMAGE_SIGNATURES):
            raise InvalidImage(
                f"The archive member {name!r} is not an image; images must be {', '.join(MEMBER_FORMATS)}.", member=name
            )
        first = False
        if not chunk:
            return
        tally.add_bytes(len(chunk), name)
        dst.write(chunk)


def _check_image(fp: IO[bytes], name: str, tally: _Tally, full_decode: bool) -> None:
    """Pillow reads the member's header (pixel caps); ``full_decode`` decodes it all."""
    fp.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except Image.DecompressionBombError:
            tally.add_image(None, name)
            return
        except UnidentifiedImageError:  # its message shows the file object (a local path): not repeated
            raise InvalidImage(f"The archive member {name!r} is not an image Pillow can read.", member=name) from None
        except Exception as exc:
            raise InvalidImage(
                f"The archive member {name!r} has a damaged image header ({exc}).", member=name
            ) from None
        with img:
            if img.format not in MEMBER_FORMATS:
                raise InvalidImage(
                    f"The archive member {name!r} is in {img.format} format; "
                    f"images must be {', '.join(MEMBER_FORMATS)}.",
                    member=name,
                )
            tally.add_image(img.width * img.height, name)
            if full_decode:
                try:
                    img.load()
                except Exception as exc:
                    raise InvalidImage(
                        f"The archive member {name!r} is damaged or truncated ({exc}).", member=name
                    ) from None


MemberSink = Callable[[str], contextlib.AbstractContextManager[IO[bytes]]]


def _image_member(
    open_member: Callable[[], IO[bytes]], name: str, tally: _Tally, sink: MemberSink, full_decode: bool
) -> None:
    with sink(name) as dst:
        try:
            src = open_member()
        except (*_DECOMPRESS_ERRORS, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
            raise InvalidImage(f"The archive member {name!r} could not be opened ({exc}).", member=name) from None
        with src:
            _copy_member(src, dst, tally, name)
        _check_image(dst, name, tally, full_decode)


# --- zip -------------------------------------------------------------------------------


def _scan_zip(source: IO[bytes], tally: _Tally, sink: MemberSink, full_decode: bool) -> None:
    try:
        zf = zipfile.ZipFile(source)
    except Exception as exc:
        raise InvalidImage(f"The zip archive is damaged ({exc}).") from None
    with zf:
        infos = zf.infolist()
        for info in infos:  # names, kinds and declared sizes first: a bomb is refused unread
            tally.member(info.filename)
            if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidImage(f"The archive member {info.filename!r} is a link; only regular files are accepted.",
                                   member=info.filename)
            tally.declare(info.file_size, info.filename)
        for info in infos:
            if not info.is_dir() and is_dataset_image(info.filename):
                _image_member(functools.partial(zf.open, info), info.filename, tally, sink, full_decode)


# --- tar -------------------------------------------------------------------------------


class _TarStream(io.RawIOBase):
    """The decompressed bytes of a tar, handed out only up to ``allowed``: what the members
    seen so far declared, plus ``TAR_HEADER_SLACK`` for the next header."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0
        self.allowed = TAR_HEADER_SLACK

    def allow(self, member_size: int) -> None:
        self.allowed = self.count + max(0, member_size) + TAR_HEADER_SLACK

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        room = self.allowed - self.count
        if room <= 0:
            raise InvalidImage(f"The tar archive has a header or padding larger than {TAR_HEADER_SLACK} bytes.")
        want = CHUNK if size is None or size < 0 else size
        try:
            data = self.raw.read(min(want, room))
        except _DECOMPRESS_ERRORS as exc:
            raise InvalidImage(f"The tar archive is damaged ({exc}).") from None
        self.count += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(source: IO[bytes]) -> IO[bytes]:
    head = source.read(6)
    source.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(source)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(source)
    return source


def _tar_member_data(tf: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    data = tf.extractfile(member)
    if data is None:  # not a regular file: refused before this is asked
        raise InvalidImage(f"The archive member {member.name!r} is not a regular file.", member=member.name)
    return data


def _scan_tar(source: IO[bytes], tally: _Tally, sink: MemberSink, full_decode: bool) -> bool:
    """False when ``source`` is not a tar (its first header does not parse)."""
    stream = _TarStream(_decompressed(source))
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, *_DECOMPRESS_ERRORS):
        return False  # (an oversized or undecompressable first header raised InvalidImage: refused)
    with tf:
        try:
            for member in tf:  # each header is read only when the previous member's data was passed
                tally.member(member.name)
                if not (member.isfile() or member.isdir()):
                    raise InvalidImage(
                        f"The archive member {member.name!r} is a link or a special file; "
                        "only regular files are accepted.",
                        member=member.name,
                    )
                if member.isfile():
                    tally.declare(member.size, member.name)
                stream.allow(member.size if member.isfile() else 0)
                if member.isfile() and is_dataset_image(member.name):
                    _image_member(
                        functools.partial(_tar_member_data, tf, member), member.name, tally, sink, full_decode
                    )
        except tarfile.TarError as exc:
            raise InvalidImage(f"The tar archive is damaged ({exc}).") from None
    return True


# --- entry point -----------------------------------------------------------------------


def _spooled(name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)


def _numbered_files(folder: Path) -> MemberSink:
    """Image members kept as ``folder/000001.png``, ``000002.jpg``, ... in archive order."""
    counter = iter(range(1, 1 << 62))

    def sink(name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
        return open(folder / f"{next(counter):06d}{suffix}", "w+b")

    return sink


def scan_archive(
    source: IO[bytes], limits: ArchiveLimits, *, keep_images_in: Path | None = None, full_decode: bool = False
) -> ArchiveSummary | None:
    """Check the zip or tar in the seekable ``source`` against ``limits`` while streaming it.

    ``keep_images_in``: a folder that receives the image members, numbered in archive order
    (the caller removes it on error); None keeps nothing. ``full_decode``: decode every
    image member (truncated or damaged ones are refused), not only its header.
    Returns None when ``source`` is neither a zip nor a tar; raises ``ArchiveTooLarge`` or
    ``InvalidImage`` (each naming the member) otherwise.
    """
    tally = _Tally(limits)
    sink = _spooled if keep_images_in is None else _numbered_files(keep_images_in)
    if zipfile.is_zipfile(source):
        _scan_zip(source, tally, sink, full_decode)
        content_type = ZIP_TYPE
    else:
        source.seek(0)
        if not _scan_tar(source, tally, sink, full_decode):
            return None
        content_type = TAR_TYPE
    return ArchiveSummary(content_type, tally.members, tally.images, tally.bytes, tally.pixels)


def no_images_error(what: str) -> InvalidImage:
    return InvalidImage(f"{what} contains no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}.")
