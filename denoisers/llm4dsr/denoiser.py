"""LLM4DSR as a data-level denoiser (specs/llm4dsr.md; Wang et al., TOIS 2025).

Stages (each cached on disk under ``cache_dir()/llm4dsr/``, keyed by what it depends on):

1. ``fit``: units of the training split (``data.chunk_units``), self-supervised instruction
   data (``data.instruction_data``), LoRA fine-tuning (``finetune.finetune_lora``; resumable;
   key = model fingerprint + data hash + LoRA/optimiser settings). ``sft_epochs: 0`` uses the
   base model as is.
2. ``denoise`` (training rows) / ``denoise_eval`` (validation/test histories, their last
   ``window`` items): first-token noise log-probabilities in one forward pass per unit
   (``uncertainty.score_units``), eta = the ``q`` quantile of all scores of the split, at most
   ``b`` changes per unit (``uncertainty.select_top_b``); scores are cached by adapter + prompts.
3. Completion: ``llm`` — greedy suggestion per selected item grounded to the catalogue
   (``grounding``); ``delete`` — remove the selected items ("w/o completion"); ``popularity`` —
   replace by an item sampled by training popularity ("w/ popularity completion").

Output: ``DenoisedSequences`` (replacement ids, keep = False only for deletions, score = the
noise log-probability; -inf where a position was not judged).

Scope under leave-one-out (recorded in the report as ``scope``): every training position is
judged inside consecutive chunks of ``window`` items of its row (at most ``b_train`` changes
per chunk); an evaluation history is judged on its last ``window`` items (at most ``b_test``
changes). Evaluation targets are never part of a history, so they can never be rewritten (the
reference's ``protect_target``). A suggestion that is empty after cleaning grounds to nothing
and the flagged item is deleted instead (counted as ``empty_suggestions``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmark.config import ConfigError, cache_dir
from benchmark.data.sequences import DenoisedSequences, Sequences
from benchmark.integrity import npy_array, npy_bytes, read_checked, write_checked
from benchmark.registry import DENOISERS
from denoisers.base import Denoiser
from denoisers.llm4dsr import data as D
from denoisers.llm4dsr.finetune import LoraSettings, finetune_lora, is_finished, load_adapter
from denoisers.llm4dsr.grounding import generate_suggestions, ground, llm_embeddings
from denoisers.llm4dsr.uncertainty import first_token_ids, quantile_threshold, score_units, select_top_b

log = logging.getLogger(__name__)


@dataclass
class LLM4DSRConfig:
    model_path: str = ""  # a local Hugging Face causal LM directory (the paper: Llama-3-8B)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    load_in_8bit: bool = False  # CUDA + bitsandbytes only (the reference trains in 8 bit)
    device: str = "auto"  # auto | cpu | cuda
    window: int = 11  # items per judged unit (leave-one-out rows are cut into such chunks)
    # self-supervised instruction data + LoRA (§2-§3)
    sft_samples: int = 5000
    sft_epochs: int = 50  # 0 = no fine-tuning (base model)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float = 1e-4
    batch_size: int = 128  # examples per optimiser step
    micro_batch_size: int = 8
    warmup_steps: int = 20
    cutoff: int = 512
    train_on_prompt: bool = True
    sft_seed: int = 42
    # uncertainty and rewriting (§4, §6)
    quote: str = "single"  # scoring prompt ends with Noise Items: ' (reference) | double
    score_batch_size: int = 16
    q_train: float = 0.6
    b_train: int = 2
    q_test: float = 0.9
    b_test: int = 1
    denoise_splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])
    # completion and grounding (§5)
    completion: str = "llm"  # llm | delete | popularity
    grounding: str = "encoder"  # encoder (suite text encoder, cosine) | llm_last_token (reference)
    grounding_encoder: str = ""  # '' = the run's text encoder (MiniLM)
    max_new_tokens: int = 64
    gen_batch_size: int = 16
    cache: bool = True  # reuse adapters, scores and suggestions from cache_dir()/llm4dsr
    keep_model: bool = False  # keep the LLM in memory after the last split in denoise_splits


def _validate(cfg: LLM4DSRConfig) -> None:
    where = "denoiser 'llm4dsr'"
    checks = [
        (cfg.window >= 1, f"window={cfg.window}; expected >= 1"),
        (cfg.sft_epochs >= 0 and cfg.sft_samples >= 1, "sft_epochs must be >= 0 and sft_samples >= 1"),
        (0.0 <= cfg.q_train <= 1.0 and 0.0 <= cfg.q_test <= 1.0, "q_train/q_test are quantiles in [0, 1]"),
        (cfg.b_train >= 0 and cfg.b_test >= 0, "b_train/b_test must be >= 0"),
        (cfg.quote in D.QUOTES, f"quote={cfg.quote!r}; expected single or double"),
        (cfg.completion in ("llm", "delete", "popularity"), f"completion={cfg.completion!r}; expected llm, delete or popularity"),
        (cfg.grounding in ("encoder", "llm_last_token"), f"grounding={cfg.grounding!r}; expected encoder or llm_last_token"),
        (set(cfg.denoise_splits) <= {"train", "valid", "test"}, f"denoise_splits={cfg.denoise_splits}; expected a subset of [train, valid, test]"),
        (min(cfg.batch_size, cfg.micro_batch_size, cfg.score_batch_size, cfg.gen_batch_size, cfg.max_new_tokens) >= 1,
         "batch sizes and max_new_tokens must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where}: {message}")


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode() if not isinstance(p, (bytes, str)) else
                 (p if isinstance(p, bytes) else p.encode()))
        h.update(b"\0")
    return h.hexdigest()[:16]


@DENOISERS.register("llm4dsr")
class LLM4DSR(Denoiser):
    """LLM-based data-level denoiser: LoRA-tuned noise identification + grounded replacement."""

    Config = LLM4DSRConfig
    requires = frozenset({"item_text", "text_embeddings", "llm_weights"})
    encoder_fields = ("grounding_encoder",)
    level = "data"

    def __init__(self, cfg=None, resources=None) -> None:
        super().__init__(cfg, resources)
        _validate(self.cfg)
        self._set_model(None)
        self.tokenizer = None
        self.device = None
        self.adapter_id = "base"
        self.stats: dict = {"timings": {}}
        self._first_tok: np.ndarray | None = None
        self._memo: dict[str, dict] = {}  # prompt -> scores / suggestion, for this adapter

    # ------------------------------------------------------------------ helpers
    def _set_model(self, model) -> None:
        """Hold the LLM as a plain attribute, not a submodule: it is no part of the denoiser's
        parameters, state dict or device moves."""
        object.__setattr__(self, "model", model)

    def release(self) -> None:
        """Free the LLM (called after the last split in ``denoise_splits`` unless ``keep_model``)."""
        self._set_model(None)
        if self.device is not None and self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _stage_done(self, stage: str) -> None:
        order = [s for s in ("train", "valid", "test") if s in self.cfg.denoise_splits]
        if not self.cfg.keep_model and order and stage == order[-1]:
            self.release()

    def _cache_root(self) -> Path:
        return cache_dir() / "llm4dsr"

    def _time(self, key: str, t0: float) -> None:
        self.stats["timings"][key] = self.stats["timings"].get(key, 0.0) + time.perf_counter() - t0

    def lora_settings(self) -> LoraSettings:
        c = self.cfg
        return LoraSettings(r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout, targets=list(c.lora_targets),
                            epochs=c.sft_epochs, lr=c.lr, batch_size=c.batch_size, micro_batch_size=c.micro_batch_size,
                            warmup_steps=c.warmup_steps, cutoff=c.cutoff, train_on_prompt=c.train_on_prompt,
                            seed=c.sft_seed)

    # ------------------------------------------------------------------ stage 1: fit
    def fit(self, train: Sequences, resources) -> None:
        from benchmark.text.base import model_fingerprint
        from denoisers.llm4dsr.model import load_causal_lm

        self.resources = resources
        self._memo = {}
        resources.require_text("llm4dsr")
        c = self.cfg
        t0 = time.perf_counter()
        model, self.tokenizer, self.device = load_causal_lm(c.model_path, c.dtype, c.load_in_8bit, c.device)
        self._set_model(model)
        self._first_tok = first_token_ids(self.tokenizer, resources.item_text)
        self._time("load_model", t0)
        self.stats["scope"] = (f"train: every position, in chunks of {c.window} items per row; "
                               f"valid/test: the last {c.window} history items ({', '.join(c.denoise_splits)} denoised)")
        model_id = f"{Path(c.model_path).expanduser().resolve().name}@{model_fingerprint(Path(c.model_path).expanduser())}"
        if c.sft_epochs == 0:
            self.adapter_id = f"{model_id}/base"
            return
        t0 = time.perf_counter()
        units = D.chunk_units(train, c.window)
        sft = D.instruction_data(units, train.items, resources.item_text, resources.n_items, c.sft_samples, c.sft_seed)
        data_hash = _digest(sft.prompts, sft.answers)
        settings = self.lora_settings()
        key = _digest(model_id, data_hash, asdict(settings), c.dtype, c.load_in_8bit)
        run_dir = self._cache_root() / "adapters" / key
        self.adapter_id = f"{model_id}/{key}"
        self.stats.update(sft_examples=len(sft.prompts), adapter_dir=str(run_dir))
        if c.cache and is_finished(run_dir):
            self._set_model(load_adapter(self.model, run_dir))
            self.stats["adapter"] = "loaded from cache"
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not c.cache:  # start over: no resume from an earlier checkpoint
                for stale in ("checkpoint.pt", "DONE"):
                    (run_dir / stale).unlink(missing_ok=True)
            (run_dir / "settings.json").write_text(json.dumps({"model": model_id, "data": data_hash, **asdict(settings)}))
            peft_model, history = finetune_lora(self.model, self.tokenizer, sft.prompts, sft.answers, settings, run_dir,
                                                self.device, log=log.info)
            self._set_model(peft_model)
            self.stats["adapter"] = "trained"
            self.stats["sft_loss"] = [h["loss"] for h in history]
        self._time("finetune", t0)

    # ------------------------------------------------------------------ stage 2-3
    def _check_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError("LLM4DSR: no model loaded; call fit first (the model is released after the last "
                               "split in denoise_splits unless keep_model=true)")

    def score(self, units: D.Units, seqs: Sequences) -> np.ndarray:
        """Noise log-probabilities aligned with ``units.flat``.

        Cached on disk per split (adapter + prompts) and in memory per prompt, so a unit seen in
        two splits (e.g. the last training chunk and the validation history under
        leave-one-out) is scored once."""
        self._check_fitted()
        c = self.cfg
        prefix = D.scoring_prefix(c.quote)
        prompts = [D.prompt(x, prefix) for x in D.input_texts(units, seqs.items, self.resources.item_text)]
        path = self._cache_root() / "scores" / f"{_digest(self.adapter_id, prompts, c.dtype)}.npy"
        cached = read_checked(path) if c.cache else None
        if cached is not None:
            return npy_array(cached)
        memo = self._memo.setdefault("scores", {})
        missing = np.array([u for u, p in enumerate(prompts) if p not in memo], dtype=np.int64)
        if len(missing):
            t0 = time.perf_counter()
            sub = units.take(missing)
            fresh = score_units(self.model, self.tokenizer, [prompts[u] for u in missing], sub, seqs.items,
                                self._first_tok, c.score_batch_size, self.device)
            for u, start, stop in zip(missing.tolist(), sub.offsets[:-1].tolist(), sub.offsets[1:].tolist()):
                memo[prompts[u]] = fresh[start:stop]
            self._time("score", t0)
        scores = np.concatenate([memo[p] for p in prompts]) if prompts else np.zeros(0, np.float32)
        if c.cache:
            write_checked(path, npy_bytes(scores), {"adapter": self.adapter_id, "dtype": c.dtype, "prompts": len(prompts)})
        return scores

    def suggest(self, units: D.Units, seqs: Sequences, entries: np.ndarray) -> list[str]:
        """Generated suggestion texts for the unit entries ``entries`` (indices into units.flat);
        identical prompts (a repeated item in one unit, a unit seen in two splits) are generated once."""
        c = self.cfg
        titles = self.resources.item_text
        inputs = D.input_texts(units, seqs.items, titles)
        unit_of = units.unit_of[entries]
        noise_items = seqs.items[units.flat[entries]]
        prompts = [D.prompt(inputs[u], D.suggestion_prefix(titles[i], c.quote))
                   for u, i in zip(unit_of.tolist(), noise_items.tolist())]
        path = self._cache_root() / "suggestions" / f"{_digest(self.adapter_id, prompts, c.max_new_tokens, c.dtype)}.json"
        cached = read_checked(path) if c.cache else None
        if cached is not None:
            return json.loads(cached)
        memo = self._memo.setdefault("suggestions", {})
        missing = sorted({p for p in prompts if p not in memo})
        if missing:
            t0 = time.perf_counter()
            texts = generate_suggestions(self.model, self.tokenizer, missing, c.max_new_tokens, c.gen_batch_size, self.device)
            memo.update(zip(missing, texts))
            self._time("suggest", t0)
            self.stats["generated"] = self.stats.get("generated", 0) + len(missing)
        out = [memo[p] for p in prompts]
        if c.cache:
            write_checked(path, json.dumps(out).encode("utf-8"),
                          {"adapter": self.adapter_id, "dtype": c.dtype, "max_new_tokens": c.max_new_tokens})
        return out

    def ground(self, suggestions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue ids for suggestion texts and the exact-match flags (see ``grounding``)."""
        res = self.resources
        t0 = time.perf_counter()
        if self.cfg.grounding == "encoder":
            name = self.cfg.grounding_encoder or None
            table = res.text_embeddings if name is None else res.encode_texts(res.item_text, name=name)
            ids, exact = ground(suggestions, res.item_text, lambda t: res.encode_texts(t, name=name), table, "cosine")
        else:
            embed = lambda t: llm_embeddings(self.model, self.tokenizer, t, self.cfg.score_batch_size, self.device)
            table = self._llm_item_table(embed)
            ids, exact = ground(suggestions, res.item_text, embed, table, "l2")
        self._time("ground", t0)
        return ids, exact

    def _llm_item_table(self, embed) -> np.ndarray:
        path = self._cache_root() / "llm_items" / f"{_digest(self.adapter_id.split('/')[0], self.resources.item_text)}.npy"
        cached = read_checked(path) if self.cfg.cache else None
        if cached is not None:
            return npy_array(cached)
        titles = self.resources.item_text
        rows = [i for i, t in enumerate(titles) if t and i > 0]
        vecs = embed([titles[i] for i in rows])
        table = np.full((len(titles), vecs.shape[1]), 1e6, np.float32)  # untitled rows: far away
        table[rows] = vecs
        if self.cfg.cache:
            write_checked(path, npy_bytes(table), {"model": self.adapter_id.split("/")[0], "items": len(titles)})
        return table

    def rewrite(self, seqs: Sequences, units: D.Units, q: float, b: int, stage: str) -> DenoisedSequences:
        """Score, threshold, complete; the decisions for every position of ``seqs``."""
        c = self.cfg
        scores = self.score(units, seqs)
        eta = quantile_threshold(scores, q)
        chosen = select_top_b(units, scores, eta, b)
        entries = np.flatnonzero(chosen)
        flat = units.flat[entries]
        n = len(seqs.items)
        keep = np.ones(n, dtype=bool)
        replacement = np.zeros(n, dtype=np.int64)
        info = {"units": units.n_units, "judged": int(len(units.flat)), "eta": eta, "q": q, "b": b,
                "selected": int(len(entries))}
        if c.completion == "delete":
            keep[flat] = False
        elif c.completion == "popularity":
            freq = np.asarray(self.resources.item_train_frequency, dtype=np.float64)[1:]
            rng = np.random.default_rng([self.resources.seed, {"train": 0, "valid": 1, "test": 2}[stage]])
            replacement[flat] = rng.choice(len(freq), size=len(flat), p=freq / freq.sum()) + 1
        elif len(entries):
            suggestions = self.suggest(units, seqs, entries)
            ids, exact = self.ground(suggestions)
            replacement[flat] = ids
            keep[flat[ids == 0]] = False  # nothing to ground (empty suggestion): delete
            info.update(exact_title=int(exact.sum()), empty_suggestions=int((ids == 0).sum()),
                        unchanged=int((ids == seqs.items[flat]).sum()), examples=suggestions[:5])
        self.stats[stage] = info
        score = np.full(n, -np.inf, dtype=np.float32)
        score[units.flat] = scores
        return DenoisedSequences(seqs, keep=keep, replacement=replacement, score=score,
                                 meta={"stage": stage, **{k: v for k, v in info.items() if k != "examples"}})

    def denoise(self, sequences: Sequences) -> DenoisedSequences:
        if "train" not in self.cfg.denoise_splits:
            self.stats["train"] = {"skipped": True}
            return super().denoise(sequences)
        units = D.chunk_units(sequences, self.cfg.window)
        out = self.rewrite(sequences, units, self.cfg.q_train, self.cfg.b_train, "train")
        self._stage_done("train")
        return out

    def denoise_eval(self, history: Sequences, stage: str) -> DenoisedSequences | None:
        if stage not in self.cfg.denoise_splits:
            return None
        units = D.last_window_units(history, self.cfg.window)
        out = self.rewrite(history, units, self.cfg.q_test, self.cfg.b_test, stage)
        self._stage_done(stage)
        return out

    def report(self) -> dict:
        return {**self.stats, "adapter_id": self.adapter_id}
