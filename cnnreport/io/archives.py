"""Integrity of zip archives (``torch.save`` files, TorchScript archives) before torch reads them.

torch's zip reader does not check the CRC-32 each member records, so a checkpoint with flipped
bytes loads silently with wrong weights. :func:`zip_damage` reads every member once and
compares it with its CRC: one sequential read of the file, like the SHA-256 the report
computes anyway (torch stores members uncompressed, so it costs about as much as that hash).
"""

from __future__ import annotations

import os
import zipfile
import zlib


def is_zip(path: str | os.PathLike[str]) -> bool:
    """True when *path* ends like a zip archive (the format of ``torch.save`` since torch 1.6)."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        return True  # it ends like a zip whose directory is damaged: zip_damage says how
    except OSError:
        return False


def zip_damage(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the zip archive at *path*, in a few words, or ``None`` when every
    member matches its CRC-32.

    Raises ``OSError`` when the file cannot be read at all.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        return f"its zip directory is damaged ({exc})"
    except (EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as exc:
        # a truncated member, a damaged deflate stream, unsupported compression or encryption
        return f"a member cannot be read ({type(exc).__name__}: {exc})"
    if bad is not None:
        return f"member {bad} does not match its CRC-32 checksum"
    return None
