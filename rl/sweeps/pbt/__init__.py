"""Population based training (Jaderberg et al. 2017) of PPO on Ray Tune.

``config``: the ``[pbt]`` table and its checks; ``members``: the members' plans and one
member's training; ``tune``: the population on Ray Tune; ``table``: the PBT table and its
plot. The public names are gathered here; those of ``members``, ``table`` and ``tune`` are
imported on first use, so that ``config`` imports alone (docs/architecture.md). See
docs/sweeps.md for the full description.
"""

import importlib

from rl.sweeps.pbt.config import (
    HYPERPARAMS,
    PBTConfig,
    check_pbt_spec,
    member_name,
    parse_param_flag,
    parse_pbt_table,
)

# Public names of the slow submodules: imported when first asked for (PEP 562), so that
# building `rlscale sweep`'s options (PBTConfig) imports no training or table code.
_LAZY = {
    **dict.fromkeys(("initial_values", "is_pbt_sweep", "plan_members", "run_member"),
                    "rl.sweeps.pbt.members"),
    **dict.fromkeys(("PBT_COLUMNS", "member_summary", "pbt_table", "plot_pbt",
                     "write_pbt_outputs"), "rl.sweeps.pbt.table"),
    **dict.fromkeys(("member_statuses", "run_pbt"), "rl.sweeps.pbt.tune"),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "HYPERPARAMS",
    "PBTConfig",
    "PBT_COLUMNS",
    "check_pbt_spec",
    "initial_values",
    "is_pbt_sweep",
    "member_name",
    "member_statuses",
    "member_summary",
    "parse_param_flag",
    "parse_pbt_table",
    "pbt_table",
    "plan_members",
    "plot_pbt",
    "run_member",
    "run_pbt",
    "write_pbt_outputs",
]
