"""CausalNegLoss: InfoNCE with gap-correction weights plus the query-view entropy term."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from sentence_transformers.util import (
    all_gather,
    all_gather_with_grad,
    cos_sim,
    dot_score,
    get_rank,
    similarity_fct_name,
)
from torch import Tensor, nn

from negsynth_hf.labels import decode_negative_labels, has_negative_label_layout
from negsynth_hf.losses.cosine import CosineScores
from negsynth_hf.losses.directions import (
    Direction,
    HardnessMode,
    PartitionMode,
    contrastive_loss,
    extra_direction_scores,
    hardness_bias,
    validate_mnrl_arguments,
)
from negsynth_hf.losses.entropy import EntropyTerms, entropy_terms, rowwise_dot

UseWeights = Literal["weights", "mask", "none"]
USE_WEIGHTS_MODES: tuple[str, ...] = ("weights", "mask", "none")
COMPONENT_KEYS: tuple[str, ...] = ("infonce", "entropy")

DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "h_gen_norm",
    "gen_mass",
    "gen_mass_expected",
    "sim_q_pos",
    "sim_q_mined",
    "sim_q_gen",
    "sim_gen_mined",
    "sim_gen_gen",
    "sim_mined_mined",
    "masked_fraction",
)


@dataclass
class _Similarities:
    """Similarity work done once per step and shared by InfoNCE, the entropy term and the diagnostics."""

    sims: Tensor  # (B, C) unscaled similarity_fct scores, in the graph (C = B_world * (1 + N), or 1 + N)
    targets: Tensor  # (B,) column of each row's own positive
    query: Tensor  # (B, D) L2-normalised local queries (in the graph only on the generic path)
    negatives: Tensor | None  # (N, B, D) L2-normalised own negatives (column-major), detached; None without any
    own: Tensor  # (B, 1 + N) detached cosine of each query to its own positive and negatives
    entropy_scores: Tensor | None = None  # (B, N) own-negative cosines, gradient to generated docs only (fast path)
    own_columns: Tensor | None = None  # (B, 1 + N) column of each row's own positive and negatives in `sims`
    extra: dict[str, Tensor] = field(default_factory=dict)  # unscaled, masked blocks of the other directions


def _use_weights_mode(use_weights: UseWeights) -> UseWeights:
    """``use_weights`` checked against the named modes (a bool is not one of them)."""
    if isinstance(use_weights, bool) or use_weights not in USE_WEIGHTS_MODES:
        raise ValueError(
            f'use_weights must be one of the named modes "weights", "mask" or "none", got {use_weights!r}.'
        )
    return use_weights


def _validate_own_arguments(
    in_batch_negatives: bool, directions: tuple[str, ...], hardness_mode: str | None, num_generated: int | None
) -> None:
    """Checks of this loss's own arguments and of how they combine with MNRL's."""
    if num_generated is not None and (isinstance(num_generated, bool) or int(num_generated) != num_generated):
        raise ValueError(f"num_generated must be a non-negative int or None, got {num_generated!r}.")
    if num_generated is not None and num_generated < 0:
        raise ValueError(f"num_generated must be a non-negative int or None, got {num_generated}.")
    if in_batch_negatives:
        return
    across_rows = sorted(set(directions) - {"query_to_doc"})
    if across_rows:
        raise ValueError(
            f"directions {across_rows} compare across the rows of the batch, but in_batch_negatives=False gives "
            "each query only its own documents: set in_batch_negatives=True, or directions=('query_to_doc',)."
        )
    if hardness_mode == "in_batch_negatives":
        raise ValueError(
            "hardness_mode='in_batch_negatives' weights other rows' documents, which in_batch_negatives=False "
            "leaves out: set in_batch_negatives=True, or hardness_mode='hard_negatives' (each row's own negatives)."
        )


class CausalNegLoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        directions: tuple[Direction, ...] = ("query_to_doc",),
        partition_mode: PartitionMode = "joint",
        hardness_mode: HardnessMode | None = None,
        hardness_strength: float = 0.0,
        *,
        in_batch_negatives: bool = True,
        num_generated: int | None = None,
        use_weights: UseWeights = "weights",
        entropy_weight: float = 0.05,
        entropy_temperature: float = 0.1,
    ) -> None:
        """
        InfoNCE over the positive and all (hard) negatives, where each negative's logit is shifted by the log of
        its gap-correction weight, plus ``entropy_weight`` times the query-view entropy term over each query's own
        generated negatives. With all weights 1 and ``entropy_weight=0`` it is exactly
        :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`, for every
        combination of MNRL's own arguments (which it takes in the same positions, with the same defaults).

        The weights correct the generative-discriminative gap statically (a false negative or a negative that is
        trivially recognisable as synthetic counts less, or not at all); the entropy term corrects it dynamically
        (from the query's view, the generated group must hold its fair share of softmax mass and spread it).

        Args:
            model: SentenceTransformer model.
            scale: Inverse temperature of the InfoNCE softmax: ``scale = 1 / temperature``, ``20.0`` is
                ``temperature=0.05`` (the paper's setting).
            similarity_fct: Similarity for InfoNCE, ``cos_sim`` by default. The entropy term always uses cosine
                similarity on L2-normalised embeddings, whatever this is, because ``entropy_temperature`` is
                calibrated for similarities in ``[-1, 1]``.
            gather_across_devices: Gather embeddings (and weights) across devices before computing InfoNCE, as
                MultipleNegativesRankingLoss does. Only meaningful with ``in_batch_negatives=True``.
            directions: MNRL's interaction terms: ``"query_to_doc"`` (required: it holds the positive pair),
                ``"query_to_query"`` (each query against the other queries), ``"doc_to_query"`` (each positive
                against all queries: the symmetric loss), ``"doc_to_doc"`` (each positive against the documents
                of the other rows). ``("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")`` with
                ``partition_mode="joint"`` is GTE's improved contrastive loss. Every direction but
                ``"query_to_doc"`` compares across rows, so needs ``in_batch_negatives=True``.
            partition_mode: ``"joint"``: one softmax over all directions' logits; ``"per_direction"``: one softmax
                per direction, the losses averaged (not with ``"query_to_query"`` or ``"doc_to_doc"``).
            hardness_mode: MNRL's hardness weighting, ``hardness_strength * stop_grad(sim)`` added to negative
                logits of query_to_doc: ``"in_batch_negatives"`` (other rows' documents, Lan et al. 2025; needs
                ``in_batch_negatives=True``), ``"hard_negatives"`` (each row's own explicit negatives, as in
                EmbeddingGemma), ``"all_negatives"`` (both). ``None`` (default) switches it off.
            hardness_strength: ``alpha`` of the hardness weighting (Lan et al. use 9, EmbeddingGemma 5); >= 0,
                ignored when ``hardness_mode`` is None.
            in_batch_negatives: If True (default, as in MNRL), every other row's positive and explicit negatives
                are candidates too; another row's negative keeps that row's weight for every anchor, so a masked
                negative is masked everywhere. If False (the paper setting), each query sees only its own positive
                and negatives.
            num_generated: Without a label column, treat the trailing ``num_generated`` negative columns as
                generated (for the entropy term). Ignored when a label column is given, whose flags win.
            use_weights: How the label column's weights enter InfoNCE (the generated flags are always used):
                ``"weights"`` (default) as given; ``"mask"`` as a 0/1 mask, so filled/masked slots (weight 0) stay
                out and every other negative counts once (plain InfoNCE over the real negatives: the ablation "no
                gap weights"); ``"none"`` ignores them entirely (weight 1 everywhere, fillers included: what a
                loss that reads no labels does).
            entropy_weight: ``lambda`` of the entropy term; 0 switches it off (ablation "no entropy term").
            entropy_temperature: ``tau_ent`` of the entropy softmax.

        References:
            - When Hard Negatives Hurt: Bridging the Generative-Discriminative Gap in Hard Negative Synthesis for
              Retrieval (KDD 2026), https://arxiv.org/abs/2606.01304
            - Hardness weighting: Lan et al. 2025, https://arxiv.org/abs/2503.04812 (Eq. 5); EmbeddingGemma,
              https://arxiv.org/abs/2509.20354
            - Directions: GTE, https://arxiv.org/abs/2308.03281; symmetric InfoNCE, https://arxiv.org/abs/2310.19923

        Requirements:
            1. (anchor, positive, negative_1, ..., negative_n) n-tuples; every row the same ``n``.
            2. Optionally a ``labels`` column built with :func:`negsynth_hf.labels.encode_negative_labels`:
               ``[w_1..w_n, g_1..g_n]`` (weights in ``[0, 1]``, generated flags 0 or 1).

        Labels:
            The trainer hands the loss the dataset's ``label``/``labels``/``score``/``scores`` column. A label
            tensor *claims the weight layout* when it is 2-D with exactly ``2n`` columns, ``n`` being the number of
            negative columns of the batch (``(batch, 0)`` for pairs); only the shape decides. Such a tensor is read
            as ``[w_1..w_n, g_1..g_n]``, and one that is malformed (a row count other than the batch's, a weight
            outside ``[0, 1]`` or NaN, a flag other than 0 or 1) raises a ValueError. Any other label tensor (an
            STS-style float ``score`` of shape ``(batch,)``, a list column of another length) is not the loss's:
            it is ignored, as MultipleNegativesRankingLoss ignores labels, with a one-time warning naming its
            shape, and the loss runs as without labels (``num_generated`` then marks the generated columns).

        Inputs:
            +-------------------------------------------------+----------------------------------------+
            | Inputs                                          | Labels                                 |
            +=================================================+========================================+
            | (anchor, positive) pairs                        | none                                   |
            +-------------------------------------------------+----------------------------------------+
            | (anchor, positive, negative_1, ..., negative_n) | none, or ``[w_1..w_n, g_1..g_n]``      |
            +-------------------------------------------------+----------------------------------------+

        Design notes:
            - Weights enter InfoNCE as ``+ log w`` on the negative's logit (``w = 0`` -> ``-inf``). The entropy
              term uses them only as a mask (``w = 0`` excluded, anything else included unweighted): the entropy
              term asks whether similarity reveals the source, and re-weighting its softmax would let the static
              weights hide exactly the shortcut it is meant to measure and remove.
            - With hardness weighting a negative's logit is ``scale * sim + alpha * stop_grad(sim) + log w``: both
              are importance factors on the negative's softmax term (``w * exp(alpha * sim)``), they commute, and
              ``w = 0`` masks the negative whatever its hardness. The positive carries neither.
            - A weight belongs to its document, not to a (query, document) pair: it is one column bias wherever
              the document is a candidate, in query_to_doc for every anchor and in doc_to_doc for every other
              row's positive, so a masked negative is masked in every direction. The columns of query_to_query
              and doc_to_query are queries, which carry no weight; the hardness term stays on query_to_doc, as
              in MNRL.
            - The entropy term is each query's view of its own generated negatives, whatever ``directions``,
              ``partition_mode`` and the hardness weighting: it measures and regularises the source shortcut of
              the query's similarity, which none of them changes.
            - With ``cos_sim`` and in-batch negatives (the defaults), the query_to_doc similarity work is one
              autograd node (:class:`negsynth_hf.losses.cosine.CosineScores`: ``cos_sim``'s values bitwise, a
              closed-form backward), and the entropy term reads its scores off the same matrix; forward +
              backward then costs less than MNRL's on the same embeddings (``benchmarks/bench_loss.py``), also
              with hardness weighting. The other directions' blocks are computed as MNRL computes them, other
              similarities and ``in_batch_negatives=False`` take a plain autograd path with the same results.
            - The default path reads nothing back from the device except for validating the label column.
            - Returns the scalar ``L_InfoNCE + entropy_weight * L_ent``, as every sentence-transformers loss does,
              so it works inside MatryoshkaLoss, Matryoshka2dLoss and AdaptiveLayerLoss (which pass the labels on,
              so the weights and the entropy term apply at every dimension and layer). The two components of the
              last call are in ``self.last_components`` (detached), which
              :class:`~negsynth_hf.diagnostics.LossComponentsCallback` logs as ``infonce`` and ``entropy``. For
              differentiable components call :meth:`compute_loss_components`.
            - After each forward, ``self.last_diagnostics`` gives that step's statistics as floats (keys in
              ``DIAGNOSTIC_KEYS``; a key is absent when its statistic is undefined, e.g. no mined-mined pair). They
              are computed on first read from detached tensors kept from the step, so steps whose diagnostics
              nobody reads (a callback logging every k steps) pay nothing for them.

        Relations:
            - :class:`negsynth_hf.losses.CachedCausalNegLoss` computes the same loss with GradCache, for large
              batches at constant memory.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from sentence_transformers.base.sampler import BatchSamplers
                from sentence_transformers.sentence_transformer.training_args import (
                    SentenceTransformerTrainingArguments,
                )

                from negsynth_hf.labels import encode_negative_labels
                from negsynth_hf.losses import CausalNegLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["what is the capital of france?", "who wrote hamlet?"],
                    "positive": ["Paris is the capital of France.", "Hamlet was written by Shakespeare."],
                    "negative_1": ["Lyon is a city in France.", "Macbeth is a play by Shakespeare."],
                    "negative_2": ["The capital of France is Marseille.", "Hamlet was written by Marlowe."],
                    # negative_1 mined, negative_2 generated; the second generated one gets a lower weight
                    "labels": [encode_negative_labels([1.0, 1.0], [False, True]),
                               encode_negative_labels([1.0, 0.4], [False, True])],
                })
                loss = CausalNegLoss(model, in_batch_negatives=False)
                # or, with EmbeddingGemma's hardness weighting on top of the gap weights:
                # loss = CausalNegLoss(model, hardness_mode="hard_negatives", hardness_strength=5.0)
                args = SentenceTransformerTrainingArguments(
                    output_dir="out", batch_sampler=BatchSamplers.NO_DUPLICATES
                )
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        self.model = model
        validate_mnrl_arguments(scale, directions, partition_mode, hardness_mode, hardness_strength)
        _validate_own_arguments(in_batch_negatives, directions, hardness_mode, num_generated)
        if not entropy_weight >= 0:
            raise ValueError(f"entropy_weight must be >= 0 (0 switches the entropy term off), got {entropy_weight}.")
        if not entropy_temperature > 0:
            raise ValueError(f"entropy_temperature must be positive, got {entropy_temperature}.")
        self.scale = float(scale)
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.directions = tuple(directions)
        self.partition_mode = partition_mode
        self.hardness_mode = hardness_mode
        self.hardness_strength = hardness_strength
        self.in_batch_negatives = in_batch_negatives
        self.num_generated = None if num_generated is None else int(num_generated)
        self.use_weights = use_weights
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self._diagnostics_inputs: tuple | None = None
        self._diagnostics_cache: dict[str, float] = {}
        self._last_components: dict[str, Tensor] = {}
        self._warned_ignored_labels = False

    @property
    def use_weights(self) -> UseWeights:
        return self._use_weights

    @use_weights.setter
    def use_weights(self, value: UseWeights) -> None:
        # A property, so that a later assignment (or one through CachedCausalNegLoss) is checked too.
        self._use_weights = _use_weights_mode(value)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def _owned_labels(self, labels: Tensor | None, num_negatives: int) -> Tensor | None:
        """``labels`` if they claim the weight layout (see the class docs, "Labels"), else None, with a warning
        naming the shape the first time this loss ignores a label tensor."""
        if labels is None or has_negative_label_layout(labels, num_negatives):
            return labels
        if not self._warned_ignored_labels:
            self._warned_ignored_labels = True
            warnings.warn(
                f"{type(self).__name__} ignores the label tensor of shape {tuple(labels.shape)}, as "
                "MultipleNegativesRankingLoss does: only a (batch, 2n) tensor for n negative columns "
                f"([w_1..w_n, g_1..g_n], here (batch, {2 * num_negatives})) carries gap-correction weights. Build "
                "that column with negsynth_hf.encode_negative_labels to use weights, or remove the label column "
                "to silence this warning.",
                UserWarning,
                stacklevel=2,
            )
        return None

    def negative_weights(
        self, labels: Tensor | None, num_negatives: int, batch_size: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Per-negative ``(weights, is_generated)``, both ``(batch, num_negatives)``, from the label column.

        Without labels: all weights 1, and the trailing ``num_generated`` columns (if set) are generated.
        """
        if labels is not None:
            weights, is_generated = decode_negative_labels(labels.to(device), num_negatives)
            if weights.size(0) != batch_size:
                raise ValueError(
                    f"The label column has {weights.size(0)} rows but the batch has {batch_size} anchors; expected "
                    f"a label tensor of shape ({batch_size}, {2 * num_negatives})."
                )
            if self.use_weights == "none":
                weights = torch.ones_like(weights)
            elif self.use_weights == "mask":
                weights = (weights > 0).to(weights.dtype)
            return weights, is_generated
        weights = torch.ones(batch_size, num_negatives, device=device)
        is_generated = torch.zeros(batch_size, num_negatives, dtype=torch.bool, device=device)
        if self.num_generated:
            if self.num_generated > num_negatives:
                raise ValueError(
                    f"num_generated={self.num_generated} but the inputs have only {num_negatives} negative "
                    f"column(s): set num_generated <= {num_negatives}, or give a label column instead."
                )
            is_generated[:, num_negatives - self.num_generated :] = True
        return weights, is_generated

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """The scalar loss ``L_InfoNCE + entropy_weight * L_ent`` from the embedding columns (anchor, positive,
        negative_1..n)."""
        components = self.compute_loss_components(embeddings, labels)
        return components["infonce"] + components["entropy"]

    def compute_loss_components(self, embeddings: list[Tensor], labels: Tensor | None = None) -> dict[str, Tensor]:
        """The differentiable components ``{"infonce": L_InfoNCE, "entropy": entropy_weight * L_ent}`` (keys in
        ``COMPONENT_KEYS``), whose sum is the loss; also kept detached in ``last_components``."""
        if len(embeddings) < 2:
            raise ValueError(f"Expected at least 2 embedding columns (anchor, positive), got {len(embeddings)}.")
        queries, positives, negatives = embeddings[0], embeddings[1], embeddings[2:]
        batch_size, num_negatives = queries.size(0), len(negatives)
        labels = self._owned_labels(labels, num_negatives)
        weights, is_generated = self.negative_weights(labels, num_negatives, batch_size, queries.device)
        valid = weights > 0
        # Decided on the host, without reading any tensor: the default path has no device synchronisation beyond
        # the label validation (on a GPU a step is launch-bound; every .item() stalls the queue).
        may_have_generated = labels is not None or bool(self.num_generated)
        with_entropy = self.entropy_weight > 0 and num_negatives > 0 and may_have_generated

        sims = self._similarities(queries, positives, negatives, with_entropy)
        weighted = labels is not None and self.use_weights != "none"
        logits = self._direction_logits(sims, weights if weighted else None)
        infonce = contrastive_loss(logits, sims.targets, self.partition_mode)

        terms = None
        if with_entropy:
            scores = sims.entropy_scores
            if scores is None:
                scores = self._entropy_scores(sims, negatives, is_generated & valid)
            terms = entropy_terms(scores, is_generated, valid, self.entropy_temperature)
            entropy = self.entropy_weight * terms.loss
        else:
            entropy = queries.new_zeros(())
        # Keep detached inputs only (no graph); the floats are computed if and when someone reads them.
        detached = _Similarities(
            sims=sims.own, targets=sims.targets, query=sims.query.detach(), negatives=sims.negatives, own=sims.own
        )
        if terms is not None:
            terms = EntropyTerms(**{name: value.detach() for name, value in vars(terms).items()})
        self._diagnostics_inputs = (detached, is_generated, valid, terms)
        self._diagnostics_cache = {}
        self._last_components = {"infonce": infonce.detach(), "entropy": entropy.detach()}
        return {"infonce": infonce, "entropy": entropy}

    def infonce_logits(
        self, queries: Tensor, positives: Tensor, negatives: list[Tensor], weights: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Scaled query_to_doc logits (``+ log w`` and the hardness term on each negative) and the column index of
        each row's positive.

        In-batch on: ``(B, B_world * (1 + N))``, columns block-ordered ``[positives | negative_1 | ...]`` exactly
        like MNRL's query_to_doc matrix. In-batch off: ``(B, 1 + N)``, own positive first.
        """
        sims = self._similarities(queries, positives, negatives)
        return self._direction_logits(sims, weights)["query_to_doc"], sims.targets

    def _similarities(
        self, queries: Tensor, positives: Tensor, negatives: list[Tensor], with_entropy: bool = False
    ) -> _Similarities:
        """One pass of similarity work shared by InfoNCE, the entropy term and the diagnostics."""
        if self.in_batch_negatives:
            sims = self._in_batch_similarities(queries, positives, negatives, with_entropy)
        else:
            sims = self._own_similarities(queries, positives, negatives)
        if sims.own is None:
            with torch.no_grad():
                own = rowwise_dot(F.normalize(positives, dim=-1).unsqueeze(1), sims.query.detach())
                if sims.negatives is not None:
                    own = torch.cat([own, rowwise_dot(sims.negatives.transpose(0, 1), sims.query.detach())], 1)
            sims.own = own
        return sims

    def _in_batch_similarities(
        self, queries: Tensor, positives: Tensor, negatives: list[Tensor], with_entropy: bool
    ) -> _Similarities:
        """Each local query against every (gathered) document, block-ordered like MNRL's query_to_doc matrix, plus
        the blocks of the other ``directions``.

        With ``cos_sim`` the query_to_doc block is one :class:`CosineScores` node: the scores are bitwise
        ``cos_sim``'s, the own-document cosines (and, ``with_entropy``, the entropy term's scores, whose gradient
        reaches the documents only) are read off that matrix, and the backward is fused.
        """
        batch_size, num_docs = queries.size(0), 1 + len(negatives)
        docs = [positives, *negatives]
        offset = 0
        if self.gather_across_devices:
            queries = all_gather_with_grad(queries)
            docs = [all_gather_with_grad(doc) for doc in docs]
            offset = get_rank() * batch_size
        world_batch_size, local = docs[0].size(0), slice(offset, offset + batch_size)
        targets = torch.arange(offset, offset + batch_size, device=queries.device)
        own_columns = targets.unsqueeze(1) + world_batch_size * torch.arange(num_docs, device=targets.device)
        local_queries, docs_all = queries[local], torch.cat(docs, dim=0)
        own = entropy_scores = None
        if self.similarity_fct is cos_sim:
            sims, own_scores, query_n, docs_n = CosineScores.apply(
                local_queries, docs_all, own_columns, 1 if with_entropy else num_docs
            )
            own, entropy_scores = own_scores.detach(), own_scores[:, 1:]
            # (N, B, D) view of this device's own normalised negatives (for the diagnostics)
            negatives_n = docs_n.view(num_docs, world_batch_size, -1)[1:, local]
        else:
            query_n = F.normalize(local_queries, dim=-1)
            sims = self.similarity_fct(local_queries, docs_all)
            negatives_n = F.normalize(torch.stack(negatives).detach(), dim=-1) if negatives else None
        extra = {}
        if any(direction != "query_to_doc" for direction in self.directions):
            extra = extra_direction_scores(self.similarity_fct, self.directions, queries, docs, local)
        return _Similarities(
            sims=sims,
            targets=targets,
            query=query_n,
            negatives=negatives_n if negatives else None,
            own=own,
            entropy_scores=entropy_scores,
            own_columns=own_columns,
            extra=extra,
        )

    def _own_similarities(self, queries: Tensor, positives: Tensor, negatives: list[Tensor]) -> _Similarities:
        """Each query against its own positive and its own negatives only: ``(B, 1 + N)``, no B x B matrix."""
        batch_size, num_docs = queries.size(0), 1 + len(negatives)
        targets = torch.zeros(batch_size, dtype=torch.long, device=queries.device)
        own_columns = torch.arange(num_docs, device=queries.device).expand(batch_size, -1)
        docs = torch.stack([positives, *negatives], dim=1)
        query_n = F.normalize(queries, dim=-1)
        own = None
        if self.similarity_fct is cos_sim:
            docs_n = F.normalize(docs, dim=-1)
            sims = rowwise_dot(docs_n, query_n)
            own = sims.detach()
            negatives_n = docs_n.detach()[:, 1:].transpose(0, 1)
        else:
            if self.similarity_fct is dot_score:
                sims = rowwise_dot(docs, queries)
            else:  # any other all-pairs similarity: the diagonal of each (B, B) block (correct, not cheap)
                sims = torch.stack(
                    [torch.diagonal(self.similarity_fct(queries, docs[:, k])) for k in range(num_docs)], dim=1
                )
            negatives_n = F.normalize(docs.detach()[:, 1:], dim=-1).transpose(0, 1)
        return _Similarities(
            sims=sims,
            targets=targets,
            query=query_n,
            negatives=negatives_n if negatives else None,
            own=own,
            own_columns=own_columns,
        )

    @property
    def last_components(self) -> dict[str, Tensor]:
        """The components of the last loss computation (keys ``COMPONENT_KEYS``), as detached 0-dim tensors on
        the loss's device: reading them costs no device synchronisation."""
        return self._last_components

    @property
    def last_diagnostics(self) -> dict[str, float]:
        """Statistics of the last forward as python floats, keyed by ``DIAGNOSTIC_KEYS`` (see the class docs)."""
        if self._diagnostics_inputs is not None:
            self._diagnostics_cache = self._diagnostics(*self._diagnostics_inputs)
            self._diagnostics_inputs = None
        return self._diagnostics_cache

    @staticmethod
    def _entropy_scores(sims: _Similarities, negatives: list[Tensor], gen_valid: Tensor) -> Tensor:
        """``(B, N)`` cosines for the entropy term on the generic path (a custom ``similarity_fct``, or in-batch
        negatives off): detached values, with the columns that hold a generated negative in some row re-scored in
        the graph against the detached query, so the backward pass stays ``O(B * G * D)``. The entropy term's own
        backward zeroes the gradient of mined entries in those columns.
        """
        scores = sims.own[:, 1:]
        generated_columns = gen_valid.any(dim=0).nonzero().flatten().tolist()
        if generated_columns:
            generated = F.normalize(torch.stack([negatives[j] for j in generated_columns], dim=1), dim=-1)
            generated_scores = rowwise_dot(generated, sims.query.detach())  # query detached
            index = torch.tensor(generated_columns, device=scores.device)
            scores = scores.index_copy(1, index, generated_scores.to(scores.dtype))
        return scores

    def _direction_logits(self, sims: _Similarities, weights: Tensor | None) -> dict[str, Tensor]:
        """Scaled logits of every direction, in MNRL's order: query_to_doc with ``+ log w`` and the hardness term
        on its negatives, doc_to_doc with the same ``+ log w`` column bias (a weight belongs to its document), the
        query columns of query_to_query and doc_to_query unweighted.

        No check whether all ``w`` are 1: ``x + log 1`` is exactly ``x``, and the check would cost a device
        synchronisation. The two biases are detached, so they are summed before the one add in the graph.
        """
        log_w = self._log_weight_bias(weights, sims.sims.dtype)
        bias = hardness_bias(self.hardness_mode, self.hardness_strength, sims.sims, sims.own_columns)
        if bias is None:
            bias = log_w
        elif log_w is not None:
            bias = bias + log_w
        logits = sims.sims * self.scale
        logits = {"query_to_doc": logits if bias is None else logits + bias}
        for name, block in sims.extra.items():
            block = block * self.scale
            logits[name] = block + log_w if name == "doc_to_doc" and log_w is not None else block
        return logits

    def _log_weight_bias(self, weights: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        """``log w`` laid out on the query_to_doc columns: in-batch one ``(C,)`` column bias, the same for every
        anchor (positives of every row keep weight 1); in-batch off ``(B, 1 + N)``, own positive first."""
        if weights is None or not weights.numel():
            return None
        log_w = weights.to(dtype).log()
        if not self.in_batch_negatives:
            return torch.cat([log_w.new_zeros(log_w.size(0), 1), log_w], dim=1)
        if self.gather_across_devices:
            log_w = all_gather(log_w)
        return torch.cat([log_w.new_zeros(log_w.size(0)), log_w.T.reshape(-1)])

    @torch.no_grad()
    def _diagnostics(self, sims: _Similarities, is_generated: Tensor, valid: Tensor, terms) -> dict[str, float]:
        """Detached per-step statistics of the reference training logs, with a single host transfer.

        Mean pairwise cosines use group sums: for unit vectors, the sum over ordered pairs j != k of v_j . v_k
        is ``|sum v|^2 - n``, so no (B, N, N) Gram matrix is built.
        """
        own = sims.own.float()
        stats: dict[str, Tensor] = {"sim_q_pos": own[:, 0].mean()}
        if sims.negatives is not None:
            nan = own.new_tensor(float("nan"))

            def ratio(total: Tensor, count: Tensor) -> Tensor:
                return torch.where(count > 0, total / count.clamp(min=1), nan)

            gen = (is_generated & valid).float()
            mined = (~is_generated & valid).float()
            q_neg = own[:, 1:]
            negatives = sims.negatives.float()
            # Per-row group sums; the generated one only over the columns that hold generated negatives (few).
            sum_mined = (mined.T.unsqueeze(-1) * negatives).sum(0)  # (B, D), over the contiguous (N, B, D) layout
            columns = gen.bool().any(dim=0).nonzero().flatten()
            sum_gen = (gen.T[columns].unsqueeze(-1) * negatives[columns]).sum(0)
            num_gen, num_mined = gen.sum(1), mined.sum(1)
            stats["sim_q_mined"] = ratio((q_neg * mined).sum(), num_mined.sum())
            stats["sim_q_gen"] = ratio((q_neg * gen).sum(), num_gen.sum())
            stats["sim_gen_mined"] = ratio((sum_gen * sum_mined).sum(), (num_gen * num_mined).sum())
            # unit vectors: sum over ordered pairs j != k of v_j . v_k = |sum v|^2 - (number of vectors)
            gen_pairs = sum_gen.pow(2).sum() - num_gen.sum()
            stats["sim_gen_gen"] = ratio(gen_pairs, (num_gen * (num_gen - 1)).sum())
            mined_pairs = sum_mined.pow(2).sum() - num_mined.sum()
            stats["sim_mined_mined"] = ratio(mined_pairs, (num_mined * (num_mined - 1)).sum())
            stats["masked_fraction"] = (~valid).float().mean()
            if terms is not None:
                included = terms.included.float()
                stats["gen_mass"] = ratio((terms.gen_mass * included).sum(), included.sum())
                stats["gen_mass_expected"] = ratio((terms.gen_mass_expected * included).sum(), included.sum())
                multi = (terms.num_generated >= 2).float()
                h_norm = terms.h_gen / terms.num_generated.clamp(min=2).to(terms.h_gen.dtype).log()
                stats["h_gen_norm"] = ratio((h_norm * multi).sum(), multi.sum())
        names = list(stats)
        values = torch.stack([stats[name].float() for name in names]).tolist()
        return {name: value for name, value in zip(names, values, strict=True) if value == value}  # NaN: n/a

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
            "in_batch_negatives": self.in_batch_negatives,
            "num_generated": self.num_generated,
            "use_weights": self.use_weights,
            "entropy_weight": self.entropy_weight,
            "entropy_temperature": self.entropy_temperature,
        }

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    @property
    def citation(self) -> str:
        """The paper's entry, plus those of the MNRL variant (GTE, Jina) and of the hardness weighting in use."""
        entries = [_CITATION]
        if set(self.directions) != {"query_to_doc"}:
            # MNRL's own choice of entry for these directions (its property reads nothing else)
            entries.append(MultipleNegativesRankingLoss.citation.fget(self))
        if self.hardness_mode is not None and self.hardness_strength > 0:
            entries.append(_HARDNESS_CITATIONS[self.hardness_mode])
        return "".join(entries)


_CITATION = """
@inproceedings{causalneg2026,
    title={When Hard Negatives Hurt: Bridging the Generative-Discriminative Gap in Hard Negative Synthesis for Retrieval},
    author={{CausalNeg authors}},
    booktitle={Proceedings of the ACM SIGKDD Conference on Knowledge Discovery and Data Mining (KDD)},
    year={2026},
    eprint={2606.01304},
    archivePrefix={arXiv},
    url={https://arxiv.org/abs/2606.01304},
}
"""
_LAN_2025 = """
@misc{lan2025llave,
    title={LLaVE: Large Language and Vision Embedding Models with Hardness-Weighted Contrastive Learning},
    author={Zhibin Lan and others},
    year={2025},
    eprint={2503.04812},
    archivePrefix={arXiv},
    url={https://arxiv.org/abs/2503.04812},
}
"""
_EMBEDDINGGEMMA_2025 = """
@misc{schechtervera2025embeddinggemma,
    title={EmbeddingGemma: Powerful and Lightweight Text Representations},
    author={Henrique Schechter Vera and others},
    year={2025},
    eprint={2509.20354},
    archivePrefix={arXiv},
    url={https://arxiv.org/abs/2509.20354},
}
"""
_HARDNESS_CITATIONS = {
    "in_batch_negatives": _LAN_2025,
    "hard_negatives": _EMBEDDINGGEMMA_2025,
    "all_negatives": _LAN_2025 + _EMBEDDINGGEMMA_2025,
}
