"""Loading a local Hugging Face causal LM for LLM4DSR and running batched forward passes.

Any directory ``AutoModelForCausalLM`` / ``AutoTokenizer`` can load works (the paper uses
Llama-3-8B; tests use a tiny random Llama). A tokenizer without a pad token pads with its EOS
token (always together with an attention mask, and labels/positions ignore padding).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.config import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(path: str, dtype: str = "float32", load_in_8bit: bool = False, device: str = "auto"):
    """``(model, tokenizer, device)`` for the model directory ``path`` (eval mode, left padding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = "denoiser 'llm4dsr'"
    if not path:
        raise ConfigError(f"{where}: set denoiser.model_path=<a local Hugging Face causal LM directory> "
                          "(the paper uses Llama-3-8B; weights are not shipped with the suite)")
    root = Path(path).expanduser()
    if not (root / "config.json").exists():
        raise ConfigError(f"{where}: model_path '{path}' is not a Hugging Face model directory (no config.json)")
    if dtype not in DTYPES:
        raise ConfigError(f"{where}: dtype={dtype!r}; expected one of {', '.join(DTYPES)}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    kwargs: dict = {"torch_dtype": DTYPES[dtype]}
    if load_in_8bit:
        if dev != "cuda":
            raise ConfigError(f"{where}: load_in_8bit=true needs a CUDA device (bitsandbytes); set load_in_8bit=false")
        from transformers import BitsAndBytesConfig

        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": 0})
    tokenizer = AutoTokenizer.from_pretrained(str(root))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(root), **kwargs)
    if not load_in_8bit:
        model.to(dev)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer, torch.device(dev)


def tokenize(tokenizer, texts: list[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids of every text (special tokens as the tokenizer adds them, e.g. BOS)."""
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=max_length is not None, max_length=max_length)
    return enc["input_ids"]


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches of ``batch_size`` with similar lengths (sorted by length; little padding)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids [B, T], attention_mask [B, T], position_ids [B, T])`` left-padded; positions
    count real tokens only, so a prompt's logits do not depend on its batch's padding."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):  # one row copy per sequence of the batch
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), positions.to(device)


@torch.no_grad()
def last_position_logprobs(model, input_ids, mask, positions) -> torch.Tensor:
    """Log-softmax over the vocabulary at the last slot: ``[B, V]`` float32."""
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


@torch.no_grad()
def last_token_states(model, input_ids, mask, positions) -> torch.Tensor:
    """Last layer's hidden state of the last token (left padding): ``[B, H]`` float32."""
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                use_cache=False)
    return out.hidden_states[-1][:, -1, :].float()
