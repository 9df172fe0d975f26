"""Suggestions and grounding (specs/llm4dsr.md §5).

For each item chosen for replacement the model continues the prompt
``... Noise Items: '<title>'`` newline ``Suggested Replacements: `` greedily (batched
``generate``); the first line of the continuation, stripped of quotes and spaces, is the
suggestion. Grounding maps it to a catalogue item: an exact title match wins (the first id with
that title); otherwise the nearest item by text-embedding cosine (``encoder``, the suite's
sentence encoder by default) or, as in the reference code, by L2 distance between last-token
states of the base LLM without adapter (``llm_last_token``).
"""
from __future__ import annotations

import numpy as np
import torch

from denoisers.llm4dsr.model import last_token_states, left_pad, length_batches, tokenize


def clean_suggestion(text: str) -> str:
    """First line of a generated continuation without surrounding quotes/spaces."""
    line = text.split("\nSuggested Replacements: ")[-1].strip("\n").split("\n")[0]
    return line.strip().strip("'").strip('"').strip()


@torch.no_grad()
def generate_suggestions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, device,
                         progress=None) -> list[str]:
    """Greedy continuations of ``prompts`` (one beam), cleaned with :func:`clean_suggestion`."""
    ids = tokenize(tokenizer, prompts)
    out: list[str] = [""] * len(prompts)
    for batch in length_batches(np.array([len(x) for x in ids]), batch_size):
        input_ids, mask, _ = left_pad([ids[i] for i in batch], tokenizer.pad_token_id, device)
        gen = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(gen[:, input_ids.shape[1]:], skip_special_tokens=True)
        for i, text in zip(batch.tolist(), texts):
            out[i] = clean_suggestion(text)
        if progress is not None:
            progress(len(batch))
    return out


def exact_title_ids(item_text: list[str], texts: list[str]) -> np.ndarray:
    """int64 ``[n]``: the smallest item id whose title equals each text exactly, 0 if none."""
    titles = np.asarray(item_text[1:], dtype=object)
    uniq, first = np.unique(titles, return_index=True)  # first occurrence = smallest id
    lookup = dict(zip(uniq.tolist(), (first + 1).tolist()))
    lookup.pop("", None)
    return np.array([lookup.get(t, 0) for t in texts], dtype=np.int64)


def nearest_by_cosine(query: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Row of ``table [N+1, D]`` (row 0 and all-zero rows excluded) with the highest cosine to
    each query ``[n, D]``: int64 ``[n]``."""
    def unit(x):
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(n, 1e-12)

    sims = unit(np.asarray(query, np.float32)) @ unit(np.asarray(table, np.float32)).T
    sims[:, 0] = -np.inf
    sims[:, np.linalg.norm(table, axis=1) == 0] = -np.inf
    return sims.argmax(1).astype(np.int64)


def nearest_by_l2(query: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Row of ``table [N+1, D]`` (row 0 excluded) nearest in L2 to each query: int64 ``[n]``."""
    q = np.asarray(query, np.float64)
    t = np.asarray(table, np.float64)
    d = (q * q).sum(1)[:, None] - 2 * q @ t.T + (t * t).sum(1)[None, :]
    d[:, 0] = np.inf
    return d.argmin(1).astype(np.int64)


@torch.no_grad()
def llm_embeddings(model, tokenizer, texts: list[str], batch_size: int, device) -> np.ndarray:
    """Last-layer last-token states of the BASE model (adapter disabled when present): ``[n, H]``."""
    ids = tokenize(tokenizer, texts)
    out = None
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else _null()
    with ctx:
        for batch in length_batches(np.array([len(x) for x in ids]), batch_size):
            states = last_token_states(model, *left_pad([ids[i] for i in batch], tokenizer.pad_token_id, device)).cpu().numpy()
            if out is None:
                out = np.zeros((len(texts), states.shape[1]), dtype=np.float32)
            out[batch] = states
    return out if out is not None else np.zeros((0, 1), np.float32)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def ground(suggestions: list[str], item_text: list[str], embed_queries, item_table: np.ndarray,
           metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Item ids ``[n]`` for suggestions and a bool ``[n]`` marking exact-title matches.

    Exact matches bypass ``embed_queries`` (called once on the remaining non-empty texts);
    empty suggestions give id 0 (no grounded item)."""
    ids = exact_title_ids(item_text, suggestions)
    exact = ids > 0
    rest = np.flatnonzero(~exact & np.array([bool(s) for s in suggestions], dtype=bool))
    if len(rest):
        vecs = embed_queries([suggestions[i] for i in rest])
        ids[rest] = nearest_by_cosine(vecs, item_table) if metric == "cosine" else nearest_by_l2(vecs, item_table)
    return ids, exact
