"""Archives for the upload and dataset tests, built in memory: well-formed ones and the
hostile kinds (bombs, too many members or pixels, damaged members, links, escaping names).

Bombs are small on the wire: ``zeros_bomb`` compresses ``BOMB_BYTES`` of zeros to about
50 KB, so the tests stay fast while the archive claims far more than any test cap.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

from PIL import Image

BOMB_BYTES = 50 * 1024 * 1024


def image_bytes(width: int = 16, height: int = 12, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 90).save(buf, fmt)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip of ``name -> bytes`` (a name ending in "/" is a folder)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", pax_headers: dict[str, str] | None = None) -> bytes:
    """A tar (``mode``: "w", "w:gz", "w:bz2", "w:xz") of regular files ``name -> bytes``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = dict(pax_headers or {})
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_with_symlink(name: str = "link.png", target: str = "/etc/passwd") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        tf.addfile(info)
    return buf.getvalue()


def zeros_bomb(kind: str = "zip", name: str = "bomb.png") -> bytes:
    """One good image and ``BOMB_BYTES`` of zeros in member ``name``."""
    members = {"good.png": image_bytes(), name: bytes(BOMB_BYTES)}
    return zip_bytes(members) if kind == "zip" else tar_bytes(members, mode=f"w:{kind}")
