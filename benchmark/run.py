"""One run: data -> (data-level denoiser) -> backbone with denoiser hooks -> full-ranking test.

``execute(cfg)`` is what ``bench run`` and every grid cell call. A run writes
``<runs_dir>/<run_id>/``: ``config.yaml`` (resolved), ``result.json`` (metrics, protocol,
timings, versions, commit), ``curve.csv`` (per-epoch validation metrics), CSV logger output
(``csv/``; ``csv-2/``, ... for the epochs of resumed attempts), the W&B offline run, and for
methods that export, ``denoised/`` (see ``benchmark.export``).

Checkpoints live in ``checkpoints/<backbone>/``: ``best.ckpt`` (tested) and, while the run is
unfinished, ``last.ckpt`` (written after every training epoch; removed once ``result.json``
exists). ``execute(cfg, resume=True)`` continues an unfinished run from its ``last.ckpt``:
weights, optimiser, epoch, early-stopping and best-checkpoint state (Lightning's), the per-epoch
curve, the random number generators and the denoiser's :meth:`~denoisers.base.Denoiser.resume_state`,
so it ends with the metrics of an uninterrupted run. Without ``resume``, whatever an earlier
attempt left in the run directory is removed first (one warning line names it). A run that fails
writes ``failure.json`` (kind, reason, epoch and batch of a non-finite loss) and no ``result.json``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.config import ConfigError, run_id, to_dict, validate_against_data
from benchmark.data.sequences import SplitData
from benchmark.data.splits import VALID_IN_TRAIN_SPLIT
from benchmark.metrics import monitor_mode
from benchmark.native_cache import (NativeCache, NativeOutcome, native_key, rng_state, set_rng_state,
                                    transfer_mode)
from benchmark.provenance import cpu_model, git_commit, library_versions, speed_probe_seconds
from benchmark.registry import BACKBONES, DATASETS, DENOISERS
from benchmark.resources import Resources
from benchmark.runlock import LOCK_NAME, run_lock
from denoisers.base import Denoiser, make_denoiser
from models.base import ModelShape, SequentialRecommender

log = logging.getLogger(__name__)
LAST_CHECKPOINT = "last.ckpt"
ATTEMPTS_FILE = "attempts.json"  # the git commit and start time of each process that trained the run
UNKNOWN_ATTEMPT = "unknown (attempt made before runs recorded their attempts)"
FAILURE_FILE = "failure.json"


@dataclass
class RunResult:
    run_id: str
    config: dict
    protocol: dict
    valid: dict[str, float]
    test: dict[str, float]
    test_optimistic: dict[str, float]
    curve: list[dict[str, float]]
    timings: dict[str, float]
    detection: dict | None = None
    denoiser_report: dict | None = None
    mode: str = "plain"
    best_epoch: int = -1
    epochs: int = 0
    versions: dict = field(default_factory=library_versions)
    git_commit: str = field(default_factory=git_commit)
    status: str = "ok"
    resumed_from: dict[str, int] = field(default_factory=dict)  # backbone -> epochs restored by --resume
    # commit of each process that trained the run, in order: several when it resumed (the epochs
    # restored from a checkpoint were trained by the earlier ones, which may run other code)
    attempt_commits: list[str] = field(default_factory=list)
    # a transfer run's native phase: backbone, epochs trained and best epoch (None when the shared
    # phase was stored before these were recorded)
    native: dict | None = None
    text_encoders: list[str] = field(default_factory=list)  # ids of the text encoders the run built
    cpu: str = field(default_factory=cpu_model)  # of the process that finished the run

    def to_json(self) -> dict:
        return asdict(self)


class FitState(pl.Callback):
    """A callback whose checkpointed state is restored only when a fit resumes: Lightning also
    restores callbacks from the checkpoint ``trainer.test`` evaluates (the best epoch's)."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._fitting = False

    def setup(self, trainer, pl_module, stage: str) -> None:  # runs before any checkpoint is restored
        self._trainer = trainer
        self._fitting = stage == "fit"

    def load_state_dict(self, state: dict) -> None:
        if self._fitting:
            self.restore(state)

    def restore(self, state: dict) -> None:
        """Take over ``state`` (this callback's ``state_dict()`` of the checkpoint)."""
        raise NotImplementedError


class EarlyStoppingAfterMinEpochs(pl.callbacks.EarlyStopping):
    """Lightning's ``EarlyStopping`` with ``min_epochs`` meaning "no stop before epoch N".

    Lightning keeps a stop signal raised during the first N epochs and acts on it as soon as N
    epochs have run, even when the metric improved in between (a run with a plateau early on
    stops at exactly N epochs). Here a patience stop raised before epoch N is withdrawn; the
    patience count goes on, so the run stops at the first epoch >= N whose last ``patience``
    checks brought no improvement."""

    def __init__(self, min_epochs: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_epochs = int(min_epochs)

    def _run_early_stopping_check(self, trainer) -> None:
        raised_before = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        too_early = trainer.current_epoch + 1 < self.min_epochs
        if (trainer.should_stop and not raised_before and too_early
                and self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED):
            trainer.should_stop = False
            self.stopped_epoch = 0


class EpochRecorder(FitState):
    """Collects per-epoch validation metrics and wall time of every training epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.curve: list[dict[str, float]] = []
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self.restored_epochs = 0  # epochs taken from a checkpoint when a fit resumed

    def state_dict(self) -> dict:
        return {"curve": [dict(row) for row in self.curve], "epoch_seconds": list(self.epoch_seconds)}

    def restore(self, state: dict) -> None:
        self.curve = [dict(row) for row in state["curve"]]
        self.epoch_seconds = list(state["epoch_seconds"])
        self.restored_epochs = len(self.epoch_seconds)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def _row(self, epoch: int) -> dict[str, float]:
        if not self.curve or self.curve[-1]["epoch"] != epoch:
            self.curve.append({"epoch": epoch})
        return self.curve[-1]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning validates before the training epoch ends, so the epoch's aggregated train/*
        # values exist only from here on (reading them at validation gives the previous epoch's)
        self.epoch_seconds.append(time.perf_counter() - self._start)
        row = self._row(trainer.current_epoch)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/"):
                row[key] = float(value)

    def on_validation_end(self, trainer, pl_module) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before
        # the module's, so the epoch's metrics are in callback_metrics only from here on.
        if trainer.sanity_checking:
            return
        row = self._row(trainer.current_epoch)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("valid/"):
                row[key] = float(value)


def best_epoch_row(curve: list[dict[str, float]], key: str, mode: str = "max") -> dict[str, float]:
    """The first epoch row of ``curve`` with the best ``key`` (highest for ``mode="max"``, lowest
    for ``"min"``); rows without ``key`` never win; ``{}`` when no row has it."""
    scored = [r for r in curve if key in r]
    if not scored:
        return {}
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r[key])


class EpochLines(pl.Callback):
    """One line per training epoch on stderr, for logs where progress bars are off
    (``logging.epoch_lines``): the epoch, its wall seconds, the watched metric and
    the best so far. Reads ``recorder``, so it must come after it in the callback list."""

    def __init__(self, recorder: EpochRecorder, label: str, watched: str, mode: str = "max") -> None:
        self.recorder, self.label, self.watched, self.mode = recorder, label, watched, mode

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.recorder.curve:
            return
        row = self.recorder.curve[-1]
        text = f"{self.label}: epoch {int(row['epoch']) + 1}/{trainer.max_epochs}"
        if self.recorder.epoch_seconds:
            text += f", {self.recorder.epoch_seconds[-1]:.0f} s"
        if self.watched in row:
            best = best_epoch_row(self.recorder.curve, self.watched, self.mode)
            text += (f", {self.watched} {row[self.watched]:.4f} (best {best[self.watched]:.4f} at epoch "
                     f"{int(best['epoch']) + 1})")
        print(text, file=sys.stderr, flush=True)


class ResumePoint(FitState):
    """What a resumed fit needs beyond Lightning's checkpoint: the random number generators
    (negative sampling, dropout, Gumbel noise) as they were when the checkpoint was written,
    and whether early stopping had already ended the fit (Lightning does not save
    ``should_stop``; without this a resumed fit would train one epoch too many)."""

    def __init__(self) -> None:
        super().__init__()
        self._stopped = False

    def state_dict(self) -> dict:
        return {**rng_state(), "stopped": bool(self._trainer is not None and self._trainer.should_stop)}

    def restore(self, state: dict) -> None:
        set_rng_state(state)
        self._stopped = bool(state["stopped"])

    def on_train_start(self, trainer, pl_module) -> None:
        if self._stopped:
            trainer.should_stop = True


def _quiet() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
    os.environ.setdefault("WANDB_SILENT", "true")


def resolve_instances(cfg: DictConfig, backbone_cls: type[SequentialRecommender], denoiser: Denoiser | None = None) -> str:
    """``train.train_instances``; "auto" = what the jointly trained denoiser needs, else the
    backbone's default."""
    mode = cfg.train.train_instances
    if mode != "auto":
        return mode
    needed = getattr(denoiser, "train_instances", None) if denoiser is not None else None
    return needed or backbone_cls.default_instances


def train_batch_limit(cfg: DictConfig, dm) -> float | int:
    """Lightning's ``limit_train_batches`` for a phase: ``train.limit_train_batches``, or, when the
    phase trains on prefix instances and ``train.prefix_epoch_share`` < 1, that share of the
    epoch's batches as a count (at least 1; batches are reshuffled every epoch, so each epoch
    draws a new subset)."""
    limit, share = cfg.train.limit_train_batches, float(cfg.train.prefix_epoch_share)
    if dm.train_instances != "prefix" or share >= 1.0:
        return limit
    batches = math.ceil(len(dm.train_arrays["items"]) / int(cfg.train.batch_size))
    return max(1, math.ceil(share * batches))


def protocol_of(cfg: DictConfig, split: SplitData, backbone_cls, mode: str, denoiser: Denoiser | None = None) -> dict:
    loss = cfg.train.loss if cfg.train.loss != "auto" else backbone_cls.default_loss
    return {
        **split.protocol,
        "preset": str(cfg.protocol),
        "ranking": "full (all items)",
        "ties": "pessimistic (ties count against the target)",
        "exclude_history": bool(cfg.eval.exclude_history),
        "loss": loss,
        "train_instances": resolve_instances(cfg, backbone_cls, denoiser),
        "max_len": int(cfg.dataset.max_len),
        "seed": int(cfg.seed),
        "early_stopping": f"{cfg.train.monitor} patience {cfg.train.patience}"
                          + (f", not before epoch {int(cfg.train.min_epochs)}" if int(cfg.train.min_epochs) else ""),
        "denoiser_mode": mode,
    }


def _csv_log_version(out_dir: Path) -> str:
    """The CSV logger's directory name: ``csv`` for a run's first attempt; a resumed attempt
    writes ``csv-2``, ``csv-3``, ... beside the earlier ones (Lightning's CSVLogger would empty
    an existing directory, losing the epochs logged before the interruption)."""
    version, attempt = "csv", 1
    while (out_dir / version).is_dir() and any((out_dir / version).iterdir()):
        attempt += 1
        version = f"csv-{attempt}"
    return version


def _make_loggers(cfg: DictConfig, out_dir: Path, rid: str) -> list:
    from pytorch_lightning.loggers import CSVLogger

    loggers: list = []
    if cfg.logging.csv:
        loggers.append(CSVLogger(str(out_dir), name="", version=_csv_log_version(out_dir)))
    mode = cfg.logging.wandb
    if mode != "disabled":
        from pytorch_lightning.loggers import WandbLogger

        from benchmark.grid import noise_label

        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            mode = "offline"
        tags = [f"dataset:{cfg.dataset.name}", f"backbone:{cfg.backbone.name}", f"denoiser:{cfg.denoiser.name}",
                f"seed:{cfg.seed}", f"noise:{noise_label(to_dict(cfg.dataset.noise))}"] + list(cfg.logging.wandb_tags)
        loggers.append(
            WandbLogger(
                project=cfg.logging.wandb_project,
                group=cfg.logging.wandb_group,
                name=f"{cfg.backbone.name}-{cfg.denoiser.name}-{cfg.dataset.name}-s{cfg.seed}",
                id=rid,
                tags=tags,
                mode=mode,
                save_dir=str(out_dir),
                config=to_dict(cfg),
            )
        )
    return loggers


def build_model_and_data(cfg: DictConfig, split: SplitData, backbone_name: str, denoiser: Denoiser):
    """The backbone (with ``denoiser`` attached) and its datamodule, as a run builds them.

    Returns ``(model, datamodule)``; shared by runs and ``bench perf``."""
    from benchmark.data.datamodule import SeqDataModule

    backbone_cls = BACKBONES.get(backbone_name)
    section = dict(to_dict(cfg.backbone))
    section["name"] = backbone_name
    if section.get("name") != cfg.backbone.name:  # native phase of a transfer run: that backbone's defaults
        from benchmark.config import compose

        section = dict(to_dict(compose(backbone=backbone_name, dataset=cfg.dataset.name).backbone))
    trim = bool(cfg.train.trim_padding) and backbone_cls.accepts_trimmed_batches and denoiser.accepts_trimmed_batches
    dm = SeqDataModule(
        split,
        max_len=int(cfg.dataset.max_len),
        train_instances=resolve_instances(cfg, backbone_cls, denoiser),
        batch_size=int(cfg.train.batch_size),
        eval_batch_size=int(cfg.eval.batch_size),
        num_workers=int(cfg.train.num_workers),
        pin_memory=bool(cfg.train.pin_memory),
        seed=int(cfg.seed),
        trim_padding=trim,
        bucket_batches=int(cfg.train.bucket_batches) if trim else 0,
    )
    train_cfg = OmegaConf.to_object(cfg.train)
    eval_cfg = OmegaConf.to_object(cfg.eval)
    shape = ModelShape(n_items=split.n_items, n_users=split.n_users, max_len=int(cfg.dataset.max_len))
    model = backbone_cls.from_config(section, shape, train_cfg, eval_cfg, denoiser)
    return model, dm


def _resume_checkpoint(ckpt_dir: Path) -> str | None:
    """``ckpt_dir/last.ckpt`` if it exists and holds a readable checkpoint, else None. A
    truncated or corrupted file is an error naming it (torch checks the archive's CRCs)."""
    path = ckpt_dir / LAST_CHECKPOINT
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is the same user-facing problem
        raise ValueError(f"{path}: cannot resume from this checkpoint ({type(exc).__name__}: {exc}); "
                         "run without --resume to start the run over") from exc
    return str(path)


def checkpointed_epochs(run_dir: Path) -> dict[str, int]:
    """Backbone -> training epochs an unfinished run's ``last.ckpt`` holds, i.e. where
    ``execute(..., resume=True)`` continues (empty when there is nothing to resume; an
    unreadable checkpoint counts as nothing, the resume itself names the file)."""
    epochs = {}
    for path in sorted(Path(run_dir).glob(f"checkpoints/*/{LAST_CHECKPOINT}")):
        try:
            epochs[path.parent.name] = int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) + 1
        except Exception:  # noqa: BLE001 - a listing must not fail on a half-written file
            continue
    return epochs


def _load_average() -> float:
    """The 1-minute load average per core (1.0 = every core busy); NaN where the OS has none."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return float("nan")


def train_and_test(
    cfg: DictConfig,
    split: SplitData,
    backbone_name: str,
    denoiser: Denoiser,
    out_dir: Path,
    rid: str,
    resume: bool = False,
    item_buckets: np.ndarray | None = None,
) -> tuple[SequentialRecommender, dict, dict, dict, EpochRecorder, float]:
    """Train ``backbone_name`` with ``denoiser``'s hooks; test with the best checkpoint.
    ``resume``: continue from ``checkpoints/<backbone>/last.ckpt`` when it exists.

    ``item_buckets`` (item id -> popularity bucket, ``[n_items + 1]``) adds per-bucket test
    metrics. Returns (model, best valid metrics, test metrics, optimistic test metrics,
    recorder, fit seconds)."""
    from benchmark.distributed import load_tested_weights, recover_after_spawn, spawn_callbacks

    strategy = str(cfg.train.strategy)  # stateful denoisers under several processes: refused in check_sections
    model, dm = build_model_and_data(cfg, split, backbone_name, denoiser)
    if item_buckets is not None:
        model.set_item_buckets(item_buckets)
    recorder = EpochRecorder()
    ckpt_dir = out_dir / "checkpoints" / backbone_name
    watched = model.monitor_name
    callbacks = [
        recorder,
        *([EpochLines(recorder, f"run {rid} {backbone_name}", model.monitor_key, model.monitor_mode)]
          if cfg.logging.epoch_lines else []),
        ResumePoint(),
        EarlyStoppingAfterMinEpochs(min_epochs=int(cfg.train.min_epochs), monitor=watched, mode=model.monitor_mode,
                                    patience=int(cfg.train.patience)),
        pl.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor=watched, mode=model.monitor_mode,
                                     save_top_k=1, enable_version_counter=False),
        # after "best" (Lightning keeps checkpoint callbacks in this order, after all others), so
        # last.ckpt holds this epoch's early-stopping and best-checkpoint state
        pl.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir), filename=Path(LAST_CHECKPOINT).stem, monitor=None,
                                     save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True),
        *spawn_callbacks(strategy),
    ]
    best_checkpoint = next(c for c in callbacks if isinstance(c, pl.callbacks.ModelCheckpoint))
    trainer = pl.Trainer(
        max_epochs=int(cfg.train.max_epochs),
        min_epochs=int(cfg.train.min_epochs),
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=strategy,
        use_distributed_sampler=False,  # the datamodule shares batches among ranks without padding
        precision=cfg.train.precision,
        callbacks=callbacks,
        logger=_make_loggers(cfg, out_dir, rid) if backbone_name == cfg.backbone.name else False,
        enable_progress_bar=bool(cfg.logging.progress),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        gradient_clip_val=float(cfg.train.gradient_clip) or None,
        limit_train_batches=train_batch_limit(cfg, dm),
        log_every_n_steps=1,
    )
    t0 = time.perf_counter()
    # weights_only=True: tensors and plain Python values only (our own files; nothing is unpickled)
    trainer.fit(model, datamodule=dm, ckpt_path=_resume_checkpoint(ckpt_dir) if resume else None, weights_only=True)
    fit_seconds = time.perf_counter() - t0
    recover_after_spawn(strategy, recorder, ckpt_dir / LAST_CHECKPOINT)
    best = best_checkpoint.best_model_path
    ckpt = best if best and Path(best).exists() else None
    trainer.test(model, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)
    load_tested_weights(strategy, model, ckpt)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("test/")}
    test_opt = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("test_optimistic/")}
    best_row = best_epoch_row(recorder.curve, model.monitor_key, model.monitor_mode)
    valid = {k.split("/", 1)[1]: v for k, v in best_row.items() if k.startswith("valid/")}
    if trainer.logger is not None and hasattr(trainer.logger, "experiment") and cfg.logging.wandb != "disabled":
        for lg in trainer.loggers:
            if lg.__class__.__name__ == "WandbLogger":
                lg.log_metrics({f"test/{k}": v for k, v in test.items()})
                lg.experiment.summary.update({f"test/{k}": v for k, v in test.items()})
                lg.finalize("success")
                import wandb

                wandb.finish()
    model.best_epoch = int(best_row.get("epoch", -1))  # type: ignore[attr-defined]
    return model, valid, test, test_opt, recorder, fit_seconds


def denoise_eval_histories(decide, split: SplitData, directory: Path, provenance: dict | None = None) -> SplitData:
    """Apply ``decide(history, stage) -> DenoisedSequences | None`` to the validation and test
    histories (data-level methods that clean evaluation inputs: ``denoiser.denoise_eval``;
    transfer runs of methods that denoise their own evaluation inputs: the native model's
    export); decisions are saved under ``directory/<stage>/`` (``provenance``: for the manifest)."""
    from dataclasses import replace

    from benchmark.data.sequences import EvalSet
    from benchmark.export import save_denoised

    changes: dict = {}
    for stage in ("valid", "test"):
        ev = getattr(split, stage)
        decisions = decide(ev.history, stage)
        if decisions is None:
            continue
        save_denoised(directory / stage, split, decisions, provenance)
        changes[stage] = EvalSet(decisions.apply(), ev.targets)
    if not changes:
        return split
    protocol = {**split.protocol, "denoised_eval_histories": ",".join(changes)}
    return replace(split, protocol=protocol, **changes)


def load_data_source(source: str, runs_dir: Path, split: SplitData) -> SplitData:
    """``denoised:<run_id>``: the training (and, if exported, evaluation) data of that run."""
    from benchmark.export import load_denoised_split

    kind, _, ref = source.partition(":")
    if kind != "denoised" or not ref:
        raise ValueError(f"data_source={source!r}: expected 'denoised:<run_id>'")
    return load_denoised_split(runs_dir / ref / "denoised", split)


def check_sections(cfg: DictConfig) -> None:
    """The dataset, backbone and denoiser names and the backbone and denoiser sections' keys, types
    and ranges, checked before any data is built (the classes' own checks of combinations run when
    they are constructed)."""
    from benchmark.distributed import check_denoiser_supports_processes, process_count

    DATASETS.get(cfg.dataset.name)
    BACKBONES.get(cfg.backbone.name).parse_config(to_dict(cfg.backbone))
    denoiser_cls = DENOISERS.get(cfg.denoiser.name)
    denoiser_cls.check_encoder_names(denoiser_cls.parse_config(to_dict(cfg.denoiser)))
    check_denoiser_supports_processes(denoiser_cls, process_count(cfg.train.devices, str(cfg.train.strategy)))
    if str(cfg.dataset.split) == VALID_IN_TRAIN_SPLIT and monitor_mode(str(cfg.train.monitor)) == "max":
        raise ConfigError(f"dataset.split={VALID_IN_TRAIN_SPLIT} trains on the validation targets, so "
                          f"train.monitor={cfg.train.monitor} would pick the epoch by in-sample scores; "
                          f"set train.monitor=train/loss")


def execute(cfg: DictConfig, runs_dir: str | Path | None = None, force: bool = False,
            resume: bool = False) -> RunResult:
    """Run one configuration end to end; returns (and stores) its ``RunResult``.

    A finished run directory is reused unless ``force``; a run directory another live process
    is running raises :class:`~benchmark.runlock.RunInProgressError`. ``resume`` continues an
    unfinished run from its last checkpoint (module docstring); otherwise the run starts clean.
    A failing run writes ``failure.json`` and re-raises."""
    _quiet()
    check_sections(cfg)
    commit = git_commit()  # the code this process imported: read now, not after hours of training
    rid = run_id(cfg)
    runs_root = Path(runs_dir or cfg.logging.runs_dir)
    out_dir = runs_root / rid
    result_file = out_dir / "result.json"
    if result_file.exists() and not force:
        return RunResult(**json.loads(result_file.read_text()))
    with run_lock(out_dir):  # a second process on the same run id raises RunInProgressError here
        if result_file.exists() and not force:  # finished by another process since the check above
            return RunResult(**json.loads(result_file.read_text()))
        resume = _prepare_run_directory(out_dir, resume)
        commits = record_attempt(out_dir, commit, resume)
        try:
            return _execute_unlocked(cfg, rid, out_dir, runs_root, commit, commits, resume)
        except Exception as exc:  # KeyboardInterrupt is no failure: the run stays resumable
            write_failure(out_dir / FAILURE_FILE, rid, exc, commit)
            raise


def _prepare_run_directory(out_dir: Path, resume: bool) -> bool:
    """Make ``out_dir`` hold one attempt only; returns whether the run resumes.

    Resuming needs a ``last.ckpt``: the earlier attempt's files stay (logs continue), only its
    result or failure record goes. Otherwise everything but the lock is removed, and a warning
    line names what was removed (none when the directory held nothing else)."""
    checkpoints = sorted(out_dir.glob(f"checkpoints/*/{LAST_CHECKPOINT}"))
    if resume and checkpoints:
        for name in ("result.json", FAILURE_FILE):
            (out_dir / name).unlink(missing_ok=True)
        log.warning("run %s: resuming from %s", out_dir.name, ", ".join(str(p) for p in checkpoints))
        return True
    leftovers = sorted(p for p in out_dir.iterdir() if p.name != LOCK_NAME)
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    if resume and leftovers:  # a fresh cell (nothing left behind) starts silently
        log.warning("run %s: no checkpoint to resume from; starting from the beginning (removed %s)",
                    out_dir.name, ", ".join(p.name for p in leftovers))
    elif leftovers:
        log.warning("run %s: starting clean; removed %s left by an earlier attempt (--resume continues an "
                    "interrupted run instead)", out_dir.name, ", ".join(p.name for p in leftovers))
    return False


def record_attempt(out_dir: Path, commit: str, resume: bool) -> list[str]:
    """Append this process's commit to ``out_dir/attempts.json`` (started afresh unless the run
    resumes) and return every attempt's commit in order. A resumed run whose earlier attempts left
    no record gets :data:`UNKNOWN_ATTEMPT` first."""
    path = out_dir / ATTEMPTS_FILE
    attempts = json.loads(path.read_text()) if resume and path.exists() else []
    if resume and not attempts:
        attempts = [{"git_commit": UNKNOWN_ATTEMPT, "started": None}]
    attempts.append({"git_commit": commit, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(attempts, indent=2))
    tmp.replace(path)
    return [a["git_commit"] for a in attempts]


def write_failure(path: Path, rid: str, exc: BaseException, commit: str | None) -> None:
    """Atomically write the failure record of run ``rid``: kind, reason, where (epoch and batch
    of a non-finite loss, else null), time, commit and the last frames of the traceback."""
    from benchmark.store import describe_exception

    kind, text, tb = describe_exception(exc)
    terms = getattr(exc, "terms", None)
    if terms is not None:  # strict JSON has no NaN/Infinity: non-finite values as text
        terms = {name: value if np.isfinite(value) else str(value) for name, value in terms.items()}
    record = {"run_id": rid, "status": "failed", "kind": kind, "reason": str(exc), "error": text,
              "epoch": getattr(exc, "epoch", None), "batch": getattr(exc, "batch", None), "loss_terms": terms,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": commit, "traceback": tb}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str, allow_nan=False))
    tmp.replace(path)


def native_phase(cfg: DictConfig, split: SplitData, denoiser: Denoiser, out_dir: Path, runs_root: Path, rid: str,
                 commit: str | None, resume: bool) -> tuple[NativeOutcome, int | None]:
    """A transfer run's native phase (:mod:`benchmark.native_cache`): the denoiser trained with its
    native backbone and its decisions on the training sequences (and on the evaluation histories
    when it denoises them), read from the shared cache when another run stored it, else trained
    here and stored. Returns the outcome and the epochs the native fit resumed from a checkpoint
    (None when it was read). The exports run in the order the run applies them (train, valid,
    test) and nothing between them draws from the global generators, so the generator state
    after them is the one a run that exported step by step would reach."""
    cache = NativeCache(runs_root, native_key(to_dict(cfg), denoiser.default_native)) if cfg.train.share_native else None
    with cache.claim() if cache is not None else nullcontext():
        shared = cache.load(split.train) if cache is not None else None
        if shared is not None:
            return shared, None
        native, _, _, _, recorder, seconds = train_and_test(cfg, split, denoiser.default_native, denoiser, out_dir,
                                                            rid, resume)
        histories = {"train": split.train}
        if denoiser.denoises_eval_inputs:
            histories.update(valid=split.valid.history, test=split.test.history)
        decisions = {stage: d for stage, history in histories.items()
                     if (d := denoiser.export(native, history)) is not None}
        outcome = NativeOutcome(decisions, denoiser.report() or None, rng_state(),
                                {"run_id": rid, "git_commit": commit, "seconds": seconds,
                                 "torch_threads": torch.get_num_threads(), "backbone": denoiser.default_native,
                                 "epochs": len(recorder.epoch_seconds),
                                 "best_epoch": int(getattr(native, "best_epoch", -1))})
        if cache is not None:
            cache.save(outcome)
        return outcome, recorder.restored_epochs


def _execute_unlocked(cfg: DictConfig, rid: str, out_dir: Path, runs_root: Path, commit: str | None,
                      attempt_commits: list[str], resume: bool = False) -> RunResult:
    from benchmark.data.build import build_split_data
    from benchmark.detection import detection_from_denoised, popularity_buckets
    from benchmark.export import save_denoised

    result_file = out_dir / "result.json"
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # wall times depend on what else the machine runs: record the context they were taken in
    timings: dict[str, float] = {"torch_threads": float(torch.get_num_threads()),
                                 "load_average_start": _load_average(), "speed_probe_start": speed_probe_seconds()}

    t0 = time.perf_counter()
    split = build_split_data(OmegaConf.to_object(cfg.dataset))
    # popularity buckets of the original training data (IADSR Fig. 1), fixed before any denoising
    item_buckets = popularity_buckets(np.bincount(split.train.items, minlength=split.n_items + 1))
    if cfg.data_source:
        split = load_data_source(cfg.data_source, runs_root, split)
    validate_against_data(cfg, split.n_items)
    timings["data_seconds"] = time.perf_counter() - t0

    resources = Resources(split, seed=int(cfg.seed), progress=bool(cfg.logging.progress))
    denoiser = make_denoiser(to_dict(cfg.denoiser), resources)
    backbone_name = cfg.backbone.name
    backbone_cls = BACKBONES.get(backbone_name)
    detection = None
    mode = "plain"
    train_denoiser: Denoiser = denoiser
    report = lambda: denoiser.report() or None  # noqa: E731
    resumed_from: dict[str, int] = {}
    native_fit: dict | None = None
    made_by = {"run_id": rid, "config": to_dict(cfg), "git_commit": commit}  # provenance of exported data

    t0 = time.perf_counter()
    if denoiser.level == "data":
        mode = "data"
        denoiser.fit(split.train, resources)
        decisions = denoiser.denoise(split.train)
        detection = detection_from_denoised(split, decisions)
        save_denoised(out_dir / "denoised", split, decisions, made_by)
        split = split.with_train(decisions.apply(), denoised_by=cfg.denoiser.name)
        split = denoise_eval_histories(denoiser.denoise_eval, split, out_dir / "denoised", made_by)
        train_denoiser = make_denoiser({"name": "none"}, resources)
        # the backbone starts from the run's seed whether the method's work was computed now
        # (LLM4DSR's fine-tuning draws random numbers) or read from its cache
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    elif denoiser.level == "train" and not denoiser.supports_backbone(backbone_name):
        native_name = denoiser.default_native
        mode = transfer_mode(native_name)
        phase, restored = native_phase(cfg, split, denoiser, out_dir, runs_root, rid, commit, resume)
        if restored is None:
            log.info("run %s: native %s phase taken from run %s", rid, native_name, phase.source.get("run_id"))
            timings["native_shared_from_seconds"] = float(phase.source.get("seconds", 0.0))
            made_by = {**made_by, "native_phase_from": phase.source}  # the export's manifest names it
        else:
            resumed_from[native_name] = restored
        native_fit = {"backbone": native_name, "epochs": phase.source.get("epochs"),
                      "best_epoch": phase.source.get("best_epoch")}
        decisions = phase.decisions["train"]
        detection = detection_from_denoised(split, decisions)
        save_denoised(out_dir / "denoised", split, decisions, made_by)
        split = split.with_train(decisions.apply(), denoised_by=f"{cfg.denoiser.name} ({native_name})")
        if denoiser.denoises_eval_inputs:
            split = denoise_eval_histories(phase.decide, split, out_dir / "denoised", made_by)
        set_rng_state(phase.rng)  # where the native phase left the generators, trained here or read
        report = lambda: phase.report  # noqa: E731 (the denoiser object was not trained when it was read)
        train_denoiser = make_denoiser({"name": "none"}, resources)
    elif denoiser.level == "train":
        mode = "joint"
    timings["denoise_seconds"] = time.perf_counter() - t0

    model, valid, test, test_opt, recorder, fit_seconds = train_and_test(cfg, split, backbone_name, train_denoiser,
                                                                         out_dir, rid, resume, item_buckets)
    resumed_from[backbone_name] = recorder.restored_epochs
    timings["fit_seconds"] = fit_seconds
    timings["epoch_seconds_mean"] = float(np.mean(recorder.epoch_seconds)) if recorder.epoch_seconds else 0.0
    timings["load_average_end"] = _load_average()
    timings["speed_probe_end"] = speed_probe_seconds()
    if mode == "joint" and denoiser.exports:
        decisions = denoiser.export(model, split.train)
        detection = detection_from_denoised(split, decisions)
        save_denoised(out_dir / "denoised", split, decisions, made_by)

    result = RunResult(
        run_id=rid,
        config=to_dict(cfg),
        protocol=protocol_of(cfg, split, backbone_cls, mode, train_denoiser),
        valid=valid,
        test=test,
        test_optimistic=test_opt,
        curve=recorder.curve,
        timings=timings,
        detection=detection,
        denoiser_report=report(),
        mode=mode,
        best_epoch=getattr(model, "best_epoch", -1),
        epochs=len(recorder.epoch_seconds),
        git_commit=commit,
        resumed_from={k: v for k, v in resumed_from.items() if v} if resume else {},
        attempt_commits=attempt_commits,
        native=native_fit,
        text_encoders=resources.text_encoder_ids(),
    )
    _write_curve(out_dir / "curve.csv", recorder.curve)
    tmp = result_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2, default=float))
    tmp.replace(result_file)
    for last in out_dir.glob(f"checkpoints/*/{LAST_CHECKPOINT}"):  # finished: nothing left to resume
        last.unlink()
    return result


def _write_curve(path: Path, curve: list[dict[str, float]]) -> None:
    keys = sorted({k for row in curve for k in row}, key=lambda k: (k != "epoch", k))
    lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in curve]
    path.write_text("\n".join(lines) + "\n")


