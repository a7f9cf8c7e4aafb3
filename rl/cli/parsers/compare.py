"""Options of ``rlscale compare`` and their argparse types (implementation: ``rl.cli.compare``)."""

from __future__ import annotations

import argparse

from rl.cli.args import at_least, finite_floats
from rl.cli.parsers import command
from rl.study.settings import PRESET_NAMES, SUITES
from rl.train.config import parse_count


def _ints(text: str) -> list[int]:
    return [int(parse_count(p)) for p in text.split(",") if p.strip()]


# Counts are checked here, where the flag is known: the plan keeps a preset's value for a 0.
_POSITIVE, _NONNEGATIVE, _POSITIVE_COUNT = at_least(1), at_least(0), at_least(1, parse_count)


def _games(text: str) -> str | list[str]:
    return text if text in ("all", "none") else [p.strip() for p in text.split(",") if p.strip()]


def _game_dir(text: str) -> tuple[str, str]:
    game, sep, path = text.partition("=")
    if not sep or not game.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected GAME=DIR (e.g. Breakout=results/sweeps/"
                                         f"breakout), got {text!r}")
    return game.strip(), path.strip()



def add_study_args(p: argparse.ArgumentParser) -> None:
    """The override flags shared by ``compare`` (and usable by other study commands)."""
    g = p.add_argument_group("what runs (default: the suite's, for the preset)")
    g.add_argument("--sweep-games", dest="sweep_games", type=_games, metavar="GAMES",
                   help="games that get a critical-batch sweep: comma-separated, all or none")
    g.add_argument("--noise-games", dest="noise_games", type=_games, metavar="GAMES",
                   help="games that get noise-scale runs: comma-separated, all (default) or none")
    g.add_argument("--sweep-dir", dest="sweep_dirs", type=_game_dir, action="append",
                   metavar="GAME=DIR",
                   help="GAME's critical-batch sweep is the one stored in DIR (made by rlscale "
                   "sweep or another study), with its own settings and targets: the sweep "
                   "overrides below do not apply to it, unfinished runs are continued, fits "
                   "and plots go to the study's stored/ folder. Repeatable. To re-target "
                   "it: rlscale sweep --out DIR --targets LIST")
    g.add_argument("--noise-dir", dest="noise_dirs", type=_game_dir, action="append",
                   metavar="GAME=DIR",
                   help="GAME's noise-scale runs are the ones stored in DIR (e.g. another "
                   "study's noise/GAME: one batch size), with their own settings; the "
                   "noise-scale overrides do not apply to them. Repeatable")
    s = p.add_argument_group("sweep overrides (every swept game)")
    s.add_argument("--num-envs", dest="num_envs", type=_ints, metavar="LIST",
                   help="num_envs grid, comma-separated (B = num_envs x num_steps)")
    s.add_argument("--num-steps", dest="num_steps", type=_POSITIVE,
                   help="steps per env per rollout")
    s.add_argument("--lrs", type=finite_floats, metavar="LIST",
                   help="learning rates, comma-separated")
    s.add_argument("--seeds", type=_POSITIVE, help="seeds per setting")
    s.add_argument("--targets", type=finite_floats, metavar="LIST",
                   help="target returns, comma-separated")
    s.add_argument("--budget", type=_POSITIVE_COUNT, help="agent steps per sweep run (e.g. 60k)")
    s.add_argument("--sweep-gns-every", dest="sweep_gns_every", type=_NONNEGATIVE,
                   help="noise-scale measurement interval in sweep runs (PPO iterations)")
    n = p.add_argument_group("noise-scale run overrides (every game)")
    n.add_argument("--noise-num-envs", dest="noise_num_envs", type=_POSITIVE)
    n.add_argument("--noise-num-steps", dest="noise_num_steps", type=_POSITIVE)
    n.add_argument("--noise-budget", dest="noise_budget", type=_POSITIVE_COUNT,
                   help="agent steps per noise-scale run (e.g. 400k)")
    n.add_argument("--noise-seeds", dest="noise_seeds", type=_POSITIVE)
    n.add_argument("--gns-every", dest="gns_every", type=_POSITIVE,
                   help="measure the noise scale every this many PPO iterations")
    r = p.add_argument_group("supervised reference (digits, rl.measure.supervised)")
    r.add_argument("--no-supervised", dest="no_supervised", action="store_true",
                   help="leave out the supervised reference run")
    r.add_argument("--supervised-epochs", dest="supervised_epochs", type=_POSITIVE)
    r.add_argument("--supervised-seed", dest="supervised_seed", type=_NONNEGATIVE)
    r.add_argument("--supervised-sweeps", dest="supervised_sweeps", type=_games,
                   metavar="TASKS",
                   help="supervised tasks that get a critical-batch sweep on the preset's grid "
                   "(docs/sweeps.md, 'Supervised sweeps'): digits-mlp, digits-cnn, "
                   "comma-separated, all or none (default: the suite's)")
    r.add_argument("--supervised-sweep-dir", dest="supervised_sweep_dirs", type=_game_dir,
                   action="append", metavar="TASK=DIR",
                   help="TASK's supervised sweep is the one stored in DIR (e.g. "
                   "reference/supervised-sweeps/digits-mlp), with its own settings and targets; "
                   "fits and plots go to the study's stored/ folder. Repeatable")
    e = p.add_argument_group("execution")
    e.add_argument("--parallel", type=_POSITIVE,
                   help="runs at once (default: cpu-quick all cores, gpu cores / 4)")
    e.add_argument("--device", help="training device: auto (default), cpu, cuda")
    e.add_argument("--n-boot", dest="n_boot", type=_POSITIVE,
                   help="bootstrap replicates of the fits")
    e.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                   help="rerun runs that failed on their own (interrupted runs always resume)")
    e.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="show what would run; start nothing")
    e.add_argument("--report-only", dest="report_only", action="store_true",
                   help="train and measure nothing: results.csv and the report from the runs "
                   "as they are now (e.g. while they train in another process; unfinished "
                   "runs stay out of the fits and are counted as such)")
    e.add_argument("--quiet", action="store_true", help="no progress display, no log lines")


def add_parser(sub) -> None:
    suites = "; ".join(f"{k}: {v.description} ({', '.join(v.games)})" for k, v in SUITES.items())
    p = sub.add_parser(
        "compare",
        help="B_simple and B_crit per game beside the supervised reference and cited values",
        description="Run (or continue) a study: per game, noise-scale runs and, where the "
        "preset affords it, a critical-batch sweep; plus the supervised reference. Writes "
        "results.csv, report.html (self-contained) and report.md into --out and prints the "
        f"headline table. Suites: {suites}. Presets: cpu-quick (a 2-core laptop), gpu (a "
        "real study). A second invocation reuses finished runs.",
    )
    p.add_argument("games", nargs="*", metavar="GAME",
                   help="games to study (instead of, or within, --suite)")
    p.add_argument("--suite", choices=list(SUITES), help="a named set of games")
    p.add_argument("--preset", choices=list(PRESET_NAMES), default="cpu-quick",
                   help="budgets and grids (default cpu-quick)")
    p.add_argument("--out", help="study directory (default results/compare/<suite>-<preset>)")
    add_study_args(p)
    p.set_defaults(func=command("rl.cli.compare", "cmd_compare"))
