"""GapDiagnosticsCallback: the loss's diagnostics reach log_history and the reporters, averaged per log window."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from negsynth_hf.diagnostics import GapDiagnosticsCallback, LossComponentsCallback
from negsynth_hf.labels import encode_negative_labels

TOPICS = ["rivers", "volcanoes", "glaciers", "deserts", "forests", "oceans", "islands", "canyons"]


def _dataset(rows: int, offset: int = 0) -> Dataset:
    data: dict[str, list] = {k: [] for k in ("anchor", "positive", "negative_1", "negative_2", "negative_3", "labels")}
    for j in range(rows):
        i = j + offset
        topic, other = TOPICS[i % len(TOPICS)], TOPICS[(i + 3) % len(TOPICS)]
        data["anchor"].append(f"how are {topic} formed question {i}")
        data["positive"].append(f"{topic} are formed by slow natural processes, fact {i}")
        data["negative_1"].append(f"{other} attract many tourists every summer, note {i}")
        data["negative_2"].append(f"{topic} appear in many old songs and poems, line {i}")
        data["negative_3"].append(f"the word {topic} has an unusual spelling, remark {i}")
        data["labels"].append(encode_negative_labels([1.0, 0.7, 0.0 if i == 5 else 0.9], [False, True, True]))
    return Dataset.from_dict(data)


class _Reporter(TrainerCallback):
    """Stands for a report_to integration: records what on_log hands it."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


class _StandInLoss(nn.Module):
    """A stand-in with CausalNegLoss's diagnostics contract (for the unit test without a trainer)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_diagnostics: dict[str, float] = {}
        self.queue: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_diagnostics = self.queue.pop(0)
        return x.sum()


def test_means_between_logs_skip_nan_and_split_train_from_eval():
    loss = _StandInLoss()
    cb = GapDiagnosticsCallback(loss, keys=())
    loss.queue = [
        {"h_gen_norm": 0.2, "sim_q_gen": math.nan},
        {"h_gen_norm": 0.6, "sim_q_gen": 0.5},
        {"h_gen_norm": 9.0},
    ]
    loss(torch.ones(2))
    loss(torch.ones(2))
    with torch.no_grad():  # evaluation forward
        loss(torch.ones(2))
    state = TrainerState()
    state.global_step = 4
    logs = {"loss": 1.0, "learning_rate": 0.1}
    state.log_history.append({**logs, "step": 4})
    cb.on_log(TrainingArguments(output_dir="unused", report_to="none"), state, TrainerControl(), logs=logs)
    assert logs["gap/h_gen_norm"] == pytest.approx(0.4)
    assert logs["gap/sim_q_gen"] == pytest.approx(0.5)
    assert state.log_history[-1]["gap/h_gen_norm"] == pytest.approx(0.4)
    eval_logs = {"eval_loss": 2.0}
    cb.on_log(None, state, TrainerControl(), logs=eval_logs)
    assert eval_logs == {"eval_loss": 2.0, "eval_gap/h_gen_norm": 9.0}
    loss.queue = [{"sim_mined_mined": math.nan}]
    loss(torch.ones(2))
    undefined = {"loss": 1.0}
    cb.on_log(None, state, TrainerControl(), logs=undefined)
    assert math.isnan(undefined["gap/sim_mined_mined"])  # kept, as NaN: never defined in the window
    # the window was emptied
    again = {"loss": 1.0}
    cb.on_log(None, state, TrainerControl(), logs=again)
    assert again == {"loss": 1.0}
    cb.remove_hook()
    with pytest.raises(TypeError, match="last_diagnostics"):
        GapDiagnosticsCallback(nn.Linear(2, 2))
    # default keys: the loss's DIAGNOSTIC_KEYS, NaN where a window never defined them
    from negsynth_hf.losses import DIAGNOSTIC_KEYS

    cb2 = GapDiagnosticsCallback(loss)
    loss.queue = [{"h_gen_norm": 0.3}]
    loss(torch.ones(2))
    logs = {"loss": 1.0}
    cb2.on_log(None, state, TrainerControl(), logs=logs)
    assert set(logs) == {"loss", *(f"gap/{k}" for k in DIAGNOSTIC_KEYS)}
    assert logs["gap/h_gen_norm"] == 0.3 and math.isnan(logs["gap/gen_mass"])


class _StandInComponents(nn.Module):
    """A stand-in with CausalNegLoss's components contract: detached 0-dim tensors after each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.last_components: dict[str, torch.Tensor] = {}
        self.queue: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_components = {k: torch.tensor(v) for k, v in self.queue.pop(0).items()}
        return x.sum()


