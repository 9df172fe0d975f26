"""The denoiser plugin contract (DESIGN.md).

A denoiser implements what it needs of two families of methods:

* data level: ``fit(train, resources)`` then ``denoise(sequences) -> DenoisedSequences``
  (keep mask, replacements, insertions, per-position noise scores). The harness applies the
  result to the training split before the backbone is built (and, when asked, to the
  validation/test histories).
* training time: ``transform_inputs`` (e.g. IADSR's input mask), ``sample_weights`` (e.g.
  SAID-style loss weights), ``auxiliary_loss`` (e.g. InfoNCE, reconstruction) and
  ``on_train_epoch_end``, called by the backbone's single ``training_step``.

``requires`` names the resources the harness prepares once (``item_text``,
``text_embeddings``, ``item_graph``). A denoiser is an ``nn.Module``: parameters it creates
in ``attach`` are trained together with the backbone by the same optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from benchmark.config import validate_section
from benchmark.data.sequences import DenoisedSequences, Sequences, SplitData
from benchmark.registry import DENOISERS

if TYPE_CHECKING:  # pragma: no cover
    from benchmark.resources import Resources
    from models.base import SequentialRecommender


@dataclass
class StepContext:
    """What a training/evaluation step exposes to the denoiser hooks.

    ``embedded [B, L, d]`` and ``hidden [B, L, h]`` are filled in as the step progresses;
    ``pad_mask [B, L]`` (True = padding) is set from the input items before
    ``transform_inputs``, which may replace it (e.g. after dropping items and compacting the
    kept ones to the right end); ``encode`` receives the final value. ``stage`` is
    ``"train"``, ``"valid"`` or ``"test"``; ``extras`` carries method state between hooks of
    the same step."""

    model: "SequentialRecommender"
    batch: dict[str, torch.Tensor]
    stage: str
    epoch: int
    embedded: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    pad_mask: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoConfig:
    """A denoiser without hyperparameters."""


class Denoiser(nn.Module):
    """Base class of every denoiser; the identity denoiser implements nothing more.

    Class attributes:
        Config: dataclass of hyperparameters (every key is a config key under ``denoiser.``).
        requires: resources to prepare, subset of {"item_text", "text_embeddings", "item_graph"},
            plus "llm_weights" for methods that need a language model the user supplies.
        level: "none" (identity), "data" (rewrites sequences once) or "train" (hooks).
        native_backbones: backbones the method couples with natively (None = any); others
            get the transfer protocol (train natively, export, retrain the target backbone).
        default_native: the backbone used for the native phase of a transfer run.
    """

    Config: ClassVar[type] = NoConfig
    requires: ClassVar[frozenset[str]] = frozenset()
    level: ClassVar[str] = "none"
    native_backbones: ClassVar[tuple[str, ...] | None] = None
    default_native: ClassVar[str | None] = None
    # Training-instance construction a train-level method needs while it trains jointly
    # (e.g. "prefix": one target in the last slot per instance); None = the backbone's default.
    # An explicit ``train.train_instances`` (not "auto") still wins.
    train_instances: ClassVar[str | None] = None
    # How the backbone normalises ``sum(w * loss)`` when ``sample_weights`` returns weights:
    # "weight" divides by ``sum(w)``, "count" by the number of targets (so down-weighting
    # also lowers the effective learning rate, as in SAID's summed loss).
    weight_normalisation: str = "weight"
    # True when the training hooks work on batches narrower than max_len (the datamodule then
    # trims all-padding leading slots); hooks that keep [n, max_len] state by slot must say False.
    accepts_trimmed_batches: ClassVar[bool] = False
    # Config fields that name a text encoder ('' = the run's default): checked against the
    # registered encoders and configs/text presets before any data is read.
    encoder_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any = None, resources: "Resources | None" = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else self.Config()
        self.resources = resources

    @classmethod
    def parse_config(cls, section: dict):
        """The run's ``denoiser`` section validated into a ``cls.Config`` (ConfigError naming the key)."""
        name = section.get("name", getattr(cls, "registry_name", cls.__name__))
        return validate_section(section, cls.Config, f"denoiser '{name}'", key_prefix="denoiser")

    @classmethod
    def check_encoder_names(cls, cfg) -> None:
        """ConfigError naming the valid encoders if a field of ``encoder_fields`` names none."""
        from benchmark.text.base import resolve_encoder

        for field_name in cls.encoder_fields:
            name = getattr(cfg, field_name, "")
            if name:
                resolve_encoder(str(name))

    @classmethod
    def from_config(cls, section: dict, resources: "Resources | None") -> "Denoiser":
        return cls(cls.parse_config(section), resources)

    # ------------------------------------------------------------------ capabilities
    @classmethod
    def supports_backbone(cls, backbone: str) -> bool:
        return cls.native_backbones is None or backbone in cls.native_backbones

    @property
    def denoises_eval_inputs(self) -> bool:
        """True if the method scores validation/test users on histories it denoised itself
        (HSD, SSDRec, STEAM's corrected path). A transfer run then also exports the evaluation
        histories from the natively trained model, so the transferred backbone is evaluated the
        way the method is; otherwise it sees raw evaluation histories."""
        return False

    @property
    def exports(self) -> bool:
        """True if the method can emit ``DenoisedSequences`` (data level, or joint export)."""
        return self.level == "data" or type(self).export is not Denoiser.export

    # ------------------------------------------------------------------ data level
    def fit(self, train: Sequences, resources: "Resources") -> None:
        """Learn from the training split only (data-level methods)."""

    def denoise(self, sequences: Sequences) -> DenoisedSequences:
        """Decisions for every position of ``sequences``; identity by default."""
        return DenoisedSequences(sequences, keep=torch.ones(len(sequences.items), dtype=torch.bool).numpy())

    def denoise_eval(self, history: Sequences, stage: str) -> DenoisedSequences | None:
        """Data level: decisions for the evaluation histories of ``stage`` (``"valid"`` or
        ``"test"``), called after ``fit``; None (the default) leaves them unchanged. The harness
        applies the result to ``split.<stage>.history`` (targets are never part of a history)."""
        return None

    def decisions_without_training(self, split: SplitData) -> DenoisedSequences | None:
        """Decisions on ``split.train`` that need no recommender training, for ``bench detect``:
        a data-level method's ``fit`` + ``denoise``; a training-time method whose flags come from
        fixed inputs overrides this (SAID: weights from text embeddings). None (the default for
        training-time methods) means the decisions come from a trained model (``bench run``)."""
        if self.level != "data":
            return None
        self.fit(split.train, self.resources)
        return self.denoise(split.train)

    # ------------------------------------------------------------------ training time
    def attach(self, model: "SequentialRecommender") -> None:
        """Called once the backbone exists (sizes known): create parameters here."""

    def prepare_batch(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Rewrite ``ctx.batch`` before the backbone reads it, at every stage (``ctx.stage``):
        e.g. random crops of training windows, corrected evaluation histories. Returns the batch
        to use (default: unchanged); the backbone stores it back in ``ctx.batch``. Evaluation
        targets must not change."""
        return ctx.batch

    def transform_inputs(self, embedded: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Modify the input embeddings ``[B, L, d]`` before ``encode``."""
        return embedded

    def sample_weights(self, ctx: StepContext) -> torch.Tensor | None:
        """Per-target loss weights ``[B, L]`` (aligned with ``batch['targets']``), or None."""
        return None

    def auxiliary_loss(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Named extra loss terms added (weight 1) to the next-item loss."""
        return {}

    def on_train_epoch_end(self, model: "SequentialRecommender", epoch: int) -> None:
        """Epoch bookkeeping (e.g. swap the previous-epoch mask)."""

    def resume_state(self) -> dict:
        """State kept between training epochs that is not in the module's persistent tensors
        (per-epoch records, a previous-epoch mask held in a non-persistent buffer): saved with
        every training checkpoint so that ``bench run --resume`` continues from it. Tensors,
        numbers, strings, lists and dicts only (checkpoints load with ``weights_only=True``)."""
        return {}

    def load_resume_state(self, state: dict) -> None:
        """Restore what :meth:`resume_state` returned (called only when a fit resumes)."""

    def report(self) -> dict:
        """Method-specific diagnostics stored in the run result (``denoiser_report``)."""
        return {}

    def export(self, model: "SequentialRecommender", sequences: Sequences) -> DenoisedSequences:
        """Joint methods: the final keep decisions for ``sequences`` (transfer protocol)."""
        raise NotImplementedError(f"{type(self).__name__} does not export denoised sequences")


@DENOISERS.register("none")
class IdentityDenoiser(Denoiser):
    """The plain backbone: no denoising."""

    accepts_trimmed_batches = True


def make_denoiser(section: dict, resources: "Resources | None") -> Denoiser:
    cls = DENOISERS.get(section.get("name", "none"))
    return cls.from_config(section, resources)
