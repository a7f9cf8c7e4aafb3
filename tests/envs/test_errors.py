"""Bad input: clear errors that name the problem and the fix, before anything starts."""

import importlib.util

import pytest

import envs
from envs import make as make_mod


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("Pongg", "Pong"),
        ("Breakot", "Breakout"),
        ("CartPol", "CartPole"),
        ("spaceinvader", "SpaceInvaders"),
    ],
)
def test_unknown_name_lists_closest(name, suggestion):
    with pytest.raises(envs.UnknownEnvError, match="Did you mean") as err:
        envs.make_vec(name, 1)
    assert suggestion in str(err.value) and "rlscale envs" in str(err.value)


def test_unknown_gym_id():
    with pytest.raises(envs.UnknownEnvError, match="CartPole-v1"):
        envs.make_vec("gym:CartPole-v9", 1)


@pytest.mark.parametrize("alias", ["Pong", "ALE/Pong-v5", "Pong-v5", "PongNoFrameskip-v4", "pong"])
def test_atari_aliases(alias):
    assert envs.resolve(alias).name == "Pong"


def test_every_ale_rom_has_a_short_name():
    from ale_py import roms

    names = {e.name for e in envs.list_envs() if e.kind == "atari"}
    assert len(names) == len(roms.get_all_rom_ids()) >= 100
    assert {"Pong", "Breakout", "SpaceInvaders", "BeamRider", "Qbert", "Seaquest"} <= names


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "8", None])
def test_bad_num_envs(bad):
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        envs.make_vec("CartPole", bad)


@pytest.mark.parametrize("bad", [-1, 2**31, 0.5, "0", False])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed must be"):
        envs.make_vec("CartPole", 2, seed=bad)


def test_backend_that_cannot_run_the_env():
    with pytest.raises(ValueError, match="choose one of gym-vector, gym-sync, gym-async"):
        envs.make_vec("CartPole", 2, backend="envpool")
    with pytest.raises(ValueError, match="cannot run"):
        envs.make_vec("Pong", 2, backend="cuda-magic")


def test_uninstalled_backend_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        make_mod.importlib.util, "find_spec", lambda m, *a: None if m == "envpool" else real(m, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install envpool"):
        envs.make_vec("Pong", 2, backend="envpool")
    assert envs.default_backend("atari") == "ale"


def test_checks_run_before_anything_starts(monkeypatch):
    """A bad seed is rejected before any backend is constructed."""
    import envs.atari as atari

    def boom(*a, **k):
        raise AssertionError("backend constructed before validation")

    monkeypatch.setattr(atari, "EnvpoolRaw", boom)
    with pytest.raises(ValueError, match="seed"):
        envs.make_vec("Pong", 4, seed=-5, backend="envpool")


def test_unknown_preset_and_option():
    with pytest.raises(ValueError, match="unknown Atari preset"):
        envs.make_vec("Pong", 1, preset="fancy")
    with pytest.raises(ValueError, match="unknown Atari option"):
        envs.make_vec("Pong", 1, frame_skp=3)
    with pytest.raises(ValueError, match="presets apply to Atari games only"):
        envs.make_vec("CartPole", 1, preset="machado")
