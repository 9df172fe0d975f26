"""LLM4DSR text side: scored units, prompts and the self-supervised instruction data.

A *unit* is one item sequence the LLM judges in one prompt (specs/llm4dsr.md §4, §9): under a
window split a training row is already a window of <= 11 items; under leave-one-out a long
training row is cut from its end into consecutive chunks of ``window`` items (every position
is scored exactly once), and an evaluation history contributes its last ``window`` items.
Units are stored CSR-style as flat indices into the source ``Sequences.items``.

Prompts follow the reference's Alpaca template (§2): the instruction, the input
``User Interaction Sequence: "t1", "t2", ...`` and a response. Self-supervised answers are
``Noise Items: "<random title>"`` newline ``Suggested Replacements: "<original title>"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.data.sequences import Sequences

INSTRUCTION = (
    "You are to analyze a list of item titles provided by a user. Your task is to identify any item(s) "
    "that do not align with the main interests reflected by the majority of the items. After identifying "
    "these noise items, suggest alternative items that better match the user's interests."
)
TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
QUOTES = {"single": "'", "double": '"'}


@dataclass
class Units:
    """Sequences to judge, as flat indices into a source ``Sequences``.

    Attributes:
        flat: int64 ``[m]`` source positions, unit by unit, oldest first within a unit.
        offsets: int64 ``[n_units + 1]``; unit u is ``flat[offsets[u]:offsets[u+1]]``.
    """

    flat: np.ndarray
    offsets: np.ndarray

    @property
    def n_units(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def unit_of(self) -> np.ndarray:
        """int64 ``[m]``: the unit of every entry of ``flat``."""
        return np.repeat(np.arange(self.n_units), self.lengths)

    @property
    def slot_of(self) -> np.ndarray:
        """int64 ``[m]``: the index of every entry inside its unit."""
        return np.arange(len(self.flat)) - np.repeat(self.offsets[:-1], self.lengths)

    def take(self, unit_ids: np.ndarray) -> "Units":
        """The sub-collection of units ``unit_ids`` (same source positions)."""
        unit_ids = np.asarray(unit_ids, dtype=np.int64)
        lengths = self.lengths[unit_ids]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        return Units(self.flat[np.repeat(self.offsets[unit_ids], lengths) + within], offsets)

    def padded(self, entry_values: np.ndarray, fill: int = 0) -> np.ndarray:
        """Values aligned with ``flat`` (``[m]``) as a right-padded ``[n_units, max_len]`` matrix."""
        values = np.asarray(entry_values)
        width = int(self.lengths.max(initial=0))
        out = np.full((self.n_units, width), fill, dtype=values.dtype)
        out[self.unit_of, self.slot_of] = values
        return out


def chunk_units(seqs: Sequences, window: int) -> Units:
    """Every position of ``seqs`` in exactly one unit: rows cut from their end into chunks of
    ``window`` items (the oldest chunk of a row may be shorter). Flat order is preserved."""
    from_end = np.repeat(seqs.lengths, seqs.lengths) - 1 - seqs.position_in_row
    key = seqs.row_of_position * (int(seqs.lengths.max(initial=0)) // window + 2) - from_end // window
    _, sizes = np.unique(key, return_counts=True)  # key is non-decreasing along flat order
    return Units(np.arange(len(seqs.items), dtype=np.int64), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


def last_window_units(seqs: Sequences, window: int) -> Units:
    """One unit per non-empty row: its last ``window`` positions."""
    keep = seqs.position_in_row >= np.repeat(seqs.lengths - window, seqs.lengths)
    sizes = np.minimum(seqs.lengths, window)
    sizes = sizes[sizes > 0]
    return Units(np.flatnonzero(keep).astype(np.int64), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


def quoted_titles(item_text: list[str]) -> np.ndarray:
    """``[N+1]`` object array of ``"title"`` strings (double quotes, as in the input list)."""
    return np.array([f'"{t}"' for t in item_text], dtype=object)


def input_texts(units: Units, items: np.ndarray, item_text: list[str]) -> list[str]:
    """The ``### Input`` text of every unit: ``User Interaction Sequence: "t1", "t2", ...``."""
    pieces = quoted_titles(item_text)[items[units.flat]]
    bounds = units.offsets
    return ["User Interaction Sequence: " + ", ".join(pieces[bounds[u]:bounds[u + 1]]) for u in range(units.n_units)]


def prompt(input_text: str, response: str = "") -> str:
    """The full prompt: template with the instruction and input, then ``response``."""
    return TEMPLATE.format(instruction=INSTRUCTION, input=input_text) + response


def scoring_prefix(quote: str) -> str:
    """Response prefix whose next token is the first token of the noise item's title."""
    return f"Noise Items: {QUOTES[quote]}"


def suggestion_prefix(noise_title: str, quote: str) -> str:
    q = QUOTES[quote]
    return f"Noise Items: {q}{noise_title}{q}\nSuggested Replacements: "


def answer(noise_title: str, original_title: str) -> str:
    return f'Noise Items: "{noise_title}"\nSuggested Replacements: "{original_title}"'


@dataclass
class InstructionData:
    """Self-supervised fine-tuning examples (§2).

    Attributes:
        prompts: prompt texts (template + corrupted input), one per example.
        answers: target responses.
        unit: int64 ``[S]`` source unit of each example; ``slot``: corrupted index inside it;
        noise_item / original_item: int64 ``[S]``.
    """

    prompts: list[str]
    answers: list[str]
    unit: np.ndarray
    slot: np.ndarray
    noise_item: np.ndarray
    original_item: np.ndarray

    @property
    def texts(self) -> list[str]:
        return [p + a for p, a in zip(self.prompts, self.answers)]


def instruction_data(units: Units, items: np.ndarray, item_text: list[str], n_items: int, samples: int,
                     seed: int) -> InstructionData:
    """Sample ``min(samples, n_units)`` units (without replacement, seeded), replace one uniformly
    chosen position of each by a uniform random item ``1..n_items`` and build prompt/answer pairs.

    Artificial-noise items elsewhere in the unit stay and are not part of the answer."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(units.n_units, size=min(samples, units.n_units), replace=False))
    lengths = units.lengths[chosen]
    slot = (rng.random(len(chosen)) * lengths).astype(np.int64)
    noise_item = rng.integers(1, n_items + 1, size=len(chosen))
    sub_lengths = lengths
    sub_offsets = np.concatenate([[0], np.cumsum(sub_lengths)]).astype(np.int64)
    within = np.arange(sub_offsets[-1]) - np.repeat(sub_offsets[:-1], sub_lengths)
    src = units.flat[np.repeat(units.offsets[chosen], sub_lengths) + within]
    corrupted = items[src].copy()
    hit = sub_offsets[:-1] + slot
    original = corrupted[hit].copy()
    corrupted[hit] = noise_item
    sub = Units(np.arange(len(corrupted), dtype=np.int64), sub_offsets)
    inputs = input_texts(sub, corrupted, item_text)
    titles = item_text
    return InstructionData(
        prompts=[prompt(x) for x in inputs],
        answers=[answer(titles[n], titles[o]) for n, o in zip(noise_item.tolist(), original.tolist())],
        unit=chosen, slot=slot, noise_item=noise_item, original_item=original,
    )
