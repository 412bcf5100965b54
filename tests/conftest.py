"""Shared by the unit tests in tests/ (the notebooks are not affected)."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and a second thread that waits for a busy core (a
    notebook run beside the tests) made a 0.01 s KID take 1 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
