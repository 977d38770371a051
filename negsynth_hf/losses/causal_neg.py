"""CausalNegLoss: InfoNCE with gap-correction weights plus the query-view entropy term (docs/method.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.merged_forward import embed_columns
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

from negsynth_hf.labels import decode_negative_labels
from negsynth_hf.losses.entropy import entropy_terms

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


class CausalNegLoss(nn.Module):
    def __init__(
        self,
        model: SentenceTransformer,
        scale: float = 20.0,
        similarity_fct: Callable[[Tensor, Tensor], Tensor] = cos_sim,
        gather_across_devices: bool = False,
        *,
        in_batch_negatives: bool = True,
        num_generated: int | None = None,
        use_weights: bool = True,
        entropy_weight: float = 0.05,
        entropy_temperature: float = 0.1,
    ) -> None:
        """
        InfoNCE over the positive and all (hard) negatives, where each negative's logit is shifted by the log of
        its gap-correction weight, plus ``entropy_weight`` times the query-view entropy term over each query's own
        generated negatives. With all weights 1 and ``entropy_weight=0`` it is exactly
        :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`.

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
            in_batch_negatives: If True (default, as in MNRL), every other row's positive and explicit negatives
                are candidates too; another row's negative keeps that row's weight for every anchor, so a masked
                negative is masked everywhere. If False (the paper setting), each query sees only its own positive
                and negatives.
            num_generated: Without a label column, treat the trailing ``num_generated`` negative columns as
                generated (for the entropy term). Ignored when a label column is given, whose flags win.
            use_weights: If False, ignore the weights in the label column (ablation "no gap weights"); the
                generated flags are still used.
            entropy_weight: ``lambda`` of the entropy term; 0 switches it off (ablation "no entropy term").
            entropy_temperature: ``tau_ent`` of the entropy softmax.

        References:
            - When Hard Negatives Hurt: Bridging the Generative-Discriminative Gap in Hard Negative Synthesis for
              Retrieval (KDD 2026), https://arxiv.org/abs/2606.01304
            - Gap-correction weights: docs/method.md, "What this project adds"

        Requirements:
            1. (anchor, positive, negative_1, ..., negative_n) n-tuples; every row the same ``n``.
            2. Optionally a ``labels`` column built with :func:`negsynth_hf.labels.encode_negative_labels`:
               ``[w_1..w_n, g_1..g_n]`` (weights in ``[0, 1]``, generated flags).

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
            - Returns ``{"infonce": ..., "entropy": entropy_weight * L_ent}``; the trainer sums and logs both.
            - After each forward, ``self.last_diagnostics`` holds detached floats (keys in ``DIAGNOSTIC_KEYS``).

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
                args = SentenceTransformerTrainingArguments(
                    output_dir="out", batch_sampler=BatchSamplers.NO_DUPLICATES
                )
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        self.model = model
        if not scale > 0:
            raise ValueError(f"scale must be positive (scale = 1 / temperature), got {scale}.")
        if num_generated is not None and (isinstance(num_generated, bool) or int(num_generated) != num_generated):
            raise ValueError(f"num_generated must be a non-negative int or None, got {num_generated!r}.")
        if num_generated is not None and num_generated < 0:
            raise ValueError(f"num_generated must be a non-negative int or None, got {num_generated}.")
        if not entropy_weight >= 0:
            raise ValueError(f"entropy_weight must be >= 0 (0 switches the entropy term off), got {entropy_weight}.")
        if not entropy_temperature > 0:
            raise ValueError(f"entropy_temperature must be positive, got {entropy_temperature}.")
        self.scale = float(scale)
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.in_batch_negatives = in_batch_negatives
        self.num_generated = None if num_generated is None else int(num_generated)
        self.use_weights = use_weights
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.last_diagnostics: dict[str, float] = {}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> dict[str, Tensor]:
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def negative_weights(self, labels: Tensor | None, num_negatives: int, batch_size: int, device: torch.device):
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
            if not self.use_weights:
                weights = torch.ones_like(weights)
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

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> dict[str, Tensor]:
        if len(embeddings) < 2:
            raise ValueError(f"Expected at least 2 embedding columns (anchor, positive), got {len(embeddings)}.")
        queries, positives, negatives = embeddings[0], embeddings[1], embeddings[2:]
        batch_size, num_negatives = queries.size(0), len(negatives)
        weights, is_generated = self.negative_weights(labels, num_negatives, batch_size, queries.device)
        valid = weights > 0

        infonce = self._infonce(queries, positives, negatives, weights)

        stacked = None
        if num_negatives:
            stacked = F.normalize(torch.stack(negatives, dim=1), dim=-1)  # (B, N, D)
        query_n = F.normalize(queries, dim=-1)
        terms = None
        if self.entropy_weight > 0 and stacked is not None:
            terms = entropy_terms(query_n, stacked, is_generated, valid, self.entropy_temperature)
            entropy = self.entropy_weight * terms.loss
        else:
            entropy = queries.new_zeros(())
        self.last_diagnostics = self._diagnostics(
            query_n, F.normalize(positives, dim=-1), stacked, is_generated, valid, terms
        )
        return {"infonce": infonce, "entropy": entropy}

    def infonce_logits(
        self, queries: Tensor, positives: Tensor, negatives: list[Tensor], weights: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Scaled InfoNCE logits (``+ log w`` on each negative) and the column index of each row's positive.

        In-batch on: ``(B, B_world * (1 + N))``, columns block-ordered ``[positives | negative_1 | ...]`` exactly
        like MNRL's query_to_doc matrix. In-batch off: ``(B, 1 + N)``, own positive first.
        """
        batch_size = queries.size(0)
        apply_weights = bool((weights != 1).any()) if weights.numel() else False
        if not self.in_batch_negatives:
            scores = self._own_scores(queries, torch.stack([positives, *negatives], dim=1)) * self.scale
            if apply_weights:
                scores = torch.cat([scores[:, :1], scores[:, 1:] + weights.to(scores.dtype).log()], dim=1)
            return scores, torch.zeros(batch_size, dtype=torch.long, device=queries.device)

        docs = [positives, *negatives]
        offset = 0
        if self.gather_across_devices:
            queries = all_gather_with_grad(queries)
            docs = [all_gather_with_grad(doc) for doc in docs]
            weights = all_gather(weights)
            offset = get_rank() * batch_size
        local_indices = torch.arange(offset, offset + batch_size, device=queries.device)
        scores = self.similarity_fct(queries[local_indices], torch.cat(docs, dim=0)) * self.scale
        if apply_weights:
            # A negative's weight belongs to the negative, so it is the same for every anchor: one column bias
            # (a masked negative is masked for every anchor). Positives of other rows keep weight 1.
            log_w = torch.cat([scores.new_zeros(docs[0].size(0)), weights.T.reshape(-1).to(scores.dtype).log()])
            scores = scores + log_w
        return scores, local_indices

    def _infonce(self, queries: Tensor, positives: Tensor, negatives: list[Tensor], weights: Tensor) -> Tensor:
        scores, targets = self.infonce_logits(queries, positives, negatives, weights)
        positive_scores = scores[torch.arange(scores.size(0), device=scores.device), targets]
        return -(positive_scores - torch.logsumexp(scores, dim=1)).mean()

    def _own_scores(self, queries: Tensor, docs: Tensor) -> Tensor:
        """``(B, K)`` similarities of each query to its own ``(B, K, D)`` documents, without the B x B matrix."""
        if self.similarity_fct is cos_sim:
            return torch.einsum("bd,bkd->bk", F.normalize(queries, dim=-1), F.normalize(docs, dim=-1))
        if self.similarity_fct is dot_score:
            return torch.einsum("bd,bkd->bk", queries, docs)
        # Any other all-pairs similarity: take the diagonal of each (B, B) block (correct, just not cheap).
        return torch.stack([torch.diagonal(self.similarity_fct(queries, docs[:, k])) for k in range(docs.size(1))], 1)

    @torch.no_grad()
    def _diagnostics(
        self,
        query: Tensor,
        positive: Tensor,
        negatives: Tensor | None,
        is_generated: Tensor,
        valid: Tensor,
        terms,
    ) -> dict[str, float]:
        """Detached per-step statistics of the reference training logs; one host transfer per step."""
        stats: dict[str, Tensor] = {"sim_q_pos": (query * positive).sum(-1).mean()}
        if negatives is not None:
            nan = query.new_tensor(float("nan"))

            def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
                count = mask.sum()
                return torch.where(count > 0, (values * mask).sum() / count.clamp(min=1), nan)

            query, negatives = query.detach(), negatives.detach()
            gen = is_generated & valid
            mined = ~is_generated & valid
            q_neg = torch.einsum("bd,bkd->bk", query, negatives)
            gram = torch.bmm(negatives, negatives.transpose(1, 2))
            off_diag = ~torch.eye(negatives.size(1), dtype=torch.bool, device=query.device)
            stats["sim_q_mined"] = masked_mean(q_neg, mined)
            stats["sim_q_gen"] = masked_mean(q_neg, gen)
            stats["sim_gen_mined"] = masked_mean(gram, gen.unsqueeze(2) & mined.unsqueeze(1))
            stats["sim_gen_gen"] = masked_mean(gram, gen.unsqueeze(2) & gen.unsqueeze(1) & off_diag)
            stats["sim_mined_mined"] = masked_mean(gram, mined.unsqueeze(2) & mined.unsqueeze(1) & off_diag)
            stats["masked_fraction"] = (~valid).float().mean()
            if terms is not None:
                stats["gen_mass"] = masked_mean(terms.gen_mass, terms.included)
                stats["gen_mass_expected"] = masked_mean(terms.gen_mass_expected, terms.included)
                multi = terms.num_generated >= 2
                h_norm = terms.h_gen / terms.num_generated.clamp(min=2).to(terms.h_gen.dtype).log()
                stats["h_gen_norm"] = masked_mean(h_norm, multi)
        names = list(stats)
        values = torch.stack([stats[name].float() for name in names]).tolist()
        return {
            name: value for name, value in zip(names, values, strict=True) if value == value
        }  # drop NaN: not available

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": similarity_fct_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
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
        return """
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
