"""Every numeric option of every subcommand, given bad values: one clear error, nothing run.

Issue #14's figure, printed with ``-s``: "bad inputs tried: N, clear errors: M".
"""

import argparse
import json

import pytest

from rl.cli.app import build_parser, main
from rl.measure.warmup import WARMUP_ITERATIONS

NON_NUMBERS = ("abc", "nan", "inf", "-inf")
"""Bad for every numeric option."""
ANY = ()  # every finite number is valid (a target return may be negative)
NONNEG = ("-1",)  # an integer >= 0 (seeds; 0 = off / torch's default)
POS = ("-1", "0")  # a positive number
UNIT = ("-1", "1.5")  # in [0, 1]
OPEN_UNIT = ("-1", "0", "1", "1.5")  # in (0, 1)

# (command, flag) -> bad values besides NON_NUMBERS, read off each config's validate()
# (or the flag's help where nothing validates it). Valid values (a seed of 0, --gns-every 0
# = off, a negative target return) are not listed: they are not bad inputs.
RULES: dict[tuple[str, str], tuple[str, ...]] = {
    # rl.bench.*: the bench configs
    ("bench envs", "--num-envs"): POS,
    ("bench envs", "--steps"): POS,
    ("bench envs", "--repeats"): POS,
    ("bench envs", "--warmup-steps"): NONNEG,
    ("bench envs", "--seed"): NONNEG,
    ("bench gns", "--iterations"): POS,
    ("bench gns", "--cadences"): NONNEG,
    ("bench gns", "--num-envs"): POS,
    ("bench gns", "--num-steps"): POS,
    ("bench gns", "--gns-groups"): ("-1", "0", "1"),
    ("bench gns", "--repeats"): POS,
    ("bench gns", "--seed"): NONNEG,
    ("bench ppo", "--iterations"): POS,
    ("bench ppo", "--repeats"): POS,
    ("bench ppo", "--threads"): NONNEG,
    ("bench ppo", "--seed"): NONNEG,
    ("bench flops", "--num-envs"): POS,
    ("bench flops", "--num-steps"): POS,
    ("bench flops", "--updates"): POS,
    ("bench flops", "--repeats"): POS,
    ("bench flops", "--threads"): NONNEG,
    ("bench flops", "--matmul-size"): POS,
    ("bench flops", "--seed"): NONNEG,
    ("bench scaling", "--num-envs"): POS,
    ("bench scaling", "--num-steps"): POS,
    ("bench scaling", "--iterations"): POS,
    ("bench scaling", "--repeats"): POS,
    ("bench scaling", "--threads"): NONNEG,
    ("bench scaling", "--seed"): NONNEG,
    ("bench learning", "--num-envs"): POS,
    ("bench learning", "--num-steps"): POS,
    ("bench learning", "--total-agent-steps"): POS,
    ("bench learning", "--seeds"): NONNEG,
    ("bench learning", "--gns-every"): NONNEG,
    ("bench learning", "--torch-threads"): NONNEG,
    ("bench learning", "--return-window"): POS,
    ("bench learning", "--ci"): OPEN_UNIT,
    ("bench learning", "--span"): NONNEG,
    # TrainConfig, PPOConfig, ParallelConfig, AdaptiveConfig
    ("train", "--num-envs"): POS,
    ("train", "--num-steps"): POS,
    ("train", "--total-agent-steps"): POS,
    ("train", "--seed"): NONNEG,
    ("train", "--torch-threads"): NONNEG,
    ("train", "--log-std-init"): ANY,
    ("train", "--norm-obs-clip"): POS,
    ("train", "--norm-reward-clip"): POS,
    ("train", "--checkpoint-every"): POS,
    ("train", "--target-return"): ANY,
    ("train", "--return-window"): POS,
    ("train", "--gns-every"): NONNEG,
    ("train", "--gns-groups"): ("-1", "0", "1"),
    ("train", "--learning-rate"): POS,
    ("train", "--num-epochs"): POS,
    ("train", "--num-minibatches"): POS,
    ("train", "--gamma"): UNIT,
    ("train", "--gae-lambda"): UNIT,
    ("train", "--clip-coef"): POS,
    ("train", "--ent-coef"): NONNEG,
    ("train", "--vf-coef"): NONNEG,
    ("train", "--max-grad-norm"): POS,
    ("train", "--adam-eps"): POS,
    ("train", "--target-kl"): POS,
    ("train", "--nproc"): POS,
    ("train", "--batch-max"): POS,
    ("train", "--batch-scale"): POS,
    ("train", "--batch-beta"): ("-1", "1"),
    ("train", "--batch-warmup"): POS,
    ("train", "--progress-interval-s"): NONNEG,
    # EvalConfig
    ("eval", "--episodes"): POS,
    ("eval", "--seed"): NONNEG,
    ("eval", "--num-envs"): POS,
    ("eval", "--video-episodes"): POS,
    ("eval", "--max-agent-steps"): POS,
    ("compare-adaptive", "--targets"): ANY,
    # SupervisedConfig
    ("gns supervised", "--test-fraction"): OPEN_UNIT,
    ("gns supervised", "--hidden"): POS,
    ("gns supervised", "--channels"): POS,
    ("gns supervised", "--target"): ANY,  # minus a loss, or an accuracy
    ("gns supervised", "--diverge-factor"): ("-1", "0", "1"),  # above 1
    ("gns supervised", "--eval-per-octave"): POS,
    ("gns supervised", "--lr"): POS,
    ("gns supervised", "--momentum"): NONNEG,
    ("gns supervised", "--batch-size"): POS,
    ("gns supervised", "--epochs"): POS,
    ("gns supervised", "--total-steps"): POS,
    ("gns supervised", "--gns-groups"): ("-1", "0", "1"),
    ("gns supervised", "--gns-group-size"): POS,
    ("gns supervised", "--gns-every"): POS,
    ("gns supervised", "--gns-beta"): ("-1", "1"),
    ("gns supervised", "--gns-window"): POS,
    ("gns supervised", "--seed"): NONNEG,
    ("gns supervised", "--threads"): POS,
    ("gns run", "--segments"): POS,
    ("gns run", "--return-bins"): POS,
    # CheckpointNoiseConfig
    ("gns checkpoints", "--num-envs"): POS,
    ("gns checkpoints", "--num-steps"): POS,
    ("gns checkpoints", "--groups"): ("-1", "0", "1"),
    ("gns checkpoints", "--repeats"): ("-1", "0", "2"),
    ("gns checkpoints", "--warmup-rollouts"): NONNEG,
    ("gns checkpoints", "--every"): POS,
    ("gns checkpoints", "--seed"): NONNEG,
    ("gns checkpoints", "--torch-threads"): NONNEG,
    # the sweep spec (rl.sweeps.spec) and PBTConfig
    ("sweep", "--num-envs"): POS,
    ("sweep", "--num-steps"): POS,
    ("sweep", "--lrs"): POS,
    ("sweep", "--base-lr"): POS,
    ("sweep", "--base-batch-size"): POS,
    ("sweep", "--seeds"): POS,  # a count (0 runs nothing) or a list of seeds >= 0
    ("sweep", "--best-lr-seeds"): ("-1", "0", "1"),  # seeds in all at the best lr: >= 2
    ("sweep", "--targets"): ANY,
    ("sweep", "--budget"): POS,
    ("sweep", "--parallel"): POS,
    ("sweep", "--cpus-per-trial"): POS,
    ("sweep", "--population"): ("-1", "0", "1"),
    ("sweep", "--perturbation-interval"): POS,
    ("sweep", "--quantile-fraction"): ("-1", "0", "0.9"),
    ("sweep", "--resample-probability"): UNIT,
    ("fit", "--n-boot"): POS,
    ("fit", "--ci"): OPEN_UNIT,
    ("fit", "--seed"): NONNEG,
    ("fit", "--range-factor"): ("-1", "0", "0.5"),
    # the study overrides (rl.study.plan.Overrides)
    ("compare", "--num-envs"): POS,
    ("compare", "--num-steps"): POS,
    ("compare", "--lrs"): POS,
    ("compare", "--seeds"): POS,  # a count of seeds
    ("compare", "--targets"): ANY,
    ("compare", "--budget"): POS,
    ("compare", "--sweep-gns-every"): NONNEG,
    ("compare", "--noise-num-envs"): POS,
    ("compare", "--noise-num-steps"): POS,
    ("compare", "--noise-budget"): POS,
    ("compare", "--noise-seeds"): POS,
    ("compare", "--gns-every"): POS,  # noise-scale runs measure; 0 would measure nothing
    ("compare", "--supervised-epochs"): POS,
    ("compare", "--supervised-seed"): NONNEG,
    ("compare", "--parallel"): POS,
    ("compare", "--n-boot"): POS,
    # AdviseConfig (rlscale advise)
    ("advise", "--num-envs"): POS,
    ("advise", "--num-steps"): POS,
    ("advise", "--candidates"): POS,
    ("advise", "--learning-rate"): POS,
    ("advise", "--budget-s"): POS,
    ("advise", "--budget"): POS,
    ("advise", "--measurements"): ("-1", "0", "4"),
    ("advise", "--from-iteration"): NONNEG,
    ("advise", "--tolerance"): NONNEG,
    ("advise", "--band-sd"): NONNEG,
    ("advise", "--seed"): NONNEG,
    ("advise", "--threads"): NONNEG,
    # SharpnessConfig
    ("sharpness", "--num-envs"): POS,
    ("sharpness", "--num-steps"): POS,
    ("sharpness", "--repeats"): POS,
    ("sharpness", "--eps"): POS,
    ("sharpness", "--ascent-steps"): POS,
    ("sharpness", "--ascent-starts"): POS,
    ("sharpness", "--max-products"): POS,
    ("sharpness", "--eigen-tol"): OPEN_UNIT,
    ("sharpness", "--seed"): NONNEG,
    ("sharpness", "--seeds"): NONNEG,
    ("sharpness", "--lr"): POS,
}

