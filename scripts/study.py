#!/usr/bin/env python
"""Run a study: B_simple and B_crit per game beside the supervised reference and cited
values (`rlscale compare`, same flags; see --help). Games and folders are arguments.

    python scripts/study.py --suite classic --preset cpu-quick --out runs/study
    python scripts/study.py CartPole --sweep-dir CartPole=<runs-folder>/cartpole \\
        --sweep-games none --noise-games none --report-only --out runs/study
"""

import sys

from rl.cli import main

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.splitlines()[0], end="\n\n")
    sys.exit(main(["compare", *sys.argv[1:]]))
