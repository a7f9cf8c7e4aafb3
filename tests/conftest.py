"""Fixtures shared by the whole suite."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread while a test trains in this process, restored after.

    Small models on a few shared cores: more threads only contend (two threads collapse to a
    fraction of one thread's speed when the cores are busy, see BENCHMARKS.md). Restored
    because other tests compare in-process runs with subprocess runs at torch's default.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