TEXT_NUMBERS = {
    ("bench envs", "--num-envs"), ("bench gns", "--iterations"), ("bench gns", "--cadences"),
    ("bench scaling", "--num-envs"), ("bench learning", "--seeds"), ("sweep", "--num-envs"),
    ("sweep", "--num-steps"), ("sweep", "--lrs"), ("sweep", "--seeds"), ("sweep", "--targets"),
    ("sweep", "--budget"), ("sharpness", "--eps"), ("advise", "--candidates"),
    ("advise", "--budget"),
}
"""Numbers given as text (comma-separated lists, counts with suffixes): the parser's types do
not show them, so they are named here."""

_PBT = ("--scheduler", "pbt", "--backend", "ray", "--num-envs", "8")
CONTEXT: dict[tuple[str, str], tuple[str, ...]] = {
    **{("sweep", f): _PBT for f in ("--population", "--perturbation-interval",
                                    "--quantile-fraction", "--resample-probability")},
    ("sweep", "--base-batch-size"): ("--lr-rule", "sqrt", "--lrs", "1e-3",
                                     "--base-batch-size", "128"),
    ("sweep", "--best-lr-seeds"): ("--lrs", "1e-3,2e-3", "--best-lr-seeds", "3"),
}
"""Options a flag needs beside it (with a valid value of the flag itself where it is
required), so that the check that fails is the flag's own."""

