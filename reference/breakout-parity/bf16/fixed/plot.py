"""Plot of the fixed cpu_bf16 runs against our fp32 runs on Breakout (return_recent against
agent steps). Usage, from the repository root:
    python reference/breakout-parity/bf16/fixed/plot.py
"""
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

here = Path(__file__).parent
parity = here.parent.parent
runs = {"fp32 seed 0": parity / "ours-seed0.metrics.jsonl",
        "fp32 seed 1": parity / "ours-seed1.metrics.jsonl"}
for path in sorted(here.glob("ours-bf16-seed*.metrics.jsonl")):
    runs[f"cpu_bf16 seed {path.name.split('seed')[1].split('.')[0]}"] = path
fig = Figure(figsize=(8, 4.5))
FigureCanvasAgg(fig)
ax = fig.subplots()
for label, path in runs.items():
    df = pd.read_json(path, lines=True)
    ax.plot(df["agent_steps"], df["return_recent"], label=label,
            ls="-" if "fp32" in label else "--", color=f"C{label.split('seed ')[1]}")
ax.set_xlabel("agent steps (frames = 4 x)")
ax.set_ylabel("smoothed full-game return")
ax.set_title("Breakout 8 x 128, our PPO: fp32 against cpu_bf16 (after the autocast fix)")
ax.legend()
fig.tight_layout()
fig.savefig(here / "learning.png", dpi=90)
