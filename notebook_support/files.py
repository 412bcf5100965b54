"""Files that survive interruptions: atomic writes, loading that names the bad file, temp clean-up."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import socket
import tempfile
import time
import zipfile
from pathlib import Path

import torch

# A temp file older than this is stale whoever wrote it: a live write of a file this project
# writes (<= tens of MB) takes seconds. Younger ones are removed only when their owner is provably dead.
STALE_AFTER_S = 3600.0
# Which machine wrote a temp file: a pid means something only on the machine that issued it
# (a folder may be shared over the network, or between containers).
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be (empty, truncated, random bytes)."""


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temp_prefix(path: Path, pid: int | None = None) -> str:
    """How the temp files of a write of `path` by process `pid` (default: this one) start:
    `.model.pt.<host tag>-<pid>-`, then mkstemp's random part and `.tmp`."""
    return f".{Path(path).name}.{_HOST_TAG}-{os.getpid() if pid is None else pid}-"


def _process_alive(pid: int) -> bool:
    """False only when process `pid` provably does not exist on this machine."""
    if os.name == "nt":   # os.kill(pid, 0) would terminate the process on Windows: cannot tell
        return True
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:       # PermissionError: it exists, as another user's process
        return True
    return True


def _is_stale(temp: Path, path: Path) -> bool:
    """A temp file of a write of `path` is stale when its writer, a process of this machine, has
    died, or when it is older than STALE_AFTER_S (another machine's, or a name without an owner)."""
    try:
        age = time.time() - temp.stat().st_mtime
    except FileNotFoundError:     # its writer just renamed it into place
        return False
    if age > STALE_AFTER_S:
        return True
    owner = re.fullmatch(r"([0-9a-f]{8})-(\d+)-.+\.tmp", temp.name[len(f".{path.name}."):])
    return owner is not None and owner[1] == _HOST_TAG and not _process_alive(int(owner[2]))


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete temp files that earlier, killed writes of `path` left beside it; return them. Temp
    files of writes still in flight (another process saving the same file) are never touched."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    start = f".{path.name}."   # startswith, not glob: a name may hold glob characters such as [ ]
    stale = [p for p in path.parent.iterdir()
             if p.name.startswith(start) and p.name.endswith(".tmp") and p.is_file() and _is_stale(p, path)]
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to a temp file beside `path`, fsync, then rename: a reader sees the old
    file or the new one, never half of one. Leftovers of earlier killed writes are removed; two
    processes writing the same file at once both succeed (the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
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


def check_zip_integrity(path: Path, what: str = "checkpoint") -> None:
    """Raise CorruptFileError naming `path` when a zip file's bytes changed after it was written (a bad
    copy, a failing disk): torch.save writes a zip that stores each record's CRC-32, which
    torch.load never checks, so a flipped bit would load as an altered weight. Reading 10 MB takes
    about 10 ms. Files that are not zips are left to torch.load."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()   # reads every record and compares its CRC-32
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ...
        raise CorruptFileError(f"the {what} {path} is damaged: {type(exc).__name__}: {str(exc)[:200]} "
                               "(a bad copy or a failing disk); delete it or copy it again") from None
    if bad is not None:
        raise CorruptFileError(f"the {what} {path} is damaged: its record {bad} no longer matches the CRC-32 "
                               "stored when it was written (a bad copy or a failing disk); delete it or copy it again")


def load_torch_file(path: Path, map_location="cpu", what: str = "checkpoint"):
    """torch.load with weights_only=True (tensors, numbers, strings, lists, dicts: no code runs) of
    a dict, raising CorruptFileError that names the file when it is empty, truncated, damaged
    after it was written (check_zip_integrity), not a torch file or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    if path.stat().st_size == 0:
        raise CorruptFileError(f"the {what} {path} is empty (an interrupted copy?); delete it")
    check_zip_integrity(path, what)
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


@contextlib.contextmanager
def folder_lock(folder: Path, windows_file: str = ".lock"):
    """An exclusive lock between processes on `folder` (fcntl.flock on the folder itself, so no lock file is
    left behind; where fcntl does not exist, on Windows, the lock file `windows_file` in it). Result-file
    appends and the MNIST fetch both take it."""
    try:
        import fcntl
    except ImportError:   # Windows
        import msvcrt
        with open(Path(folder) / windows_file, "a+b") as handle:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)   # retries for 10 s, then raises OSError
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)   # closing releases the lock
