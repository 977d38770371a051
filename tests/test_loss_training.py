"""A real SentenceTransformerTrainer run with CausalNegLoss: both components logged (LossComponentsCallback), loss
goes down."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from negsynth_hf.diagnostics import LossComponentsCallback
from negsynth_hf.labels import encode_negative_labels
from negsynth_hf.losses import DIAGNOSTIC_KEYS, CachedCausalNegLoss, CausalNegLoss

TOPICS = ["rivers", "volcanoes", "glaciers", "deserts", "forests", "oceans", "islands", "canyons"]


def _dataset(rows: int = 16) -> Dataset:
    data: dict[str, list] = {"anchor": [], "positive": [], "negative_1": [], "negative_2": [], "negative_3": []}
    data["labels"] = []
    for i in range(rows):
        topic, other = TOPICS[i % len(TOPICS)], TOPICS[(i + 3) % len(TOPICS)]
        data["anchor"].append(f"how are {topic} formed question {i}")
        data["positive"].append(f"{topic} are formed by slow natural processes, fact {i}")
        data["negative_1"].append(f"{other} attract many tourists every summer, note {i}")  # mined
        data["negative_2"].append(f"{topic} appear in many old songs and poems, line {i}")  # generated
        data["negative_3"].append(f"the word {topic} has an unusual spelling, remark {i}")  # generated
        # row 5: the second generated negative is a false negative (weight 0); others get a mid weight
        weights = [1.0, 0.7, 0.0 if i == 5 else 0.9]
        data["labels"].append(encode_negative_labels(weights, [False, True, True]))
    return Dataset.from_dict(data)


def _mean_loss(loss, model, dataset: Dataset) -> float:
    model.eval()
    texts = [dataset[column] for column in ("anchor", "positive", "negative_1", "negative_2", "negative_3")]
    with torch.no_grad():
        out = loss([model.tokenize(column) for column in texts], torch.tensor(dataset["labels"]))
    return float(out)


@pytest.mark.parametrize("cached", [False, True])
def test_trainer_logs_both_components_and_lowers_loss(tiny_model, tmp_path, cached):
    torch.manual_seed(0)
    dataset = _dataset()
    if cached:
        loss = CachedCausalNegLoss(tiny_model, mini_batch_size=4, entropy_weight=0.5)
    else:
        loss = CausalNegLoss(tiny_model, entropy_weight=0.5)
    before = _mean_loss(loss, tiny_model, dataset)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=4,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=dataset, loss=loss)
    LossComponentsCallback(loss).attach(trainer)
    trainer.train()
    step_logs = [log for log in trainer.state.log_history if "loss" in log and "infonce" in log]
    assert len(step_logs) == 8
    for log in step_logs:
        assert log["loss"] == pytest.approx(log["infonce"] + log["entropy"], abs=2e-3)
    assert any(log["entropy"] != 0.0 for log in step_logs)
    # one mined negative per row: no mined-mined pair, so that statistic is (correctly) not available
    assert set(loss.last_diagnostics) == set(DIAGNOSTIC_KEYS) - {"sim_mined_mined"}
    after = _mean_loss(loss, tiny_model, dataset)
    assert after < before - 0.05, (before, after)
