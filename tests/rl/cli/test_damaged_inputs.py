"""Damaged sweep and run directories: one line naming the file and the fix, exit status 2
(#24 item 14), not the error of whatever tripped over the damage first."""

from __future__ import annotations

import os

import pytest

from rl.cli import main
from rl.sweeps.spec import parse_spec, plan_runs
from rl.sweeps.state import write_sweep_state


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


def _stored_sweep(out):
    spec = parse_spec({"env": "CartPole", "num_envs": [1, 2], "num_steps": 16,
                       "targets": [10], "out": str(out)})
    plans = plan_runs(spec)
    write_sweep_state(spec, plans)
    return plans


HEADER = "run,env,rollout_batch_size,lr,seed,status,message,iterations_to_target_10"


@pytest.mark.parametrize("garbage, column", [
    ("r9,Game,lots,1e-3,0,finished,,12", "rollout_batch_size"),
    ("r9,Game,64,1e-3,0,finished,,twelve", "iterations_to_target_10"),
])
def test_a_garbage_row_in_results_csv_names_its_line(tmp_path, capsys, garbage, column):
    rows = [f"r{i},Game,{32 * 2 ** i},1e-3,0,finished,,{20 + 40 / 2 ** i}" for i in range(4)]
    (tmp_path / "results.csv").write_text("\n".join([HEADER, *rows, garbage]) + "\n")
    assert main(["fit", str(tmp_path), "--no-plots", "--n-boot", "20"]) == 2
    err = _one_error(capsys)
    assert f"{tmp_path / 'results.csv'}, row 5 (run r9): {column} is" in err
    assert "correct or delete that row" in err


def test_an_unparseable_results_csv_names_the_file(tmp_path, capsys):
    (tmp_path / "results.csv").write_text(HEADER + "\nr0,Game,32,1e-3,0,finished,,20,extra,x\n")
    assert main(["fit", str(tmp_path), "--no-plots"]) == 2
    err = _one_error(capsys)
    assert str(tmp_path / "results.csv") in err and "restore" in err


def test_a_damaged_results_parquet_names_the_file(tmp_path, capsys):
    """Not pyarrow's "Parquet magic bytes not found" without a file name."""
    rows = [f"r{i},Game,{32 * 2 ** i},1e-3,{s},finished,,{n},{32 * 2 ** i * n},{2 ** i},16"
            for i in range(5) for s in (0, 1) for n in [round(20 + 400 / 2 ** i) + s]]
    header = HEADER + ",agent_steps_to_target_10,num_envs,num_steps"
    (tmp_path / "results.csv").write_text("\n".join([header, *rows]) + "\n")
    (tmp_path / "results.parquet").write_bytes(b"PAR1 cut short")
    assert main(["fit", str(tmp_path), "--no-plots", "--n-boot", "20"]) == 2
    err = " ".join(_one_error(capsys).split())
    assert f"{tmp_path / 'results.parquet'} cannot be read" in err and "move it away" in err
    (tmp_path / "results.parquet").unlink()  # as the message says: the csv serves
    assert main(["fit", str(tmp_path), "--no-plots", "--n-boot", "20"]) == 0


@pytest.mark.parametrize("command", [["sweep", "--out"], ["fit"]])
def test_a_truncated_sweep_json_is_named_not_a_missing_env(tmp_path, capsys, command):
    _stored_sweep(tmp_path)
    path = tmp_path / "sweep.json"
    path.write_text(path.read_text()[:100])
    assert main([*command, str(tmp_path)]) == 2
    err = _one_error(capsys)
    assert f"{path} is not readable JSON" in err and "env is missing" not in err
    assert "rlscale sweep SPEC.toml --out" in err


def test_a_dangling_link_as_run_dir_names_the_link_and_its_target(tmp_path, capsys):
    plans = _stored_sweep(tmp_path / "sweep")
    link = plans[0].run_dir
    os.makedirs(os.path.dirname(link))
    os.symlink(tmp_path / "gone", link)
    assert main(["sweep", "--out", str(tmp_path / "sweep")]) == 2  # before anything runs
    err = _one_error(capsys)
    assert f"{link} is a symbolic link to {tmp_path / 'gone'}, which does not exist" in err
    assert f"rm {link}" in err and not (tmp_path / "sweep" / "events.jsonl").exists()
    assert main(["train", "--env", "CartPole", "--run-dir", link, "--num-envs", "8",
                 "--num-steps", "32", "--total-agent-steps", "256"]) == 2
    assert f"{link} is a symbolic link" in _one_error(capsys)
    assert os.path.islink(link) and not (tmp_path / "gone").exists()
