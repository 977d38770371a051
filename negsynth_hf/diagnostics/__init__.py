"""Gap diagnostics: what a retriever sees in synthetic vs mined negatives, before and after gap weighting.

- :func:`diagnose` reports on a training dataset (similarity spectrum, source-shortcut strength, false-negative
  risk, hardness), raw and gap-weighted, as JSON, markdown and PNG figures.
- :class:`GapDiagnosticsCallback` logs ``CausalNegLoss``'s per-step diagnostics during training, and
  :class:`LossComponentsCallback` its InfoNCE and entropy components.
"""

from __future__ import annotations

from negsynth_hf.diagnostics.callback import GapDiagnosticsCallback, LossComponentsCallback
from negsynth_hf.diagnostics.mutual_info import MutualInfoEstimate, mutual_information
from negsynth_hf.diagnostics.report import (
    DiagnosticsReport,
    FalseNegativeSection,
    HardnessSection,
    ProbeSummary,
    RiskCounts,
    RiskExample,
    ShortcutSection,
    SpectrumSection,
    diagnose,
)
from negsynth_hf.diagnostics.spectrum import SourceSummary

__all__ = [
    "DiagnosticsReport",
    "FalseNegativeSection",
    "GapDiagnosticsCallback",
    "HardnessSection",
    "LossComponentsCallback",
    "MutualInfoEstimate",
    "ProbeSummary",
    "RiskCounts",
    "RiskExample",
    "ShortcutSection",
    "SourceSummary",
    "SpectrumSection",
    "diagnose",
    "mutual_information",
]
