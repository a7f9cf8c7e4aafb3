"""Batch-size advice from one short run: B_simple from a probe, B_crit = r x B_simple with r
from the committed cross-task study, the PPO iterations, agent steps and wall-clock each
candidate rollout batch would take, and the recommended one (docs/advise.md)."""

from rl.advise.calibration import growth_exponents, growth_note, load_study, ratio_calibration
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
from rl.advise.probe import (
    AdviseConfig,
    NoProbeData,
    advise,
    advise_run,
    load_run_metrics,
    noise_from_metrics,
)

__all__ = ["Advice", "AdviseConfig", "Candidate", "CandidateRow", "CriticalBatchPrediction",
           "NoProbeData", "NoiseScaleEstimate", "RatioCalibration", "Recommendation",
           "advise", "advise_from", "advise_run", "growth_exponents", "growth_note",
           "load_run_metrics", "load_study", "noise_from_metrics", "predict_b_crit",
           "ratio_calibration", "relative_iterations", "relative_samples"]
