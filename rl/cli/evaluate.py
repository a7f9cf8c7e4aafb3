"""``rlscale eval RUN_DIR``: evaluation games of a trained run, and videos of a few."""

from __future__ import annotations

import argparse

from rich.markup import escape

from rl.analysis.evaluate import EvalConfig, evaluate_policy, record_videos
from rl.cli.args import add_dataclass_args, add_env_module_arg, dataclass_from_args
from rl.cli.output import CLIError, console, err_console
from rl.runs.policy import load_policy


def cmd_eval(args) -> int:
    cfg = dataclass_from_args(args, EvalConfig)
    cfg.validate()
    policy = load_policy(args.run_dir, args.device, checkpoint=args.checkpoint)
    result = evaluate_policy(policy, cfg)
    if result.games < cfg.episodes:
        what = (f"{result.games} of {cfg.episodes} games ended within --max-agent-steps "
                f"{cfg.max_agent_steps:,} ({result.agent_steps:,} agent steps played)")
        if not result.games:
            raise CLIError(f"no game ended: {what}; does the environment have a time limit? "
                           "Wrap it in gymnasium.wrappers.TimeLimit, or raise --max-agent-steps")
        err_console.print(f"[yellow]warning:[/] {escape(what)}; the statistics below cover "
                          "those", soft_wrap=True)
    mode = "deterministic (argmax)" if cfg.deterministic else "stochastic (sampled)"
    console.print(
        f"{policy.env.env}, checkpoint iteration {policy.iteration}, {mode} actions, seed "
        f"{cfg.seed}: mean return {result.mean:.2f}, std {result.std:.2f} over "
        f"{result.games} games (unclipped full-game returns; mean length "
        f"{sum(result.lengths) / max(1, result.games):.0f} agent steps)", highlight=False,
        soft_wrap=True)
    if args.video:
        files = record_videos(policy, args.video, cfg)
        for path in files:
            console.print(f"video: {path}", highlight=False)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="play evaluation games with a trained run's policy (mean, std; --video records)",
        description="Play whole games with the policy of a run's newest checkpoint, on the "
        "environment and preprocessing the run trained with, and print the mean and standard "
        "deviation of the unclipped full-game return. --video DIR records a few more games "
        "as mp4 files (gymnasium's RecordVideo; needs moviepy).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `rlscale train`")
    add_env_module_arg(p)
    add_dataclass_args(p, EvalConfig, title="evaluation")
    p.add_argument("--stochastic", dest="deterministic", action="store_false",
                   default=argparse.SUPPRESS,
                   help="sample actions from the policy (same as --no-deterministic)")
    p.add_argument("--video", metavar="DIR", help="record --video-episodes games into DIR")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="a ckpt_*.pt file of the run (default: its newest good checkpoint)")
    p.add_argument("--device", default="cpu", help="device of the policy (default: cpu)")
    p.set_defaults(func=cmd_eval)
