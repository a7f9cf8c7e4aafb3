"""TrainState's checkpoint pieces (rl/train/train_state.py)."""

import pytest
import torch

from rl.train.train_state import restore_generator


def test_generator_state_round_trips_on_one_device():
    gen = torch.Generator().manual_seed(3)
    saved = gen.get_state()
    expected = torch.rand(5, generator=gen)
    other = torch.Generator().manual_seed(99)
    restore_generator(other, saved, "action sampling")
    assert torch.equal(torch.rand(5, generator=other), expected)


def test_generator_state_from_another_device_type_reseeds_deterministically():
    # A CUDA generator's state is 16 bytes (seed, offset); a CPU one is 5,056 bytes. The
    # resume after a device change must neither crash nor depend on anything but the file.
    foreign = torch.arange(16, dtype=torch.uint8)
    draws = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(0)
        with pytest.warns(UserWarning, match="saved on another device type"):
            restore_generator(gen, foreign, "minibatch order")
        draws.append(torch.rand(5, generator=gen))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], torch.rand(5, generator=torch.Generator().manual_seed(0)))
