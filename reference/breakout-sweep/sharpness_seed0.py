"""The study's sharpness step alone (measure_study_sharpness) for the study of
study_games.sh (same arguments): measures finished seed-0 runs not measured yet; trains nothing.

    python sharpness_seed0.py --atari <atari-folder>      # or ATARI=<atari-folder>

The folder holds demo-9e18458/, study-minatar/, sweep-breakout/ and study-games/ (as in
study_games.sh).
"""
import argparse
import os
import sys

from rl.cli.app import build_parser
from rl.cli.compare import plan_from_args
from rl.study.run import measure_study_sharpness

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--atari", default=os.environ.get("ATARI"),
                    help="folder of study_games.sh's runs (default: $ATARI)")
a = parser.parse_args()
if not a.atari:
    sys.exit("set --atari or ATARI to the folder holding demo-9e18458, study-minatar, "
             "sweep-breakout and study-games")
D, M = f"{a.atari}/demo-9e18458", f"{a.atari}/study-minatar"
argv = ["compare", "CartPole", "MinAtar-Breakout", "MinAtar-SpaceInvaders", "Breakout",
        "--sweep-dir", f"CartPole={D}/sweeps/CartPole",
        "--noise-dir", f"CartPole={D}/noise/CartPole",
        "--sweep-dir", f"MinAtar-Breakout={M}/sweeps/MinAtar-Breakout",
        "--noise-dir", f"MinAtar-Breakout={M}/noise/MinAtar-Breakout",
        "--noise-dir", f"MinAtar-SpaceInvaders={D}/noise/MinAtar-SpaceInvaders",
        "--sweep-dir", f"Breakout={a.atari}/sweep-breakout",
        "--sweep-games", "none", "--noise-games", "none", "--parallel", "2",
        "--out", f"{a.atari}/study-games"]
measure_study_sharpness(plan_from_args(build_parser().parse_args(argv)))
