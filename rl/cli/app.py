"""``rlscale``: the one command-line entry point (subcommands, ``--help`` on each)."""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import os
import sys
import threading
import warnings
from pathlib import Path

from rich.markup import escape

import envs
from rl.bench.configs import SUITE_CONFIGS
from rl.cli.args import add_dataclass_args, add_env_module_arg
from rl.cli.output import CLIError, err_console, print_error
from rl.cli.parsers import command
from rl.cli.parsers.adaptive import add_parser as add_adaptive_parser
from rl.cli.parsers.advise import add_parser as add_advise_parser
from rl.cli.parsers.compare import add_parser as add_compare_parser
from rl.cli.parsers.evaluate import add_parser as add_eval_parser
from rl.cli.parsers.fit import add_parser as add_fit_parser
from rl.cli.parsers.gns import add_parser as add_gns_parser
from rl.cli.parsers.sharpness import add_parser as add_sharpness_parser
from rl.cli.parsers.sweep import add_parser as add_sweep_parser
from rl.cli.parsers.train import add_parser as add_train_parser
from rl.runs.layout import CHECKPOINT_DIR, CONFIG_FILE

# Each command module adds its own subcommands through its add_parser(subparsers). They live
# in rl.cli.parsers and name their implementations (rl.cli.<command>) without importing
# them: building this parser, which every --help does, stays light (docs/architecture.md).
COMMAND_PARSERS = [add_train_parser, add_adaptive_parser, add_gns_parser, add_sweep_parser,
                   add_fit_parser, add_compare_parser, add_sharpness_parser, add_eval_parser,
                   add_advise_parser]


# --- parser ------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: the problem, and where the options are listed."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def package_version() -> str:
    """The installed rlscale's version ("unknown" when run from a source tree not installed)."""
    try:
        return importlib.metadata.version("rlscale")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rlscale",
        description="RL scaling testbed: PPO on vectorized environments, gradient noise "
        "scale, critical batch size.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("envs", help="list the environments available and where they come from")
    p.add_argument("--kind", choices=["atari", "classic", "plugin"], help="only this kind")
    add_env_module_arg(p)
    p.set_defaults(func=command("rl.cli.commands", "cmd_envs"))

    p = sub.add_parser("bench", help="throughput benchmarks (ratios against peers, same run)")
    bsub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, cfg_cls in SUITE_CONFIGS.items():
        sp = bsub.add_parser(name, help=(cfg_cls.__doc__ or "").strip().splitlines()[0])
        add_dataclass_args(sp, cfg_cls)
        sp.add_argument("--out", default="results/bench", help="results folder")
        sp.add_argument("--quiet", action="store_true", help="no progress display")
        sp.set_defaults(func=command("rl.cli.commands", "cmd_bench"))

    for add_parser in COMMAND_PARSERS:
        add_parser(sub)

    p = sub.add_parser("demo", help="the main job on its embedded default (what `make demo` runs)",
                       description="A cpu-quick study (rlscale compare --suite demo): CartPole "
                       "sweep with a B_crit fit, MinAtar noise-scale runs, supervised reference, "
                       "a digits-mlp critical-batch sweep (B_crit of a classifier, measured the "
                       "same way), report. --preset gpu: the atari-paper study.")
    p.add_argument("--preset", choices=["cpu-quick", "gpu"], default="cpu-quick",
                   help="cpu-quick (default: about 3.5-5.5 min on 2 idle cores, up to 12 on busy "
                   "ones) "
                   "or gpu (the Atari study; needs CUDA)")
    p.add_argument("--out", help="output folder (default results/demo, or results/demo-gpu)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=command("rl.cli.compare", "cmd_demo"))
    return parser


_OS_FIXES = {
    errno.ENOSPC: "free some disk space or write to another disk, then rerun",
    errno.EDQUOT: "free some of your disk quota, then rerun",
    errno.EFBIG: "the file would pass this system's file size limit (ulimit -f): raise the "
                 "limit or write to another disk, then rerun",
    errno.EACCES: "choose a directory you may write to (--run-dir / --out), or fix its "
                  "permissions",
    errno.EPERM: "choose a directory you may write to (--run-dir / --out), or fix its "
                 "permissions",
    errno.EROFS: "the filesystem is read-only: choose a writable --run-dir / --out",
    errno.ENOTDIR: "a file stands where a directory is needed: choose another path, or move "
                   "the file",
    errno.EEXIST: "something already exists at that path: choose another path, or move it",
    errno.EISDIR: "a directory stands where a file is needed: choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an ordinary filesystem failure: what failed, where, and the fix."""
    if exc.errno is None:  # raised by our code with its own message (and fix)
        return str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    what = exc.strerror or str(exc)
    fix = _OS_FIXES.get(exc.errno, "check the path and its disk, then rerun")
    return f"{what}{where}; {fix}"


def train_continuation(args) -> str:
    """How ``rlscale train`` goes on after a filesystem failure, from what its run directory
    holds: nothing to add where no run was written (#24 item 3)."""
    if getattr(args, "command", None) != "train":
        return ""
    from rl.cli.train import (  # lazy: the train implementation, on this error path only
        LATEST_LINK,
        RUNS_ROOT,
        configs_from_args,
    )

    try:
        named = configs_from_args(args)[0].run_dir
        # Without --run-dir the run got a new folder, which runs/latest points at.
        run_dir = Path(named) if named else (RUNS_ROOT / LATEST_LINK).resolve()
        flag = "" if named else f"--run-dir {run_dir} "
        if not (run_dir / CONFIG_FILE).is_file():
            return ""
        if any((run_dir / CHECKPOINT_DIR).glob("ckpt_*.pt")):
            return f"; the run continues from its newest checkpoint with {flag}--resume"
        return f"; the run has no checkpoint yet: start it over with {flag}--restart"
    except (OSError, ValueError):
        return ""


def _quiet_thread_os_errors(hook_args) -> None:
    """A background thread's OSError (TensorBoard's writer on a full disk) reaches the main
    thread, which reports it in one line; its traceback beside that line only confuses."""
    if issubclass(hook_args.exc_type, OSError):
        return
    _default_thread_hook(hook_args)


_default_thread_hook = threading.excepthook


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous_hook, threading.excepthook = threading.excepthook, _quiet_thread_os_errors
    previous_show, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return _run(args)
    finally:
        threading.excepthook = previous_hook
        warnings.showwarning = previous_show


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one readable line on stderr, not Python's file:line form."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def _run(args) -> int:
    try:
        for module in getattr(args, "env_modules", None) or []:
            envs.import_env_module(module, export=True)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except (CLIError, ValueError, ModuleNotFoundError, FileNotFoundError) as exc:
        print_error("error", str(exc))
        return 2
    except BrokenPipeError:
        # The reader of our output stopped early (`rlscale envs | head -1`): nothing to report.
        # Later writes (the flush at exit) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1  # as rich's console does when it meets the closed pipe itself
    except OSError as exc:  # disk full, read-only or missing directory, a file in the way
        print_error("error", describe_os_error(exc) + train_continuation(args))
        return 2
    except RuntimeError as exc:  # e.g. a non-finite loss: the run stopped, state is kept
        print_error("failed", str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
