"""A stand-in for ``rl.sweeps.executors.run_one`` that kills its worker process (test helper)."""

import os


def die(*args, **kwargs):
    os._exit(3)
