"""Uncertainty estimation (specs/llm4dsr.md §4, §6): first-token noise probabilities, the
quantile threshold eta and the "at most b changes per unit" selection.

One forward pass per unit prompt (ending in the response prefix ``Noise Items: '``): the
log-softmax at the last position is the distribution of the first token of the noise answer;
item k of the unit scores ``log P(first_token(title_k))``. Items sharing a first token share
a score. No per-item generation.
"""
from __future__ import annotations

import numpy as np
import torch

from denoisers.llm4dsr.data import Units
from denoisers.llm4dsr.model import last_position_logprobs, left_pad, length_batches, tokenize


def first_token_ids(tokenizer, item_text: list[str]) -> np.ndarray:
    """int64 ``[N+1]``: the first token of each title tokenised on its own (no special tokens;
    equal to index 1 of the reference's BOS-prefixed tokenisation); -1 for empty titles."""
    out = np.full(len(item_text), -1, dtype=np.int64)
    nonempty = [i for i, t in enumerate(item_text) if t]
    if nonempty:
        enc = tokenizer([item_text[i] for i in nonempty], add_special_tokens=False)["input_ids"]
        out[nonempty] = [ids[0] if ids else -1 for ids in enc]
    return out


def score_units(model, tokenizer, prompts: list[str], units: Units, items: np.ndarray, first_tok: np.ndarray,
                batch_size: int, device, progress=None) -> np.ndarray:
    """Noise log-probabilities of every unit entry: float32 ``[len(units.flat)]`` aligned with
    ``units.flat`` (untitled items: -inf).

    ``prompts[u]`` is unit u's scoring prompt. Prompts are batched by token length; one forward
    pass per batch, then one gather ``logprobs[b, first_tok[item]]``."""
    ids = tokenize(tokenizer, prompts)
    tok = first_tok[items[units.flat]]  # [m]
    tok_mat = units.padded(np.where(tok >= 0, tok, 0))  # [U, W]
    out = np.zeros((units.n_units, tok_mat.shape[1]), dtype=np.float32)
    tok_t = torch.from_numpy(tok_mat)
    for batch in length_batches(np.array([len(x) for x in ids]), batch_size):
        logp = last_position_logprobs(model, *left_pad([ids[i] for i in batch], tokenizer.pad_token_id, device))
        out[batch] = torch.gather(logp.cpu(), 1, tok_t[torch.from_numpy(batch)]).numpy()
        if progress is not None:
            progress(len(batch))
    flat_scores = out[units.unit_of, units.slot_of]
    return np.where(tok >= 0, flat_scores, -np.inf).astype(np.float32)


def quantile_threshold(scores: np.ndarray, q: float) -> float:
    """eta = the q-quantile of all finite scores of a split (a quantile, not a probability)."""
    finite = scores[np.isfinite(scores)]
    return float(np.quantile(finite, q)) if len(finite) else float("inf")


def select_top_b(units: Units, scores: np.ndarray, eta: float, b: int) -> np.ndarray:
    """bool ``[len(units.flat)]``: entries with score > eta that rank among the b highest of
    their unit (ties: the earlier position first). At most b per unit."""
    unit = units.unit_of
    order = np.lexsort((np.arange(len(scores)), -scores, unit))
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(len(scores)) - units.offsets[:-1][unit[order]]
    return (scores > eta) & (rank < b)
