"""Files that survive interruptions: atomic writes, loading that names the bad file, temp clean-up."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be (empty, truncated, random bytes)."""


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete temp files an earlier, killed write of `path` left beside it; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.glob(f"{_temp_prefix(path)}*.tmp") if p.is_file()]
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to a temp file beside `path`, fsync, then rename: a reader sees the old
    file or the new one, never half of one. Leftovers of earlier killed writes are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save, written atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_torch_file(path: Path, map_location="cpu", what: str = "checkpoint"):
    """torch.load with weights_only=True (tensors, numbers, strings, lists, dicts: no code runs) of
    a dict, raising CorruptFileError that names the file when it is empty, truncated, not a torch
    file or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    if path.stat().st_size == 0:
        raise CorruptFileError(f"the {what} {path} is empty (an interrupted copy?); delete it")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError from zip reading, ...
        raise CorruptFileError(f"cannot read the {what} {path}: {type(exc).__name__}: {str(exc)[:200]}. "
                               "It is corrupt or was not written by this project (files must hold "
                               "only tensors, numbers, strings, lists and dicts); delete it") from None
    if not isinstance(payload, dict):  # every file this project writes is a dict
        raise CorruptFileError(f"the {what} {path} holds a {type(payload).__name__}, not a dict; "
                               "it was not written by this project; delete it")
    return payload


def check_writable(folder: Path) -> None:
    """Raise PermissionError now, before hours of work, if nothing can be written into `folder`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise PermissionError(f"cannot write into {folder} ({type(exc).__name__}: {exc}); make it writable "
                              "or pass another cache folder") from None
