"""``negsynth publish``: stage exactly what would be uploaded (dataset, merged model, adapter), then upload it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from negsynth_hf.pipeline.config import ConfigError, RecipeConfig
from negsynth_hf.pipeline.runtime import main_print, process_state
from negsynth_hf.pipeline.sources import source_dataset_ids

PLACEHOLDER_USER = "your-hf-username"


@dataclass(frozen=True)
class RepoNames:
    """Where each artifact goes on the Hub (placeholders under a dry run without names; None: not published)."""

    dataset: str | None
    model: str | None
    adapter: str | None


def repo_names(cfg: RecipeConfig, base_id: str) -> RepoNames:
    p = cfg.publish
    name = (cfg.data.dataset_pretty_name or Path(cfg.data.dataset).name.split("/")[-1]).lower().replace(" ", "-")
    dataset = p.dataset_repo_id or (f"{PLACEHOLDER_USER}/{name}-negsynth" if p.dry_run else None)
    model = p.model_repo_id or (f"{PLACEHOLDER_USER}/{base_id.split('/')[-1]}-{name}-negsynth" if p.dry_run else None)
    return RepoNames(dataset, model, p.adapter_repo_id or (f"{model}-lora" if model else None))


def _base_model_id(cfg: RecipeConfig) -> str:
    p = cfg.publish
    if not p.dry_run and not (p.dataset_repo_id or p.model_repo_id):
        raise ConfigError("publish needs dataset_repo_id and/or model_repo_id (or --dry_run to stage only).")
    base_id = cfg.run.resolved_base_model_id()
    if base_id is None:
        raise ConfigError(
            f"run.base_model={cfg.run.base_model!r} is a local path: set run.base_model_id to its Hub id "
            "(published adapters and cards must not point at a local folder)."
        )
    return base_id


def _stage_dataset(cfg: RecipeConfig, names: RepoNames, base_id: str, staging: Any) -> tuple[str, str] | None:
    """Stage the built dataset; returns the example (anchor, positive) the model card shows."""
    from negsynth_hf.artifacts import BuiltDataset
    from negsynth_hf.publish import UploadTarget, stage_dataset

    if not cfg.dataset_dir.exists():
        staging.notes.append(f"no built dataset at {cfg.dataset_dir}: dataset not staged")
        return None
    built = BuiltDataset.load(cfg.dataset_dir)
    folder = stage_dataset(
        built,
        Path(staging.root) / "dataset",
        repo_id=names.dataset,
        base_model_id=base_id,
        license=cfg.data.dataset_license,
        source_datasets=source_dataset_ids(cfg),
        source_name=cfg.data.dataset_pretty_name or Path(cfg.data.dataset).name,
    )
    staging.targets.append(UploadTarget(str(folder), names.dataset, "dataset"))
    return (built.train[0]["anchor"], built.train[0]["positive"]) if len(built.train) else None


def _stage_models(cfg: RecipeConfig, names: RepoNames, base_id: str, staging: Any, example: Any) -> None:
    from negsynth_hf.evaluation import EvaluationResult
    from negsynth_hf.publish import UploadTarget, stage_models

    if not (cfg.model_dir / "training_summary.json").exists():
        staging.notes.append(f"no trained model at {cfg.model_dir}: models not staged")
        return
    source_name = cfg.data.dataset_pretty_name or Path(cfg.data.dataset).name
    staged = stage_models(
        cfg.model_dir,
        Path(staging.root),
        model_repo_id=names.model,
        adapter_repo_id=names.adapter,
        base_model_id=base_id,
        eval_result=EvaluationResult.load(cfg.eval_dir) if (cfg.eval_dir / "results.json").exists() else None,
        dataset_repo_id=names.dataset,
        dataset_name=source_name,
        source_name=source_name,
        license=cfg.publish.model_license,
        example=example,
        eval_dataset_id=(source_dataset_ids(cfg) or [cfg.data.dataset])[0],
    )
    staging.targets.append(UploadTarget(str(staged["model"]), names.model, "model"))
    if "adapter" in staged and names.adapter:
        staging.targets.append(UploadTarget(str(staged["adapter"]), names.adapter, "model"))


def run_publish(cfg: RecipeConfig) -> Any:
    """Stage everything that exists (dataset, merged model, adapter), then upload unless dry_run."""
    from negsynth_hf.publish import StagingResult, hub_token, upload_targets

    state = process_state()
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    p = cfg.publish
    base_id = _base_model_id(cfg)
    names = repo_names(cfg, base_id)
    cfg.staging_dir.mkdir(parents=True, exist_ok=True)
    staging = StagingResult(root=str(cfg.staging_dir))
    example = _stage_dataset(cfg, names, base_id, staging) if names.dataset else None
    if names.model:
        _stage_models(cfg, names, base_id, staging, example)
    staging.save_plan()
    for t in staging.targets:
        main_print(f"[publish] staged {t.repo_type} {t.repo_id} <- {t.folder}")
    for note in staging.notes:
        main_print(f"[publish] {note}")
    if p.dry_run:
        main_print(f"[publish] dry run: nothing uploaded; inspect {cfg.staging_dir} (exactly what would be uploaded)")
    else:
        if not staging.targets:
            raise ConfigError("nothing to upload: " + "; ".join(staging.notes))
        token = hub_token(p.token_env)
        for r in upload_targets(staging.targets, private=p.private, token=token, commit_message=p.commit_message):
            main_print(f"[publish] uploaded {r.repo_type} {r.repo_id}: {r.url}")
    state.wait_for_everyone()
    return staging
