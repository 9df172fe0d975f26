"""Several training processes (Lightning DDP on CPU with gloo, or on GPUs).

The datamodule gives each rank its share of the batches (``IndexBatchSampler``: evaluation
shares disjoint and complete, training shares of equal length), so Lightning's distributed
sampler is switched off: it pads every rank to the same size and so counts some evaluation
users twice (the RecBole #1872 trap). Metrics are sum states reduced once at epoch end.

What this module adds around a ``pl.Trainer``:

* :func:`process_count` - how many processes a ``train`` config asks for;
* :func:`check_denoiser_supports_processes` - methods that keep per-user state between epochs
  (IADSR's previous-epoch masks, HSD's schedules, ...) see only their rank's users, so they are
  refused with a clear error instead of training on half of their state;
* :func:`recover_after_spawn` - with a spawning strategy (``ddp_spawn``) the fit runs in child
  processes; the main process gets back the model weights and metrics from Lightning, and the
  per-epoch curve from the last checkpoint here;
* :class:`CloseProcessGroupAtTeardown` - a spawned worker closes its process group itself at the
  end of its fit or test, instead of leaving it to interpreter shutdown.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from benchmark.config import ConfigError

SPAWNING_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def is_spawning(strategy: str) -> bool:
    """Whether ``strategy`` runs each stage in freshly started worker processes."""
    return str(strategy) in SPAWNING_STRATEGIES


def process_count(devices: Any, strategy: str) -> int:
    """Training processes for ``train.devices`` / ``train.strategy`` (1 unless a DDP strategy
    runs on several devices). ``devices`` may be an int, a list of device ids, or "auto"
    (counted as 1: ask for a number to get several processes)."""
    if "ddp" not in str(strategy):
        return 1
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if devices == "auto":
            return 1
        if devices.lstrip("-").isdigit():
            return max(int(devices), 1)
        return len([d for d in devices.split(",") if d.strip()])
    return max(int(devices), 1)


def check_denoiser_supports_processes(denoiser, processes: int) -> None:
    """ConfigError if ``denoiser`` (a class or an instance) cannot train in ``processes`` > 1
    processes: a method that keeps state between epochs outside its parameters (``resume_state``
    overridden) holds it for the users its own rank saw."""
    from denoisers.base import Denoiser

    if processes <= 1:
        return
    cls = denoiser if isinstance(denoiser, type) else type(denoiser)
    if cls.resume_state is not Denoiser.resume_state:
        name = getattr(cls, "registry_name", cls.__name__)
        raise ConfigError(
            f"denoiser '{name}' keeps per-user state between epochs, which each DDP process would hold only for "
            f"its own users; train it in one process (train.devices=1 or train.strategy=auto), "
            f"not {processes} processes"
        )


def recover_after_spawn(strategy: str, recorder, last_checkpoint: Path) -> None:
    """After a fit under a spawning strategy, take the epoch recorder's curve and timings from
    ``last_checkpoint`` (the callbacks ran in the child processes). No-op otherwise."""
    if not is_spawning(strategy) or recorder.curve or not last_checkpoint.exists():
        return
    state = torch.load(last_checkpoint, map_location="cpu", weights_only=True).get("callbacks", {})
    saved = state.get(type(recorder).__qualname__)
    if saved:
        recorder.restore(saved)
        recorder.restored_epochs = 0  # trained in this run, not restored by --resume


def load_tested_weights(strategy: str, model: torch.nn.Module, checkpoint: str | None) -> None:
    """Under a spawning strategy ``trainer.test(ckpt_path=...)`` loads the checkpoint in the
    child processes only; load it into the main process's ``model`` too, so that exports and
    reports after testing use the tested weights, as in a single-process run."""
    if not is_spawning(strategy) or not checkpoint:
        return
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])


class CloseProcessGroupAtTeardown(pl.Callback):
    """End each spawned worker's stage (fit or test) by waiting for every rank and then destroying
    the default process group, so that no rank exits with a live gloo group.

    Lightning destroys the group at exit only for NCCL; a gloo group was left to interpreter
    shutdown. In 2 of some 300 runs of the two-process test one worker aborted ("terminate called
    without an active exception") just after its fit had finished; no stack was captured, and a group
    still live at interpreter shutdown is the likely cause. Add it
    only under a spawning strategy: there every stage runs in fresh processes that initialise their
    own group, whereas under ``ddp`` the same processes go on from fit to test with the group they
    have."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # no rank tears its connections down while a peer still uses them
            dist.destroy_process_group()


def spawn_callbacks(strategy: str) -> list[pl.Callback]:
    """Callbacks a trainer needs under ``strategy``: :class:`CloseProcessGroupAtTeardown` for a
    spawning strategy, none otherwise."""
    return [CloseProcessGroupAtTeardown()] if is_spawning(strategy) else []
