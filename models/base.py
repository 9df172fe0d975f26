"""The backbone contract and the one training/evaluation loop every backbone shares.

Every backbone provides (DESIGN.md):

* ``item_embedding`` (row 0 = padding) and ``embed(items [B, L]) -> [B, L, d]``;
* ``encode(embedded [B, L, d], pad_mask [B, L]) -> hidden [B, L, h]``, one state per slot;
* ``user_state(hidden, lengths) -> [B, h]`` and ``score(user_state) -> [B, N+1]`` (column 0
  is -inf).

Sequences are left-padded: the most recent item sits in the last slot. ``training_step`` is
written once here and calls the denoiser hooks; backbones only override the pieces above and,
where their objective differs (BERT4Rec's cloze), ``training_inputs``/``eval_inputs``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import EvalConfig, NotApplicableError, TrainConfig, validate_section
from benchmark.metrics import (TRAIN_LOSS_MONITOR, FullRankingMetrics, GroupedRankingMetrics, mask_history,
                               monitor_mode, monitored_metric, target_ranks)
from models.losses import item_cross_entropy
from denoisers.base import Denoiser, IdentityDenoiser, StepContext


DENOISER_RESUME_KEY = "denoiser_resume_state"  # checkpoint entry of Denoiser.resume_state()


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite. ``epoch`` and ``batch`` say where; ``terms``
    maps each loss term (``rec_loss`` and the denoiser's auxiliary losses) to its value."""

    def __init__(self, epoch: int, batch: int, terms: dict[str, float]) -> None:
        self.epoch, self.batch, self.terms = epoch, batch, dict(terms)
        bad = ", ".join(f"{name}={value}" for name, value in terms.items() if not math.isfinite(value))
        super().__init__(f"non-finite training loss at epoch {epoch}, batch {batch} ({bad or 'total'}); training "
                         "stopped before this step's update. Lower train.lr, set train.gradient_clip, or check "
                         "the denoiser's loss weights")

    def __reduce__(self):  # picklable across worker processes despite the custom signature
        return type(self), (self.epoch, self.batch, self.terms)


@dataclass
class ModelShape:
    """Data-dependent sizes a backbone needs."""

    n_items: int
    n_users: int
    max_len: int


