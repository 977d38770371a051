"""Publishing to the Hub: staging folders (exactly what is uploaded), cards, and the upload itself."""

from __future__ import annotations

from negsynth_hf.publish.cards import ConfigInfo, dataset_card, model_card
from negsynth_hf.publish.hub import UploadResult, hub_token, upload_targets
from negsynth_hf.publish.staging import (
    StagingResult,
    UploadTarget,
    rewrite_adapter_base,
    stage_dataset,
    stage_models,
    triplet_view,
)

__all__ = [
    "ConfigInfo",
    "StagingResult",
    "UploadResult",
    "UploadTarget",
    "dataset_card",
    "hub_token",
    "model_card",
    "rewrite_adapter_base",
    "stage_dataset",
    "stage_models",
    "triplet_view",
    "upload_targets",
]
