#!/usr/bin/env python
"""Train a PPO agent: a thin script over `rlscale train` (same flags; see --help).

    python scripts/train_ppo.py --env Pong --num-envs 8 --num-steps 128 --total-agent-steps 10M
    python scripts/train_ppo.py --env CartPole --target-return 475
"""

import sys

from rl.cli import main

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.splitlines()[0], end="\n\n")
    sys.exit(main(["train", *sys.argv[1:]]))
