"""CachedCausalNegLoss: CausalNegLoss with GradCache, for large batches at the memory of one mini-batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import (
    CachedLossMixin,
    _validate_mini_batch_num_tokens,
    has_static_embedding_input,
)
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from sentence_transformers.util import cos_sim, similarity_fct_name
from torch import Tensor, nn

from negsynth_hf.losses.causal_neg import CausalNegLoss
from negsynth_hf.losses.directions import Direction, HardnessMode, PartitionMode


class CachedCausalNegLoss(CachedLossMixin, nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        gather_across_devices: bool = False,
        directions: tuple[Direction, ...] = ("query_to_doc",),
        partition_mode: PartitionMode = "joint",
        show_progress_bar: bool = False,
        hardness_mode: HardnessMode | None = None,
        hardness_strength: float = 0.0,
        **causal_neg_kwargs: Any,
    ) -> None:
        """
        :class:`CausalNegLoss` computed with GradCache (Gao et al. 2021): embeddings are computed in mini-batches
        without a graph, the loss and its gradients w.r.t. the embeddings are computed on the whole batch, and the
        mini-batches are re-embedded one at a time to push those cached gradients into the model. Same loss and
        gradients as :class:`CausalNegLoss`, with activation memory bounded by ``mini_batch_size``: in-batch
        negatives (and the entropy statistics) get the large batch they benefit from.

        The math is not copied: the wrapped :class:`CausalNegLoss` (``self.loss``) computes the loss from the
        cached embeddings. Its hyper-parameters are readable and assignable on this object. The constructor takes
        :class:`~sentence_transformers.sentence_transformer.losses.CachedMultipleNegativesRankingLoss`'s arguments
        in its order (a drop-in for it), then :class:`CausalNegLoss`'s own ones by keyword.

        Args:
            model: SentenceTransformer model.
            scale: Inverse temperature of the InfoNCE softmax, see :class:`CausalNegLoss`.
            similarity_fct: Similarity for InfoNCE, see :class:`CausalNegLoss`.
            mini_batch_size: Rows embedded per forward pass; bounds the activation memory, not the loss.
            mini_batch_num_tokens: If set, embedding mini-batches are packed by total (non-padding) token count
                instead of by ``mini_batch_size`` rows, as in CachedMultipleNegativesRankingLoss (faster on
                variable-length data with models that skip padded compute). Must be positive or None.
            gather_across_devices: Gather embeddings across devices, see :class:`CausalNegLoss`.
            directions: MNRL's interaction terms, see :class:`CausalNegLoss`.
            partition_mode: ``"joint"`` or ``"per_direction"`` softmax, see :class:`CausalNegLoss`.
            show_progress_bar: Show a progress bar over the mini-batches.
            hardness_mode: MNRL's hardness weighting, see :class:`CausalNegLoss`.
            hardness_strength: ``alpha`` of the hardness weighting, see :class:`CausalNegLoss`.
            **causal_neg_kwargs: Keyword-only arguments of :class:`CausalNegLoss` (``in_batch_negatives``,
                ``num_generated``, ``use_weights``, ``entropy_weight``, ``entropy_temperature``).

        References:
            - When Hard Negatives Hurt (KDD 2026), https://arxiv.org/abs/2606.01304
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup, https://arxiv.org/abs/2101.06983

        Inputs:
            +-------------------------------------------------+----------------------------------------+
            | Inputs                                          | Labels                                 |
            +=================================================+========================================+
            | (anchor, positive) pairs                        | none                                   |
            +-------------------------------------------------+----------------------------------------+
            | (anchor, positive, negative_1, ..., negative_n) | none, or ``[w_1..w_n, g_1..g_n]``      |
            +-------------------------------------------------+----------------------------------------+

        Labels:
            As :class:`CausalNegLoss`: a ``(batch, 2n)`` label tensor is read as ``[w_1..w_n, g_1..g_n]``, any
            other is ignored with a one-time warning, as CachedMultipleNegativesRankingLoss ignores labels.

        Wrappers:
            Like CachedMultipleNegativesRankingLoss, it works inside
            :class:`~sentence_transformers.sentence_transformer.losses.MatryoshkaLoss` (which recognises a
            GradCache loss by ``uses_gradient_cache`` and decorates its ``calculate_loss`` to shrink the cached
            embeddings, one call per dimension, with the labels passed on); AdaptiveLayerLoss and
            Matryoshka2dLoss do not support GradCache losses.

        Logging:
            Returns the scalar loss, as every sentence-transformers loss does. ``last_components`` holds the mean
            of the InfoNCE and entropy components over the loss computations of the last forward (one, or one per
            Matryoshka dimension), which :class:`negsynth_hf.diagnostics.LossComponentsCallback` logs.

        Example:
            ::

                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

                from negsynth_hf.losses import CachedCausalNegLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                loss = CachedCausalNegLoss(model, mini_batch_size=32, in_batch_negatives=False)
                # train_dataset: (anchor, positive, negative_1..n) + labels, as in CausalNegLoss
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        if has_static_embedding_input(model):
            raise ValueError(
                "CachedCausalNegLoss cannot split a StaticEmbedding model's inputs into mini-batches; "
                "use CausalNegLoss instead."
            )
        if isinstance(mini_batch_size, bool) or not (isinstance(mini_batch_size, int) and mini_batch_size > 0):
            raise ValueError(f"mini_batch_size must be a positive int, got {mini_batch_size!r}.")
        _validate_mini_batch_num_tokens(mini_batch_num_tokens)
        self.model = model
        self.loss = CausalNegLoss(
            model,
            scale=scale,
            similarity_fct=similarity_fct,
            gather_across_devices=gather_across_devices,
            directions=directions,
            partition_mode=partition_mode,
            hardness_mode=hardness_mode,
            hardness_strength=hardness_strength,
            **causal_neg_kwargs,
        )
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar
        self._component_sums: dict[str, Tensor] = {}
        self._component_calls = 0

    _delegated_to_wrapped_loss = (
        "scale",
        "similarity_fct",
        "gather_across_devices",
        "directions",
        "partition_mode",
        "hardness_mode",
        "hardness_strength",
        "in_batch_negatives",
        "num_generated",
        "use_weights",
        "entropy_weight",
        "entropy_temperature",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        """Assignments of the wrapped loss's hyper-parameters go to the wrapped loss (as in CachedMNRL)."""
        if name in self._delegated_to_wrapped_loss and isinstance(getattr(self, "loss", None), nn.Module):
            setattr(self.loss, name, value)
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._delegated_to_wrapped_loss:
            return getattr(self._modules["loss"], name)
        return super().__getattr__(name)

    @property
    def last_components(self) -> dict[str, Tensor]:
        """Mean components of the loss computations since the last forward began (detached 0-dim tensors)."""
        return {name: total / max(self._component_calls, 1) for name, total in self._component_sums.items()}

    @property
    def last_diagnostics(self) -> dict[str, float]:
        """The wrapped loss's diagnostics of the last step (see :data:`negsynth_hf.losses.DIAGNOSTIC_KEYS`)."""
        return self.loss.last_diagnostics

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """The wrapped loss on the concatenated mini-batch embeddings; back-propagated to them if asked."""
        total = self.loss.compute_loss_from_embeddings([torch.cat(column) for column in reps], labels)
        for name, value in self.loss.last_components.items():
            self._component_sums[name] = self._component_sums[name] + value if name in self._component_sums else value
        self._component_calls += 1
        if with_backward:
            total.backward()
            total = total.detach()
        return total

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) < 2:
            raise ValueError(f"Expected at least 2 inputs (anchor, positive), got {len(sentence_features)}.")
        self._component_sums, self._component_calls = {}, 0
        return self.forward_cached(sentence_features, labels)

    def get_config_dict(self) -> dict[str, Any]:
        config = self.loss.get_config_dict()
        config["similarity_fct"] = similarity_fct_name(self.loss.similarity_fct)
        config["mini_batch_size"] = self.mini_batch_size
        config["mini_batch_num_tokens"] = self.mini_batch_num_tokens
        return config

    @property
    def temperature(self) -> float:
        return self.loss.temperature

    @property
    def citation(self) -> str:
        return (
            self.loss.citation
            + """
@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""
        )
