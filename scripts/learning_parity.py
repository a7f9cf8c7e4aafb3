#!/usr/bin/env python
"""Check learning parity with stable-baselines3: train ours and SB3's PPO with the same
settings and compare their learning curves (`rlscale bench learning`, same flags; see --help
and docs/learning-parity.md). Needs the sb3 extra installed.

    python scripts/learning_parity.py --env Breakout --seeds 0,1 --total-agent-steps 1M \\
        --torch-threads 1
    python scripts/learning_parity.py --env Pendulum --runs <runs-folder> --no-train \\
        --out results/parity
"""

import sys

from rl.cli import main

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.splitlines()[0], end="\n\n")
    sys.exit(main(["bench", "learning", *sys.argv[1:]]))
