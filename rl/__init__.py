"""rlscale's testbed: train PPO, measure its gradient noise scale, sweep and fit.

Subpackages in the order the data flows, each importing only those before it:
``runs`` (run directories) <- ``measure`` (noise scale, returns) <- ``train`` (the loop)
<- ``peers`` (SB3) <- ``sweeps`` (many runs, PBT) <- ``analysis`` (fits) <- ``study``
(the report) <- ``bench`` <- ``cli``. See docs/architecture.md.
"""
