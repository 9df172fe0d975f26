"""Full-ranking metrics over ALL items, as torchmetrics ``Metric``s.

Rank of the target y among the real items 1..N (padding column 0 is -inf and never ranks)::

    rank = 1 + #{j != y : z_j > z_y} + #{j != y : z_j == z_y}

Ties count against the target (pessimistic), so a constant scorer gets the worst rank,
not the best. ``HR@K = 1[rank <= K]``, ``NDCG@K = 1[rank <= K] / log2(rank + 1)``,
``MRR@K = 1[rank <= K] / rank``. Computed with one comparison per score, no sort.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, optimistic: bool = False) -> torch.Tensor:
    """Ranks (1 = best) of ``targets [B]`` in ``scores [B, N+1]``; float32 ``[B]``.

    Pessimistic by default (ties against the target); ``optimistic`` counts only strictly
    higher scores. Scores of excluded columns must already be ``-inf``."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    if optimistic:
        return (scores > target_scores).sum(1).float() + 1.0
    # counts the target itself once, hence no "+1"
    return (scores >= target_scores).sum(1).float()


def mask_history(scores: torch.Tensor, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Set the scores of ``history [B, L]`` items to -inf, except each row's target (in place)."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    scores.scatter_(1, history, float("-inf"))
    scores.scatter_(1, targets.view(-1, 1), target_scores)
    scores[:, 0] = float("-inf")
    return scores


METRIC_NAMES = ("hr", "ndcg", "mrr")


TRAIN_LOSS_MONITOR = "train/loss"


def monitored_metric(monitor: str, ks) -> tuple[str, str]:
    """``(metric, logged name)`` of a ``train.monitor`` value such as ``"valid/ndcg@10"``:
    ``("ndcg@10", "valid_ndcg10")``. The name is what early stopping and checkpointing watch.
    ``"train/loss"`` (the epoch's mean training loss, lower is better: how the IADSR reference
    code stops, for reproduction only) gives ``("loss", "train_loss_mean")``.
    Raises ``ValueError`` unless the value is ``valid/<hr|ndcg|mrr>@<K>`` with K in ``eval.ks``
    or ``train/loss``."""
    if str(monitor) == TRAIN_LOSS_MONITOR:
        return "loss", "train_loss_mean"
    stage, _, metric = str(monitor).partition("/")
    name, _, k = metric.partition("@")
    if stage != "valid" or name not in METRIC_NAMES or not k.isdigit() or int(k) not in {int(x) for x in ks}:
        raise ValueError(f"train.monitor={monitor!r}: expected valid/<{'|'.join(METRIC_NAMES)}>@K with K one of "
                         f"eval.ks {list(ks)} (e.g. valid/ndcg@10), or {TRAIN_LOSS_MONITOR} (reproduction only)")
    return metric, f"valid_{name}{k}"


def monitor_mode(monitor: str) -> str:
    """``"min"`` for the training loss, ``"max"`` for validation metrics (higher is better)."""
    return "min" if str(monitor) == TRAIN_LOSS_MONITOR else "max"


def rank_gains(ranks: torch.Tensor, ks: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-instance ``(HR@K, NDCG@K, MRR@K)`` of ``ranks [B]`` (1 = best): three float64 ``[B, len(ks)]``."""
    k = torch.tensor(ks, device=ranks.device, dtype=ranks.dtype).view(1, -1)
    r = ranks.view(-1, 1)
    hit = (r <= k).double()
    return hit, hit / torch.log2(r.double() + 1.0), hit / r.double()


class FullRankingMetrics(Metric):
    """Accumulates HR@K, NDCG@K and MRR@K (means over evaluation instances).

    ``update(scores [B, N+1], targets [B])``; ``compute()`` returns a dict
    ``{"hr@5": ..., "ndcg@5": ..., "mrr@5": ..., ...}`` of scalar tensors. States are sums
    with ``dist_reduce_fx="sum"``, so each instance counts once under DDP as long as the
    sampler does not duplicate instances."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, ks: tuple[int, ...] = (5, 10, 20), optimistic: bool = False) -> None:
        super().__init__()
        self.ks = tuple(sorted(int(k) for k in ks))
        self.optimistic = optimistic
        n = len(self.ks)
        self.add_state("hr", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mrr", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:  # type: ignore[override]
        self.update_ranks(target_ranks(scores, targets, self.optimistic))

    def update_ranks(self, ranks: torch.Tensor) -> None:
        hit, ndcg, mrr = rank_gains(ranks, self.ks)
        self.hr += hit.sum(0)
        self.ndcg += ndcg.sum(0)
        self.mrr += mrr.sum(0)
        self.count += ranks.numel()

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        denom = self.count.clamp(min=1.0)
        out: dict[str, torch.Tensor] = {}
        for i, k in enumerate(self.ks):
            out[f"hr@{k}"] = (self.hr[i] / denom).float()
            out[f"ndcg@{k}"] = (self.ndcg[i] / denom).float()
            out[f"mrr@{k}"] = (self.mrr[i] / denom).float()
        return out


class GroupedRankingMetrics(Metric):
    """HR@K and NDCG@K means per group of evaluation instances — e.g. the item-popularity bucket
    of each test target (the IADSR paper's Figure 1: NDCG@5 per bucket, hot to cold).

    ``update(ranks [B], groups [B])`` with groups in ``0..n_groups-1`` (negative = not
    counted); ``compute()`` returns ``{"hr@5_b0": ..., "ndcg@5_b0": ..., "n_b0": ...}`` with
    ``b<g>`` the group and ``n_b<g>`` its instance count. Sum states, so DDP-safe as
    :class:`FullRankingMetrics`."""

    full_state_update = False

    def __init__(self, n_groups: int, ks: tuple[int, ...] = (5, 10, 20)) -> None:
        super().__init__()
        self.n_groups = int(n_groups)
        self.ks = tuple(sorted(int(k) for k in ks))
        shape = (self.n_groups, len(self.ks))
        self.add_state("hr", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ndcg", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(self.n_groups, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: torch.Tensor, groups: torch.Tensor) -> None:  # type: ignore[override]
        keep = groups >= 0
        ranks, groups = ranks[keep], groups[keep].long()
        hit, ndcg, _ = rank_gains(ranks, self.ks)
        self.hr.index_add_(0, groups, hit)
        self.ndcg.index_add_(0, groups, ndcg)
        self.count.index_add_(0, groups, torch.ones_like(groups, dtype=torch.float64))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        denom = self.count.clamp(min=1.0)
        out: dict[str, torch.Tensor] = {}
        for g in range(self.n_groups):
            for i, k in enumerate(self.ks):
                out[f"hr@{k}_b{g}"] = (self.hr[g, i] / denom[g]).float()
                out[f"ndcg@{k}_b{g}"] = (self.ndcg[g, i] / denom[g]).float()
            out[f"n_b{g}"] = self.count[g].float()
        return out
