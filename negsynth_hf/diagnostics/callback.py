"""``GapDiagnosticsCallback``: the loss's gap diagnostics in the trainer's own logs.

``CausalNegLoss`` stores ``last_diagnostics`` (a dict of floats) after every forward. This callback averages
them between logging steps and adds them to the training logs as ``gap/<key>`` (and eval forwards as
``eval_gap/<key>`` to the evaluation logs), so trainer.state.log_history, the console and every
``report_to`` integration see them next to the loss.

How the values reach the logs (transformers 5.x): ``Trainer.log(logs)`` appends ``{**logs, "step": ...}``
to ``state.log_history`` and THEN calls ``callback_handler.on_log(..., logs)``, which hands the same
``logs`` dict to each callback in list order. ``on_log`` here therefore (1) adds the means to ``logs`` in
place, so every callback AFTER this one sees them, and (2) adds them to the ``log_history`` entry appended
for this call. The Trainer orders its callbacks ``[DefaultFlowCallback, <report_to integrations>, <callbacks=
given to the constructor>, ProgressCallback/PrinterCallback, <add_callback() later>]``, so use
:meth:`GapDiagnosticsCallback.attach`, which moves this callback to the front: then every integration, the
console and log_history get the values. Passed in ``callbacks=[...]`` it reaches log_history and the
console but not the ``report_to`` integrations; added later with ``add_callback`` only log_history.

Values are collected with a forward hook on the loss, so every micro-batch of gradient accumulation
counts, not only the last one; forwards under ``torch.no_grad`` (evaluation) go to the eval accumulator.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

TRAIN_PREFIX = "gap/"
EVAL_PREFIX = "eval_gap/"


class _Mean:
    """Running means per key; NaN values (e.g. ``sim_q_gen`` in a batch without generated negatives) skipped.

    A key whose values were all NaN in the window is reported as NaN (undefined, e.g. ``sim_mined_mined``
    with one mined negative per row), so the set of logged keys stays stable.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            try:
                x = float(value)
            except (TypeError, ValueError):
                continue
            self.sums[key] += x if math.isfinite(x) else 0.0
            self.counts[key] += int(math.isfinite(x))

    def pop(self, expected: tuple[str, ...] = ()) -> dict[str, float]:
        if not self.sums:
            return {}
        out = {k: math.nan for k in expected}
        out.update({k: self.sums[k] / self.counts[k] if self.counts[k] else math.nan for k in self.sums})
        self.sums.clear()
        self.counts.clear()
        return out


class GapDiagnosticsCallback(TrainerCallback):
    """Log the loss's per-step gap diagnostics (mean since the last log) as ``gap/<key>``.

    Args:
        loss: the training loss; anything with a ``last_diagnostics: dict[str, float]`` attribute that is
            refreshed by its forward (``CausalNegLoss``, ``CachedCausalNegLoss``).
        spectrum_every_eval: at each evaluation, run :func:`negsynth_hf.diagnose` on ``eval_dataset`` with
            the current model and write its report and figures (needs ``eval_dataset``).
        output_dir: where those go (``<output_dir>/step-<global_step>``); default
            ``<args.output_dir>/gap_diagnostics``.
        eval_dataset: an n-tuple dataset for the spectrum (see :func:`negsynth_hf.diagnose`).
        max_rows: rows of ``eval_dataset`` used per spectrum.
        keys: diagnostics always logged (NaN when undefined in a window, e.g. ``sim_mined_mined`` with one
            mined negative per row; the loss omits such keys); default ``negsynth_hf.losses.DIAGNOSTIC_KEYS``.

    Example::

        loss = CausalNegLoss(model)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
        GapDiagnosticsCallback(loss).attach(trainer)
        trainer.train()  # trainer.state.log_history[i]["gap/h_gen_norm"], ...
    """

    def __init__(
        self,
        loss: torch.nn.Module,
        *,
        spectrum_every_eval: bool = True,
        output_dir: str | Path | None = None,
        eval_dataset: Any = None,
        max_rows: int = 256,
        prefix: str = TRAIN_PREFIX,
        eval_prefix: str = EVAL_PREFIX,
        keys: Sequence[str] | None = None,
    ) -> None:
        if not hasattr(loss, "last_diagnostics"):
            raise TypeError(
                f"{type(loss).__name__} has no `last_diagnostics`; GapDiagnosticsCallback needs a loss that records "
                "them after each forward (negsynth_hf.CausalNegLoss or CachedCausalNegLoss)."
            )
        self.loss = loss
        self.spectrum_every_eval = spectrum_every_eval
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.eval_dataset = eval_dataset
        self.max_rows = max_rows
        self.prefix = prefix
        self.eval_prefix = eval_prefix
        if keys is None:
            from negsynth_hf.losses import DIAGNOSTIC_KEYS

            keys = DIAGNOSTIC_KEYS
        self.keys = tuple(keys)
        self._train = _Mean()
        self._eval = _Mean()
        self.reports: list[Path] = []
        self._hook = loss.register_forward_hook(self._after_forward) if isinstance(loss, torch.nn.Module) else None

    def attach(self, trainer: Any) -> GapDiagnosticsCallback:
        """Add this callback FIRST in ``trainer``'s callback list, so every reporter sees its values."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        return self

    def record(self, diagnostics: dict[str, Any] | None = None, *, training: bool | None = None) -> None:
        """Add one forward's diagnostics (default: ``loss.last_diagnostics``); the hook calls this."""
        values = self.loss.last_diagnostics if diagnostics is None else diagnostics
        if not values:
            return
        training = torch.is_grad_enabled() if training is None else training
        (self._train if training else self._eval).add(values)

    def _after_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.record()

    def remove_hook(self) -> None:
        """Stop collecting (detach the forward hook from the loss)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # ------------------------------------------------------------------ TrainerCallback events

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        if "loss" in logs:
            extra = {self.prefix + k: v for k, v in self._train.pop(self.keys).items()}
        elif "eval_loss" in logs:
            extra = {self.eval_prefix + k: v for k, v in self._eval.pop(self.keys).items()}
        else:
            return
        if not extra:
            return
        logs.update(extra)
        # Trainer.log appended {**logs, "step": global_step} to log_history before calling on_log.
        if state.log_history:
            last = state.log_history[-1]
            if last.get("step") == state.global_step and all(k in last for k in logs if k not in extra):
                last.update(extra)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not (self.spectrum_every_eval and self.eval_dataset is not None and model is not None):
            return
        from negsynth_hf.diagnostics.report import diagnose

        root = self.output_dir or Path(args.output_dir) / "gap_diagnostics"
        folder = root / f"step-{state.global_step}"
        was_training = model.training
        try:
            diagnose(self.eval_dataset, model, output_dir=folder, max_rows=self.max_rows, n_shuffles=10, seed=args.seed)
        finally:
            model.train(was_training)
        self.reports.append(folder)
