"""Shared by the unit tests in tests/ (the notebooks are not affected)."""

import pytest
import torch

from notebook_support import training


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and a second thread that waits for a busy core (a
    notebook run beside the tests) made a 0.01 s KID take 1 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_quick_stand_ins(monkeypatch):
    """The unit tests train their tiny configs in full, quick mode or not: load_or_train's quick-mode
    stand-in (QUICK_TRAIN_STEPS steps) is off here; tests/test_training_guards.py turns it on."""
    monkeypatch.setattr(training, "QUICK_TRAIN_STEPS", 0)