class SequentialRecommender(pl.LightningModule):
    """Base class of all backbones.

    Class attributes: ``Config`` (hyperparameter dataclass), ``default_loss``,
    ``default_instances`` (``all_positions`` | ``prefix`` | ``windows``), ``causal``
    (prefix-causal hidden states), ``needs_user_ids``, ``compared_with`` (a method that is
    its own model: the backbone it modifies, whose plain row its leaderboard Δ is against).
    """

    Config: ClassVar[type]
    default_loss: ClassVar[str] = "ce"
    default_instances: ClassVar[str] = "all_positions"
    causal: ClassVar[bool] = True
    supported_losses: ClassVar[tuple[str, ...]] = ("ce", "bpr", "bce_neg", "inbatch", "inbatch_tanh")
    # True when encode() works on batches narrower than max_len (leading all-padding slots dropped)
    accepts_trimmed_batches: ClassVar[bool] = False
    compared_with: ClassVar[str | None] = None

    def __init__(
        self,
        cfg: Any,
        shape: ModelShape,
        train_cfg: TrainConfig | None = None,
        eval_cfg: EvalConfig | None = None,
        denoiser: Denoiser | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.shape = shape
        self.n_items = shape.n_items
        self.max_len = shape.max_len
        self.train_cfg = train_cfg or TrainConfig()
        self.eval_cfg = eval_cfg or EvalConfig()
        loss = self.train_cfg.loss
        self.loss_name = self.default_loss if loss == "auto" else loss
        if self.loss_name not in self.supported_losses:
            raise NotApplicableError(
                f"train.loss={self.loss_name!r} is not supported by {type(self).__name__}; "
                f"choose one of {', '.join(self.supported_losses)}"
            )
        self.denoiser = denoiser if denoiser is not None else IdentityDenoiser()
        self.monitor_metric, self.monitor_name = monitored_metric(self.train_cfg.monitor, self.eval_cfg.ks)
        # the monitored value's key in the run's per-epoch curve, and whether lower is better
        self.monitor_key = str(self.train_cfg.monitor)  # "valid/ndcg@10", "train/loss": as the curve names them
        self.monitor_mode = monitor_mode(self.train_cfg.monitor)
        # the epoch's batch-size-weighted training loss sum and count (train.monitor=train/loss)
        self._epoch_loss = torch.zeros(2, dtype=torch.float64)
        self.valid_metrics = FullRankingMetrics(self.eval_cfg.ks)
        self.test_metrics = FullRankingMetrics(self.eval_cfg.ks)
        self.test_metrics_optimistic = FullRankingMetrics(self.eval_cfg.ks, optimistic=True)
        # item id -> popularity bucket of the run's original training data (set by the run:
        # ``set_item_buckets``); test metrics are then also reported per bucket of the target
        self.register_buffer("item_bucket", None, persistent=False)
        self.test_bucket_metrics: GroupedRankingMetrics | None = None

    @classmethod
    def parse_config(cls, section: dict):
        """The run's ``backbone`` section validated into a ``cls.Config`` (ConfigError naming the key)."""
        name = section.get("name", getattr(cls, "registry_name", cls.__name__))
        return validate_section(section, cls.Config, f"backbone '{name}'", key_prefix="backbone")

    @classmethod
    def from_config(cls, section: dict, shape: ModelShape, train_cfg=None, eval_cfg=None, denoiser=None):
        model = cls(cls.parse_config(section), shape, train_cfg, eval_cfg, denoiser)
        model.denoiser.attach(model)
        return model

    # ------------------------------------------------------------------ contract
    def embed(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(items)

    def encode(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def user_state(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Left padding: the state of the last slot summarises the whole history."""
        return hidden[:, -1]

    def encode_state(self, embedded: torch.Tensor, pad_mask: torch.Tensor,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``user_state(encode(embedded, pad_mask), lengths)`` -> ``[B, h]``, for callers that need
        no per-slot states (contrastive views). While the user state is the last slot's (this
        class's ``user_state``), it comes from ``encode_last``, which backbones may compute more
        cheaply than every slot."""
        if type(self).user_state is SequentialRecommender.user_state:
            return self.encode_last(embedded, pad_mask)
        return self.user_state(self.encode(embedded, pad_mask), lengths)

    def encode_last(self, embedded: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """``encode(embedded, pad_mask)[:, -1]`` -> ``[B, h]``, the last slot's state."""
        return self.encode(embedded, pad_mask)[:, -1]

    def output_table(self) -> torch.Tensor:
        """``[N+1, h]`` item vectors used for scoring (tied input table by default)."""
        return self.item_embedding.weight[: self.n_items + 1]

    def output_bias(self) -> torch.Tensor | None:
        return None

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``states [M, h] -> [M, N+1]`` logits, padding column set to -inf."""
        z = states @ self.output_table().T
        bias = self.output_bias()
        if bias is not None:
            z = z + bias
        z[:, 0] = float("-inf")
        return z

    def score(self, user_state: torch.Tensor) -> torch.Tensor:
        return self.logits(user_state)

    @property
    def hidden_size(self) -> int:
        return self.output_table().shape[1]

    @property
    def embedding_size(self) -> int:
        return self.item_embedding.weight.shape[1]

    # ------------------------------------------------------------------ objective hooks
    def training_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input items [B, L], targets [B, L])``; target 0 = no loss at that slot."""
        return batch["items"], batch["targets"]

    def eval_inputs(self, items: torch.Tensor) -> torch.Tensor:
        return items

    def forward(self, items: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
        """``items [B, L] -> hidden [B, L, h]`` with the denoiser's input transform."""
        embedded = self.embed(items)
        pad_mask = items == 0
        if ctx is not None:
            ctx.pad_mask = pad_mask
            embedded = self.denoiser.transform_inputs(embedded, ctx)
            ctx.embedded = embedded
            pad_mask = ctx.pad_mask  # a denoiser that drops/moves items sets the new padding
        hidden = self.encode(embedded, pad_mask)
        if ctx is not None:
            ctx.hidden = hidden
        return hidden

    def target_states(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """States ``[M, h]`` at the slots with a target (row-major order of ``targets > 0``)."""
        return hidden[targets > 0]

    # ------------------------------------------------------------------ losses
    def next_item_loss(self, states: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Per-target losses ``[M]`` for ``states [M, h]``, ``targets [M]`` (``history [M, L]``
        lists items excluded from negative sampling)."""
        name = self.loss_name
        if name in ("ce", "cloze"):
            return item_cross_entropy(states, self.output_table(), targets, self.output_bias())
        if name in ("inbatch", "inbatch_tanh"):
            table = self.output_table()[targets]
            z = states @ table.T
            bias = self.output_bias()
            if bias is not None:
                z = z + bias[targets].view(1, -1)
            if name == "inbatch_tanh":
                z = torch.tanh(z)
            return F.cross_entropy(z, torch.arange(len(targets), device=z.device), reduction="none")
        negatives = self.sample_negatives(targets, history)  # [M, k]
        table = self.output_table()
        pos = (states * table[targets]).sum(-1, keepdim=True)
        neg = torch.einsum("mh,mkh->mk", states, table[negatives])
        bias = self.output_bias()
        if bias is not None:
            pos, neg = pos + bias[targets].view(-1, 1), neg + bias[negatives]
        if name == "bpr":
            return -F.logsigmoid(pos - neg).mean(-1)
        if name == "bce_neg":
            return -F.logsigmoid(pos).squeeze(-1) - F.logsigmoid(-neg).mean(-1)
        raise ValueError(f"unknown loss {name!r}")

    def sample_negatives(self, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Uniform negatives ``[M, k]`` in 1..N, redrawing those that hit the target or history
        (vectorised rejection, up to 20 rounds; only draws that collided are redrawn)."""
        k = max(1, self.train_cfg.num_negatives)
        neg = torch.randint(1, self.n_items + 1, (len(targets), k), device=targets.device)
        if not self.train_cfg.exclude_history_negatives:
            return neg
        forbidden = torch.cat([history, targets.view(-1, 1)], dim=1)
        for _ in range(20):
            bad = (neg.unsqueeze(-1) == forbidden.unsqueeze(1)).any(-1)
            if not bad.any():
                break
            neg = torch.where(bad, torch.randint_like(neg, 1, self.n_items + 1), neg)
        return neg

    # ------------------------------------------------------------------ Lightning steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ctx = StepContext(self, batch, "train", self.current_epoch)
        batch = ctx.batch = self.denoiser.prepare_batch(ctx)
        items, targets = self.training_inputs(batch)
        ctx.extras["input_items"] = items
        ctx.extras["targets"] = targets
        hidden = self(items, ctx)
        has_target = targets > 0
        states = self.target_states(hidden, targets)
        row_of_target = has_target.nonzero(as_tuple=True)[0]
        per_target = self.next_item_loss(states, targets[has_target], items[row_of_target])
        return self.finish_training_step(ctx, per_target, has_target, batch_idx)

    def finish_training_step(self, ctx: StepContext, per_target: torch.Tensor, target_slots, batch_idx: int,
                             extra_loss: torch.Tensor | None = None, log: dict | None = None) -> torch.Tensor:
        """The shared tail of every training step: the denoiser's sample weights (read at
        ``target_slots``, an index into its ``[B, L]`` weights) normalised per
        ``denoiser.weight_normalisation``, ``extra_loss`` (a backbone's own auxiliary terms), the
        denoiser's auxiliary losses, epoch-level logging and the non-finite-loss check."""
        weights = self.denoiser.sample_weights(ctx)
        if weights is not None:
            w = weights[target_slots]
            if getattr(self.denoiser, "weight_normalisation", "weight") == "count":
                rec_loss = (per_target * w).sum() / max(len(w), 1)
            else:
                rec_loss = (per_target * w).sum() / w.sum().clamp(min=1e-8)
        else:
            rec_loss = per_target.mean()
        total = rec_loss if extra_loss is None else rec_loss + extra_loss
        log = dict(log or {})
        log["train/rec_loss"] = rec_loss.detach()
        for name, value in self.denoiser.auxiliary_loss(ctx).items():
            total = total + value
            log[f"train/{name}"] = value.detach()
        log["train/loss"] = total.detach()
        if not torch.isfinite(total):  # before logging: a NaN must not reach the epoch averages
            terms = {k.split("/", 1)[1]: float(v) for k, v in log.items() if k.startswith("train/")}
            raise NonFiniteLossError(self.current_epoch, batch_idx, terms)
        batch_size = ctx.extras["input_items"].shape[0]
        self.log_dict(log, on_step=False, on_epoch=True, batch_size=batch_size)
        if self.monitor_key == TRAIN_LOSS_MONITOR:
            self._epoch_loss += torch.stack([total.detach().double() * batch_size, total.new_tensor(batch_size, dtype=torch.float64)])
        return total

    def _eval_scores(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        ctx = StepContext(self, batch, stage, self.current_epoch)
        batch = ctx.batch = self.denoiser.prepare_batch(ctx)
        items = self.eval_inputs(batch["items"])
        ctx.extras["input_items"] = items
        hidden = self(items, ctx)
        state = self.user_state(hidden, batch.get("lengths"))
        # full ranking in float32 even under mixed precision: bf16 keeps 8 significant bits, so
        # thousands of items would tie with the target and pessimistic ties would count them all
        with torch.autocast(state.device.type, enabled=False):
            scores = self.score(state.float())
        if self.eval_cfg.exclude_history:
            scores = mask_history(scores, batch["items"], batch["targets"])
        return scores

    def _eval_metrics(self, stage: str) -> list:
        if stage == "valid":
            return [self.valid_metrics]
        return [m for m in (self.test_metrics, self.test_metrics_optimistic, self.test_bucket_metrics) if m is not None]

    def on_validation_epoch_start(self) -> None:
        # fresh state tensors in this process: a spawned DDP worker receives the metrics' states
        # in memory shared with the other workers, whose updates would then add up twice
        for metric in self._eval_metrics("valid"):
            metric.reset()

    def on_test_epoch_start(self) -> None:
        for metric in self._eval_metrics("test"):
            metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.valid_metrics.update(self._eval_scores(batch, "valid"), batch["targets"])

    def on_validation_epoch_end(self) -> None:
        values = self.valid_metrics.compute()
        self.log_dict({f"valid/{k}": v for k, v in values.items()}, prog_bar=False)
        if self.monitor_key == TRAIN_LOSS_MONITOR:
            # validation runs after the epoch's last training batch, so this is the whole epoch's
            # mean; Lightning's own epoch mean of train/loss exists only after validation
            total, count = self._epoch_loss
            self.log(self.monitor_name, (total / count.clamp(min=1)).float(), prog_bar=True, sync_dist=True)
        else:
            self.log(self.monitor_name, values[self.monitor_metric], prog_bar=True)
        self.valid_metrics.reset()

    def set_item_buckets(self, bucket_of_item: np.ndarray) -> None:
        """``bucket_of_item`` int ``[n_items + 1]`` (0 = hottest; -1 = padding), e.g. from
        :func:`benchmark.detection.popularity_buckets`: test metrics are then also logged per
        bucket of the test target as ``test/ndcg@K_b<g>``, ``test/hr@K_b<g>``, ``test/n_b<g>``."""
        buckets = torch.as_tensor(np.asarray(bucket_of_item), dtype=torch.long)
        self.item_bucket = buckets
        self.test_bucket_metrics = GroupedRankingMetrics(int(buckets.max()) + 1, self.eval_cfg.ks)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        scores = self._eval_scores(batch, "test")
        self.test_metrics.update(scores, batch["targets"])
        self.test_metrics_optimistic.update(scores, batch["targets"])
        if self.test_bucket_metrics is not None:
            targets = batch["targets"]
            self.test_bucket_metrics.to(scores.device)
            self.test_bucket_metrics.update(target_ranks(scores, targets), self.item_bucket[targets])

    def on_test_epoch_end(self) -> None:
        values = {f"test/{k}": v for k, v in self.test_metrics.compute().items()}
        values.update({f"test_optimistic/{k}": v for k, v in self.test_metrics_optimistic.compute().items()})
        if self.test_bucket_metrics is not None:
            values.update({f"test/{k}": v for k, v in self.test_bucket_metrics.compute().items()})
            self.test_bucket_metrics.reset()
        self.log_dict(values)
        self.test_metrics.reset()
        self.test_metrics_optimistic.reset()

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = torch.zeros(2, dtype=torch.float64, device=self.device)

    def on_train_epoch_end(self) -> None:
        self.denoiser.on_train_epoch_end(self, self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = self.denoiser.resume_state()
        if state:
            checkpoint[DENOISER_RESUME_KEY] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # only when a fit resumes: testing the best checkpoint must not rewind the denoiser's
        # per-epoch records to that epoch
        resuming = self._trainer is not None and self.trainer.state.fn == "fit"
        if resuming and DENOISER_RESUME_KEY in checkpoint:
            self.denoiser.load_resume_state(checkpoint[DENOISER_RESUME_KEY])

    def prepare_split(self, split) -> None:
        """Build split-dependent structures (e.g. DCRec's item graphs) from a ``SplitData``; a
        no-op for most backbones. ``setup`` calls it with the datamodule's split; code that
        steps the model without a Trainer (``bench perf``) calls it directly."""

    def setup(self, stage: str) -> None:
        split = getattr(getattr(self.trainer, "datamodule", None), "split", None)
        if split is not None:
            self.prepare_split(split)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.train_cfg.lr, weight_decay=self.train_cfg.weight_decay)

    @torch.no_grad()
    def predict_scores(self, items: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, N+1]`` for left-padded histories ``items [B, L]`` (no denoiser hooks)."""
        items = self.eval_inputs(items)
        return self.score(self.user_state(self.encode(self.embed(items), items == 0)))


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style init: N(0, std) for linear/embedding weights, zero biases, LN = identity."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

