"""Where the notebooks run: project paths, device choice, seeding and quick mode."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

# Paths are resolved from the project root, never from the working directory, so a notebook
# started from another folder still finds the shipped checkpoints and the data.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
CHECKPOINT_DIR = PROJECT_ROOT / "checkpoints"
CACHE_DIR = CHECKPOINT_DIR / "cache"
OUTPUT_DIR = PROJECT_ROOT / "outputs"


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def is_quick_mode() -> bool:
    """True when the environment variable DDPM_QUICK is 1/true/yes (conftest.py sets it for pytest)."""
    return os.environ.get("DDPM_QUICK", "").strip().lower() in {"1", "true", "yes"}
