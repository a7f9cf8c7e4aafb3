"""Start-up cost of ``rlscale --help`` in source trees, measured in the same run (BENCHMARKS.md,
"CLI start-up"): ``python scripts/cli_startup.py TREE [TREE ...]``.

Per tree: the modules ``import rl.cli.app``, ``rlscale --help`` and ``rlscale train --help``
load (rl modules counted, slow third-party packages named), then the wall time of
``python -m rl.cli --help``, the trees' runs interleaved so that load drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PACKAGES = ("stable_baselines3", "ray", "matplotlib", "scipy", "pandas", "tensorboard", "torch")

PROBE = """
import contextlib, io, json, sys
argv = json.loads(sys.argv[1])
if argv is None:
    import rl.cli.app
else:
    from rl.cli.app import main
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded(tree: str, argv: list[str] | None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], cwd=tree,
                         env={**os.environ, "PYTHONPATH": tree}, capture_output=True, text=True,
                         check=True)
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    return {"rl_modules": sum(m == "rl" or m.startswith("rl.") for m in modules),
            "packages": [p for p in PACKAGES if p in modules]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="repository roots to compare")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    report: dict = {}
    for tree in args.trees:
        report[tree] = {name: loaded(tree, argv) for name, argv in (
            ("import rl.cli.app", None), ("rlscale --help", ["--help"]),
            ("rlscale train --help", ["train", "--help"]))}
        report[tree]["seconds"] = []
    for _ in range(args.repeats):
        for tree in args.trees:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rl.cli", "--help"], cwd=tree,
                           env={**os.environ, "PYTHONPATH": tree}, check=True,
                           stdout=subprocess.DEVNULL)
            report[tree]["seconds"].append(round(time.perf_counter() - start, 3))
    for tree in args.trees:
        report[tree]["median_s"] = statistics.median(report[tree]["seconds"])
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
