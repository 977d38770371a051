"""``LossComponentsCallback`` and ``GapDiagnosticsCallback``: the loss's internals in the trainer's own logs.

``CausalNegLoss`` returns one scalar, as every sentence-transformers loss does, and keeps its two components
(``last_components``: InfoNCE and the weighted entropy term) and its gap diagnostics (``last_diagnostics``).
``LossComponentsCallback`` logs the components' means as ``infonce`` / ``entropy`` (``eval_infonce`` /
``eval_entropy`` for evaluation forwards); ``GapDiagnosticsCallback`` logs the diagnostics as ``gap/<key>``.
Both accept the loss given to the trainer, also a wrapper (MatryoshkaLoss, Matryoshka2dLoss,
AdaptiveLayerLoss) around it: they find the wrapped loss. Inside a wrapper that calls the loss several times
per step (once per dimension or layer), the logged values are means over those calls, unweighted.

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
Both callbacks place their values the same way (see ``attach``); the components are summed on the device and
read back once per log, so logging them costs no synchronisation per step.
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


def find_loss_with(loss: torch.nn.Module, attribute: str, *, caller: str) -> torch.nn.Module:
    """``loss`` if it has ``attribute``, else the first module inside it that has (the base loss of a wrapper
    such as MatryoshkaLoss); a TypeError that says what is needed otherwise."""
    modules = loss.modules() if isinstance(loss, torch.nn.Module) else iter([loss])
    found = next((module for module in modules if hasattr(module, attribute)), None)
    if found is None:
        raise TypeError(
            f"{type(loss).__name__} has no `{attribute}` and wraps no loss that has: {caller} needs a loss that "
            "records it after each forward (negsynth_hf.CausalNegLoss or CachedCausalNegLoss, or a wrapper such "
            "as MatryoshkaLoss around one)."
        )
    return found


class _LossHookCallback(TrainerCallback):
    """What both callbacks share: the loss found (inside a wrapper too) by the attribute it records, a forward
    hook that calls ``record``, and the window's means (``_pop_window``) placed in the trainer's logs."""

    _attribute: str

    def _hook_loss(self, loss: torch.nn.Module) -> None:
        self.loss = find_loss_with(loss, self._attribute, caller=type(self).__name__)
        is_module = isinstance(self.loss, torch.nn.Module)
        self._hook = self.loss.register_forward_hook(self._after_forward) if is_module else None

    def attach(self, trainer: Any) -> _LossHookCallback:
        """Add this callback FIRST in ``trainer``'s callback list, so every reporter sees its values."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        return self

    def record(self, values: Any = None, *, training: bool | None = None) -> None:
        raise NotImplementedError

    def _pop_window(self, training: bool) -> dict[str, float]:
        """The log keys and means of the window since the last log of that kind."""
        raise NotImplementedError

    def _after_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.record()

    def remove_hook(self) -> None:
        """Stop collecting (detach the forward hook from the loss)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not ("loss" in logs or "eval_loss" in logs):
            return
        extra = self._pop_window(training="loss" in logs)
        if not extra:
            return
        logs.update(extra)
        # Trainer.log appended {**logs, "step": global_step} to log_history before calling on_log.
        if state.log_history:
            last = state.log_history[-1]
            if last.get("step") == state.global_step and all(k in last for k in logs if k not in extra):
                last.update(extra)


class LossComponentsCallback(_LossHookCallback):
    """Log the loss's components (mean since the last log) as ``infonce`` and ``entropy`` in training logs and
    ``eval_infonce`` / ``eval_entropy`` in evaluation logs: the keys the trainer used for losses that returned
    them as a dict. With one loss call per step their sum is the logged ``loss``.

    Args:
        loss: the training loss, or a wrapper around it; the loss (found inside a wrapper) needs a
            ``last_components: dict[str, Tensor]`` attribute refreshed by its forward (``CausalNegLoss``,
            ``CachedCausalNegLoss``).

    Non-finite values are left out of the means (the trainer's ``logging_nan_inf_filter`` does the same for the
    loss); a key with no finite value in a window is logged as NaN. In multi-process training each process logs
    its own mean.

    Example::

        loss = MatryoshkaLoss(model, CausalNegLoss(model), [384, 256, 128])
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
        LossComponentsCallback(loss).attach(trainer)
        trainer.train()  # trainer.state.log_history[i]["infonce"], ["entropy"]
    """

    _attribute = "last_components"

    def __init__(self, loss: torch.nn.Module) -> None:
        self._sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._counts: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._hook_loss(loss)

    def record(self, components: dict[str, torch.Tensor] | None = None, *, training: bool | None = None) -> None:
        """Add one forward's components (default: ``loss.last_components``), on the device; the hook calls this."""
        values = self.loss.last_components if components is None else components
        split = "train" if (torch.is_grad_enabled() if training is None else training) else "eval"
        sums, counts = self._sums[split], self._counts[split]
        for key, value in values.items():
            value = torch.as_tensor(value).detach().float()
            finite = torch.isfinite(value)
            value = torch.where(finite, value, torch.zeros_like(value))
            sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts[key] + finite if key in counts else finite.long()

    def pop(self, split: str) -> dict[str, float]:
        """The means of ``split`` ("train" or "eval") since the last pop, read back in one transfer."""
        sums, counts = self._sums[split], self._counts[split]
        if not sums:
            return {}
        keys = list(sums)
        totals = torch.stack([torch.stack([sums[k], counts[k].to(sums[k].dtype)]) for k in keys]).tolist()
        sums.clear()
        counts.clear()
        return {k: total / count if count else math.nan for k, (total, count) in zip(keys, totals, strict=True)}

    def _pop_window(self, training: bool) -> dict[str, float]:
        if training:
            return self.pop("train")
        return {"eval_" + k: v for k, v in self.pop("eval").items()}


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


class GapDiagnosticsCallback(_LossHookCallback):
    """Log the loss's per-step gap diagnostics (mean since the last log) as ``gap/<key>``.

    Args:
        loss: the training loss, or a wrapper around it (MatryoshkaLoss, AdaptiveLayerLoss, ...); the loss
            (found inside a wrapper) needs a ``last_diagnostics: dict[str, float]`` attribute that is refreshed
            by its forward (``CausalNegLoss``, ``CachedCausalNegLoss``). The components are logged by
            :class:`LossComponentsCallback`.
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

    _attribute = "last_diagnostics"

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
        self._hook_loss(loss)

    def record(self, diagnostics: dict[str, Any] | None = None, *, training: bool | None = None) -> None:
        """Add one forward's diagnostics (default: ``loss.last_diagnostics``); the hook calls this."""
        values = self.loss.last_diagnostics if diagnostics is None else diagnostics
        if not values:
            return
        training = torch.is_grad_enabled() if training is None else training
        (self._train if training else self._eval).add(values)

    def _pop_window(self, training: bool) -> dict[str, float]:
        if training:
            return {self.prefix + k: v for k, v in self._train.pop(self.keys).items()}
        return {self.eval_prefix + k: v for k, v in self._eval.pop(self.keys).items()}

    # ------------------------------------------------------------------ TrainerCallback events

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
