"""``python -m rl.cli``: the ``rlscale`` command line."""

import sys

from rl.cli.app import main

sys.exit(main())
