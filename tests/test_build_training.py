"""build_dataset's output trains with CausalNegLoss: weight-0 slots are truly masked, the trainer runs."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from test_transform_helpers import ScriptedSpec, corpus, pairs

from negsynth_hf.build import build_dataset
from negsynth_hf.diagnostics import LossComponentsCallback
from negsynth_hf.losses import CausalNegLoss

M, G = 2, 2


@pytest.fixture
def built(tiny_model, tmp_path):
    return build_dataset(
        Dataset.from_dict(pairs(16, fail_rows=(3, 9))),
        corpus=corpus(),
        retriever=tiny_model,
        generator=ScriptedSpec(fail_token="FAIL"),
        strategy="naive",
        num_mined=M,
        num_generated=G,
        show_progress_bar=False,
        cache_dir="",
    )


def _loss_value(loss, model, data: dict[str, list]) -> float:
    model.eval()
    columns = ["anchor", "positive"] + [f"negative_{j}" for j in range(1, M + G + 1)]
    with torch.no_grad():
        out = loss([model.tokenize(data[c]) for c in columns], torch.tensor(data["labels"]))
    return float(out)


def test_zero_weight_slots_do_not_affect_the_loss(built, tiny_model):
    data = built.train.to_dict()
    zero = [(i, j) for i, lab in enumerate(data["labels"]) for j in range(M + G) if lab[j] == 0.0]
    assert len(zero) >= 2 * G  # the two failed rows at least
    loss = CausalNegLoss(tiny_model, entropy_weight=0.5)
    base = _loss_value(loss, tiny_model, data)
    changed = {k: list(v) for k, v in data.items()}
    for i, j in zero:
        changed[f"negative_{j + 1}"][i] = f"an entirely different filler text number {i} {j}"
    assert _loss_value(loss, tiny_model, changed) == pytest.approx(base, abs=1e-5)
    live = next((i, j) for i, lab in enumerate(data["labels"]) for j in range(M) if lab[j] == 1.0)
    changed[f"negative_{live[1] + 1}"][live[0]] = "a new mined negative text that counts"
    assert _loss_value(loss, tiny_model, changed) != pytest.approx(base, abs=1e-5)


def test_trainer_runs_on_build_output(built, tiny_model, tmp_path):
    torch.manual_seed(0)
    loss = CausalNegLoss(tiny_model, entropy_weight=0.5)
    before = [p.detach().clone() for p in tiny_model.parameters()]
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=built.train, loss=loss)
    LossComponentsCallback(loss).attach(trainer)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "infonce" in log]
    assert len(logs) == 3 and all(math.isfinite(log["loss"]) for log in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.parameters(), strict=True))