# Where real work would start; an accepted bad value stops there (as Accepted).
WORK = ("rl.train.launch.run_rank", "rl.train.launch._spawn", "envs.make_vec",
        "rl.bench.envs.interleaved", "rl.bench.gns.interleaved", "rl.bench.ppo.interleaved",
        "rl.bench.scaling.interleaved", "rl.analysis.learning.train_sb3_run",
        "rl.analysis.learning.load_runs", "rl.cli.adaptive.compare_with_fixed",
        "rl.cli.gns.run_supervised", "rl.cli.gns.print_table", "rl.cli.gns.run_checkpoint_noise",
        "rl.cli.sweep.run_sweep", "rl.cli.fit.refreshed_results",
        "rl.cli.fit.write_pbt_outputs", "rl.cli.compare.compare",
        "rl.cli.sharpness.run_sharpness", "rl.cli.sharpness.sweep_sharpness",
        "rl.advise.probe.bench_scaling", "rl.cli.evaluate.load_policy")

NUMERIC_TYPES = {"int", "float", "parse_count", "_ints", "finite_floats", "seed_list",
                 "positive_float", "non_negative_float"}


class Accepted(Exception):  # not one of the errors main() turns into a message
    """A bad value got past validation to where the command starts its work."""


def subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from subcommands(sub, (*prefix, name))


def option_flags() -> dict[tuple[str, str], argparse.Action]:
    """(command, flag) -> action, for every option of every (sub)command."""
    return {(" ".join(path), action.option_strings[-1]): action
            for path, sub in subcommands(build_parser()) for action in sub._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)}


def is_numeric(action: argparse.Action) -> bool:
    """Takes a number, judged by the parser's type or its default."""
    if action.choices:
        return False
    default = action.default
    return getattr(action.type, "__name__", None) in NUMERIC_TYPES or (
        isinstance(default, (int, float)) and not isinstance(default, bool))