def test_components_means_skip_non_finite_split_train_from_eval_and_find_a_wrapped_loss():
    inner = _StandInComponents()
    wrapper = nn.Sequential(nn.Linear(2, 2), inner)  # any module that holds the loss
    cb = LossComponentsCallback(wrapper)
    assert cb.loss is inner
    inner.queue = [
        {"infonce": 2.0, "entropy": math.inf},
        {"infonce": 4.0, "entropy": -0.5},
        {"infonce": 9.0, "entropy": 0.25},
        {"infonce": math.nan, "entropy": 0.0},
    ]
    inner(torch.ones(2))
    inner(torch.ones(2))
    with torch.no_grad():  # evaluation forwards
        inner(torch.ones(2))
        inner(torch.ones(2))
    state = TrainerState()
    state.global_step = 3
    logs = {"loss": 1.0}
    state.log_history.append({**logs, "step": 3})
    cb.on_log(None, state, TrainerControl(), logs=logs)
    assert logs == {"loss": 1.0, "infonce": 3.0, "entropy": -0.5}
    assert state.log_history[-1] == {**logs, "step": 3}
    eval_logs = {"eval_loss": 2.0}
    cb.on_log(None, state, TrainerControl(), logs=eval_logs)
    assert eval_logs == {"eval_loss": 2.0, "eval_infonce": 9.0, "eval_entropy": 0.125}
    empty = {"loss": 1.0}
    cb.on_log(None, state, TrainerControl(), logs=empty)
    assert empty == {"loss": 1.0}  # the window was emptied
    cb.remove_hook()
    with pytest.raises(TypeError, match="Linear has no `last_components` and wraps no loss that has"):
        LossComponentsCallback(nn.Linear(2, 2))


def test_training_logs_the_loss_diagnostics(tiny_model, tmp_path):
    from negsynth_hf.losses import DIAGNOSTIC_KEYS, CausalNegLoss

    torch.manual_seed(0)
    loss = CausalNegLoss(tiny_model, entropy_weight=0.5)
    seen_forwards: list[dict[str, float]] = []
    loss.register_forward_hook(
        lambda m, a, o: seen_forwards.append(dict(m.last_diagnostics)) if torch.is_grad_enabled() else None
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        per_device_eval_batch_size=8,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    reporter = _Reporter()
    eval_ds = _dataset(8, offset=100)
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=args, train_dataset=_dataset(16), eval_dataset=eval_ds, loss=loss, callbacks=[reporter]
    )
    cb = GapDiagnosticsCallback(loss, output_dir=tmp_path / "gap", eval_dataset=eval_ds).attach(trainer)
    assert trainer.callback_handler.callbacks[0] is cb
    trainer.train()

    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(train_logs) == 2
    for log in train_logs:
        for key in DIAGNOSTIC_KEYS:
            assert f"gap/{key}" in log, (key, log)
    # 2 logging steps x 2 accumulation micro-batches per logging window
    assert len(seen_forwards) == 8
    first = sum(d["h_gen_norm"] for d in seen_forwards[:4]) / 4
    assert train_logs[0]["gap/h_gen_norm"] == pytest.approx(first)
    assert 0.0 <= train_logs[0]["gap/h_gen_norm"] <= 1.0
    assert math.isnan(train_logs[0]["gap/sim_mined_mined"])  # one mined negative per row: undefined
    assert math.isfinite(train_logs[0]["gap/sim_gen_mined"])
    # the reporter ran after the callback and saw the same values
    reported = [log for log in reporter.seen if "loss" in log]
    assert [log["gap/gen_mass"] for log in reported] == [log["gap/gen_mass"] for log in train_logs]
    eval_logs = [log for log in trainer.state.log_history if "eval_loss" in log]
    assert eval_logs and "eval_gap/h_gen_norm" in eval_logs[0]
    # spectrum report of the eval set at the evaluation step
    assert cb.reports == [tmp_path / "gap" / "step-4"]
    report = json.loads((tmp_path / "gap" / "step-4" / "report.json").read_text())
    assert report["rows_used"] == 8 and report["counts"]["generated"]["non_empty"] == 16
    assert (tmp_path / "gap" / "step-4" / "spectrum.png").is_file()
