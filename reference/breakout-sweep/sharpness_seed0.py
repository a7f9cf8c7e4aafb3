"""The study's sharpness step alone (measure_study_sharpness) for the study of
study_games.sh (same arguments): measures finished seed-0 runs not measured yet; trains nothing."""
from rl.cli.app import build_parser
from rl.cli.compare import plan_from_args
from rl.study.run import measure_study_sharpness

D, M = "/work/atari/demo-9e18458", "/work/atari/study-minatar"
argv = ["compare", "CartPole", "MinAtar-Breakout", "MinAtar-SpaceInvaders", "Breakout",
        "--sweep-dir", f"CartPole={D}/sweeps/CartPole",
        "--noise-dir", f"CartPole={D}/noise/CartPole",
        "--sweep-dir", f"MinAtar-Breakout={M}/sweeps/MinAtar-Breakout",
        "--noise-dir", f"MinAtar-Breakout={M}/noise/MinAtar-Breakout",
        "--noise-dir", f"MinAtar-SpaceInvaders={D}/noise/MinAtar-SpaceInvaders",
        "--sweep-dir", "Breakout=/work/atari/sweep-breakout",
        "--sweep-games", "none", "--noise-games", "none", "--parallel", "2",
        "--out", "/work/atari/study-games"]
measure_study_sharpness(plan_from_args(build_parser().parse_args(argv)))
