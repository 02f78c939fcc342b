"""Find, unpack and verify IDX files (the MNIST family's format) without any image library."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from lightning_template.errors import UserInputError

_UBYTE = 0x08  # the only IDX element type the MNIST family uses


class DataFileError(UserInputError):
    """A data file is missing, truncated or corrupt."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file, streamed so large files never sit in memory twice."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fix_hint(path: Path) -> str:
    return (
        f"Delete {path} and run again: it is re-extracted from its .gz (restore the .gz with "
        f"`git checkout -- {path.parent}` if that is damaged too) or downloaded when online."
    )


def _restore_hint(archive: Path) -> str:
    return (
        f"Restore it with `git checkout -- {archive}` (for files the repository ships) or delete it to "
        "download it again."
    )


def _check(path: Path, expected_md5: str) -> None:
    actual = md5sum(path)
    if actual != expected_md5:
        raise DataFileError(
            f"{path} is corrupt or truncated: its MD5 is {actual}, expected {expected_md5}. {_fix_hint(path)}"
        )


def _check_archive(archive: Path, expected_md5: str) -> None:
    actual = md5sum(archive)
    if actual != expected_md5:
        raise DataFileError(
            f"{archive} is corrupt or truncated: its MD5 is {actual}, expected {expected_md5}. "
            f"{_restore_hint(archive)}"
        )


def _decompress(archive: Path, target: Path, expected_md5: str | None) -> None:
    """Unpack `archive` to `target` atomically, so an interrupted run never leaves half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(archive, "rb") as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        actual = md5sum(tmp) if expected_md5 is not None else None
        if actual != expected_md5:
            raise DataFileError(
                f"{archive} unpacks to data with MD5 {actual}, expected {expected_md5}: the archive is "
                f"corrupt. {_restore_hint(archive)}"
            )
        os.replace(tmp, target)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(
            f"Could not unpack {archive} ({exc}): the archive is truncated or corrupt. {_restore_hint(archive)}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def missing_files(raw_dir: Path, files: Iterable[str]) -> list[str]:
    """Names with neither the IDX file nor its .gz in `raw_dir`."""
    return [name for name in files if not (raw_dir / name).exists() and not (raw_dir / f"{name}.gz").exists()]


def ensure_idx_files(
    raw_dir: Path,
    files: Mapping[str, str | None],
    archive_md5s: Mapping[str, str] | None = None,
) -> None:
    """Make every IDX file in `files` present and verified, unpacking .gz files as needed.

    `files` maps each name to the MD5 of the unpacked file, or None where only the MD5 of its .gz is
    published (`archive_md5s`, name -> MD5 of `name.gz`): then the .gz is checked instead, and a file
    unpacked from it is trusted once its IDX header matches its size (read_idx checks that).
    """
    archive_md5s = archive_md5s or {}
    for name, expected_md5 in files.items():
        path, archive = raw_dir / name, raw_dir / f"{name}.gz"
        archive_md5 = archive_md5s.get(name)
        uses_archive = not path.exists() or expected_md5 is None
        if archive_md5 is not None and uses_archive and archive.exists():
            _check_archive(archive, archive_md5)
        if path.exists():
            if expected_md5 is not None:
                _check(path, expected_md5)
        elif archive.exists():
            _decompress(archive, path, expected_md5)
        else:
            raise DataFileError(f"{path} (or {path.name}.gz) is missing.")


def read_idx(path: Path) -> torch.Tensor:
    """Parse an unsigned-byte IDX file into a uint8 tensor of its declared shape."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise DataFileError(f"{path} is not an unsigned-byte IDX file (bad header). {_fix_hint(path)}")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for dim in shape:
        count *= dim
    if len(data) != header + count:
        raise DataFileError(
            f"{path} holds {len(data) - header} bytes of data, but its header announces shape {tuple(shape)}. "
            f"{_fix_hint(path)}"
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header, count=count).reshape(shape)
