"""``rlscale eval RUN_DIR``: evaluation games of a trained run, and videos of a few."""

from __future__ import annotations

from rich.markup import escape

from rl.analysis.evaluate import EvalConfig, evaluate_policy, record_videos
from rl.cli.args import dataclass_from_args
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
