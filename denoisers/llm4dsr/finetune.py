"""LoRA fine-tuning on the self-supervised instruction data (specs/llm4dsr.md §3) with ``peft``.

Examples are ``prompt + answer + EOS``, cut at ``cutoff`` tokens; labels are all tokens (the
reference) or the answer only (``train_on_prompt: false``). AdamW, linear warm-up for
``warmup_steps`` optimiser steps then linear decay to 0 (the transformers Trainer default),
``batch_size`` examples per optimiser step accumulated over micro-batches of
``micro_batch_size``. Epoch e shuffles with ``seed + e``.

Resumable: after every epoch the LoRA weights, optimiser, scheduler and RNG state are written
atomically to ``<run_dir>/checkpoint.pt``; a later call with the same ``run_dir`` continues
after the last finished epoch. The finished adapter is saved with ``save_pretrained`` in
``<run_dir>/adapter`` with a ``MANIFEST.json`` (checksums of its files, the settings), then a
``DONE`` marker; an adapter whose files no longer match is removed and saved again from the
checkpoint (:func:`is_finished`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.integrity import MANIFEST, IntegrityError, read_manifest, verify_files, write_manifest

_log = logging.getLogger(__name__)


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    epochs: int = 50
    lr: float = 1e-4
    batch_size: int = 128
    micro_batch_size: int = 8
    warmup_steps: int = 20
    cutoff: int = 512
    train_on_prompt: bool = True
    seed: int = 42


def encode_examples(tokenizer, prompts: list[str], answers: list[str], cutoff: int, train_on_prompt: bool):
    """``(input_ids, labels)`` lists: ``prompt + answer`` tokenised (truncated at ``cutoff``), EOS
    appended when there is room; labels -100 on the prompt unless ``train_on_prompt``."""
    full = tokenizer([p + a for p, a in zip(prompts, answers)], add_special_tokens=True, truncation=True,
                     max_length=cutoff)["input_ids"]
    prompt_len = [len(x) for x in tokenizer(prompts, add_special_tokens=True, truncation=True,
                                            max_length=cutoff)["input_ids"]]
    inputs, labels = [], []
    for ids, n_prompt in zip(full, prompt_len):  # list assembly per example, no tensor work
        ids = list(ids)
        if len(ids) < cutoff and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        lab = list(ids) if train_on_prompt else [-100] * min(n_prompt, len(ids)) + ids[n_prompt:]
        inputs.append(ids)
        labels.append(lab)
    return inputs, labels


def _right_pad(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        return max(0.0, (total - step) / max(total - warmup, 1))
    return factor


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def finetune_lora(model, tokenizer, prompts: list[str], answers: list[str], settings: LoraSettings, run_dir: Path,
                  device, stop_after_epoch: int | None = None, log=None):
    """Wrap ``model`` with LoRA and train it; returns ``(peft_model, history)``.

    ``history`` lists ``{"epoch", "loss"}`` per finished epoch (also in ``run_dir/history.json``).
    ``stop_after_epoch``: return after that epoch (0-based) even if more remain (the checkpoint
    lets a later call resume) — for time-boxed jobs and tests."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    peft_model = get_peft_model(model, LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=list(settings.targets),
        bias="none", task_type="CAUSAL_LM"))
    inputs, labels = encode_examples(tokenizer, prompts, answers, settings.cutoff, settings.train_on_prompt)
    n = len(inputs)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, _schedule(settings.warmup_steps, total))
    history: list[dict] = []
    start = 0
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # tensors and plain values only
        set_peft_model_state_dict(peft_model, state["lora"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history = state["history"]
        start = state["epoch"] + 1
    peft_model.train()
    pad = tokenizer.pad_token_id
    for epoch in range(start, settings.epochs):
        order = np.random.default_rng(settings.seed + epoch).permutation(n)
        losses = []
        for s in range(steps_per_epoch):
            step_idx = order[s * settings.batch_size:(s + 1) * settings.batch_size]
            micro = [step_idx[i:i + settings.micro_batch_size] for i in range(0, len(step_idx), settings.micro_batch_size)]
            n_tokens = sum(sum(1 for t in labels[j][1:] if t != -100) for j in step_idx)
            optim.zero_grad(set_to_none=True)
            step_loss = 0.0
            for mb in micro:
                ids = _right_pad([inputs[j] for j in mb], pad).to(device)
                lab = _right_pad([labels[j] for j in mb], -100).to(device)
                mask = _right_pad([[1] * len(inputs[j]) for j in mb], 0).to(device)
                logits = peft_model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                # token-weighted mean over the whole optimiser step (independent of micro-batching)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
                ) / max(n_tokens, 1)
                loss.backward()
                step_loss += float(loss.detach())
            optim.step()
            sched.step()
            losses.append(step_loss)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else 0.0})
        if log is not None:
            log(f"llm4dsr: LoRA epoch {epoch + 1}/{settings.epochs} loss {history[-1]['loss']:.4f}")
        _atomic_torch_save({"lora": get_peft_model_state_dict(peft_model), "optimizer": optim.state_dict(),
                            "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch,
                            "history": history}, ckpt)
        (run_dir / "history.json").write_text(json.dumps(history))
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < settings.epochs - 1:
            peft_model.eval()
            return peft_model, history
    peft_model.eval()
    adapter = run_dir / "adapter"
    peft_model.save_pretrained(str(adapter))
    files = sorted(str(p.relative_to(adapter)) for p in adapter.rglob("*") if p.is_file() and p.name != MANIFEST)
    write_manifest(adapter, files, {"settings": asdict(settings), "examples": n})
    (run_dir / "DONE").write_text(json.dumps({"epochs": settings.epochs, "examples": n}))
    return peft_model, history


def load_adapter(model, run_dir: Path):
    """The finished adapter of ``run_dir`` on top of ``model`` (eval mode)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(run_dir / "adapter"))
    peft_model.eval()
    return peft_model


def is_finished(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a finished adapter that matches its manifest (adapters saved
    before manifests existed are not checked). A changed adapter is removed, with a warning
    line, and False returned: ``finetune_lora`` then saves it again from ``checkpoint.pt``."""
    adapter = run_dir / "adapter"
    if not ((run_dir / "DONE").exists() and adapter.exists()):
        return False
    try:
        manifest = read_manifest(adapter)
        if manifest is not None:
            verify_files(adapter, manifest)
    except IntegrityError as exc:
        _log.warning("%s; removing the LoRA adapter to save it again", str(exc).replace("\n", "; "))
        shutil.rmtree(adapter)
        (run_dir / "DONE").unlink()
        return False
    return True
