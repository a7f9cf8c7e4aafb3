"""Population based training (Jaderberg et al. 2017) of PPO on Ray Tune.

``config``: the ``[pbt]`` table and its checks; ``members``: the members' plans and one
member's training; ``tune``: the population on Ray Tune; ``table``: the PBT table and its
plot. The public names are gathered here. See docs/sweeps.md for the full description.
"""

from rl.sweeps.pbt.config import (
    HYPERPARAMS,
    PBTConfig,
    check_pbt_spec,
    member_name,
    parse_param_flag,
    parse_pbt_table,
)
from rl.sweeps.pbt.members import initial_values, is_pbt_sweep, plan_members, run_member
from rl.sweeps.pbt.table import (
    PBT_COLUMNS,
    member_summary,
    pbt_table,
    plot_pbt,
    write_pbt_outputs,
)
from rl.sweeps.pbt.tune import member_statuses, run_pbt

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
