"""Batch-size advice from one short run: B_simple from a probe, B_crit = r x B_simple with r
from the committed cross-task study, the PPO iterations, agent steps and wall-clock each
candidate rollout batch would take, and the recommended one (docs/advise.md).

The names of ``calibration`` and ``probe`` (the study table, training, benchmarks) are
imported on first use, so that ``rl.advise.config`` imports alone (docs/architecture.md).
"""

import importlib

from rl.advise.config import AdviseConfig
from rl.advise.predict import (
    Advice,
    Candidate,
    CandidateRow,
    CriticalBatchPrediction,
    NoiseScaleEstimate,
    RatioCalibration,
    Recommendation,
    advise_from,
    predict_b_crit,
    relative_iterations,
    relative_samples,
)

# Public names of the slow submodules: imported when first asked for (PEP 562), so that
# building `rlscale advise`'s options (AdviseConfig) does not train or benchmark anything.
_LAZY = {
    **dict.fromkeys(("growth_exponents", "growth_note", "load_study", "ratio_calibration"),
                    "rl.advise.calibration"),
    **dict.fromkeys(("NoProbeData", "advise", "advise_run", "load_run_metrics",
                     "noise_from_metrics"), "rl.advise.probe"),
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


__all__ = ["Advice", "AdviseConfig", "Candidate", "CandidateRow", "CriticalBatchPrediction",
           "NoProbeData", "NoiseScaleEstimate", "RatioCalibration", "Recommendation",
           "advise", "advise_from", "advise_run", "growth_exponents", "growth_note",
           "load_run_metrics", "load_study", "noise_from_metrics", "predict_b_crit",
           "ratio_calibration", "relative_iterations", "relative_samples"]
