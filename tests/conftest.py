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


GPU_TEST_DEVICE = "RLSCALE_GPU_TEST_DEVICE"


@pytest.fixture
def accelerator():
    """The device of the tests marked ``gpu``: CUDA, and the test skips without it.

    ``RLSCALE_GPU_TEST_DEVICE=cpu`` dry-runs them on the CPU: that checks the tests and the
    code paths they share with the CPU, not the CUDA kernels (CUDA-only options are no-ops
    there). Run them with ``pytest -m gpu`` (``make test`` leaves them out).
    """
    import os

    name = os.environ.get(GPU_TEST_DEVICE, "cuda")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"needs a CUDA device ({GPU_TEST_DEVICE}=cpu dry-runs it on the CPU)")
    return device


@pytest.fixture
def fp32_convolutions():
    """cuDNN convolutions in full fp32 (no TF32) for a test, restored after.

    torch lets cuDNN use TF32 (10-bit mantissa) for fp32 convolutions on Ampere and newer;
    comparisons with the CPU at float32 tolerance need it off.
    """
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before