def fixtures(tmp_path) -> dict[str, list[str]]:
    """Each command's arguments besides the flag: real, harmless inputs under tmp_path."""
    run = tmp_path / "run"  # a run directory: config, and metrics with noise-scale columns
    run.mkdir()
    (run / "config.json").write_text("{}")
    rows = [{"iteration": i, "agent_steps": 256 * i, "return_recent": 10.0,
             **{f"gns/{t}/{k}": 1.0 for t in ("total", "policy", "value")
                for k in ("g2", "trace_sigma")}}
            for i in range(1, WARMUP_ITERATIONS + 9)]  # 8 measurements after the warm-up
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sweep = tmp_path / "sweep"  # a sweep directory (sharpness, fit, compare-adaptive)
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    spec = tmp_path / "spec.toml"
    spec.write_text(f'env = "CartPole"\nnum_envs = [4, 8]\ntargets = [100]\nbudget = 20000\n'
                    f'out = "{(tmp_path / "new-sweep").as_posix()}"\n')
    out = str(tmp_path / "out")  # never created: every call fails (or stops) before
    return {
        **{f"bench {s}": ["bench", s, "--out", out, "--quiet"] for s in ("gns", "ppo", "scaling")},
        # CartPole, not the Atari defaults: no Atari package is needed to get this far
        **{f"bench {s}": ["bench", s, "--env", "CartPole", "--out", out, "--quiet"]
           for s in ("envs", "learning", "flops")},
        "train": ["train", "--run-dir", out, "--quiet"],
        "eval": ["eval", str(run)],
        "compare-adaptive": ["compare-adaptive", str(sweep), str(run), "--targets", "100"],
        "gns supervised": ["gns", "supervised", "--out", out, "--quiet"],
        "gns run": ["gns", "run", str(run), "--out", out],
        "gns checkpoints": ["gns", "checkpoints", str(run), "--out", out, "--quiet"],
        "sweep": ["sweep", str(spec), "--quiet"],
        "fit": ["fit", str(sweep), "--no-plots"],
        "compare": ["compare", "CartPole", "--out", out, "--quiet"],
        "sharpness": ["sharpness", str(sweep), "--out", out],
        "advise": ["advise", "--env", "CartPole", "--run-dir", out, "--quiet"],
    }


def snapshot(root) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*")}


def outcome(argv: list[str], flag: str, capsys) -> str | None:
    """None when ``main(argv)`` fails with one clear message naming ``flag`` (or its field);
    else what went wrong."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    except Accepted as exc:
        capsys.readouterr()
        return f"accepted (reached {exc})"
    except Exception as exc:  # escaped main(): the user sees a traceback
        capsys.readouterr()
        return f"traceback: {type(exc).__name__}: {exc}"
    err = " ".join(capsys.readouterr().err.split())
    if not code:
        return f"exit status {code!r}"
    if "Traceback" in err or err.count("error:") != 1:
        return f"not one error message: {err!r}"
    if flag not in err and flag[2:].replace("-", "_") not in err:
        return f"the message names neither {flag} nor its field: {err!r}"
    return None


@pytest.fixture(scope="module")
def tally():
    counts = {"tried": 0, "clear": 0, "failures": []}
    yield counts
    print(f"\nbad inputs tried: {counts['tried']}, clear errors: {counts['clear']}")
    for line in counts["failures"]:
        print(f"  {line}")


def test_every_numeric_option_is_covered():
    flags = option_flags()
    numeric = {key for key, action in flags.items() if is_numeric(action)}
    assert not numeric - set(RULES), "numeric options missing from RULES"
    assert not set(RULES) - numeric - TEXT_NUMBERS, "RULES names options that take no number"
    assert TEXT_NUMBERS <= set(flags) and set(CONTEXT) <= set(RULES)
    commands = {cmd for cmd, _ in RULES}
    assert {"train", "sweep", "fit", "compare", "compare-adaptive", "sharpness", "gns run",
            "gns checkpoints", "gns supervised", "bench learning", "bench envs"} <= commands


@pytest.mark.parametrize("command", sorted({cmd for cmd, _ in RULES}))
def test_bad_numbers_are_one_clear_error(command, tmp_path, monkeypatch, capsys, tally):
    def stop(where):
        def work(*args, **kwargs):
            raise Accepted(where)
        return work

    for target in WORK:
        monkeypatch.setattr(target, stop(target))
    base = fixtures(tmp_path)[command]
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # default output folders would land here
    flags = [(flag, bad) for (cmd, flag), bad in RULES.items() if cmd == command]
    for context in {CONTEXT.get((command, flag), ()) for flag, _ in flags}:
        with pytest.raises(Accepted):  # the inputs are sound: failures are the flag's
            main([*base, *context])
        capsys.readouterr()
    before = snapshot(tmp_path)
    failures = []
    for flag, bad in flags:
        for value in (*NON_NUMBERS, *bad):
            # --flag=VALUE: argparse would take a bare "-inf" for an option and never parse it
            argv = [*base, *CONTEXT.get((command, flag), ()), f"{flag}={value}"]
            problem = outcome(argv, flag, capsys)
            after = snapshot(tmp_path)
            if after != before:
                problem = problem or f"wrote {sorted(set(after) ^ set(before)) or 'files'}"
                before = after
            tally["tried"] += 1
            if problem is None:
                tally["clear"] += 1
            else:
                failures.append(f"rlscale {command} {flag}={value}: {problem}")
    tally["failures"] += failures
    assert not failures, "\n".join(failures)
