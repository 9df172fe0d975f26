"""Console tables for run results."""
from __future__ import annotations


def metric_table(rows: dict[str, dict[str, float]], ks: list[int], names=("hr", "ndcg")) -> str:
    """Markdown table: one row per entry of ``rows`` (label -> metrics), columns metric@K."""
    cols = [f"{m}@{k}" for m in names for k in ks]
    out = ["| | " + " | ".join(c.upper().replace("HR", "HR").replace("NDCG", "NDCG") for c in cols) + " |",
           "|---|" + "---:|" * len(cols)]
    for label, metrics in rows.items():
        out.append(f"| {label} | " + " | ".join(f"{metrics[c]:.4f}" if c in metrics else "—" for c in cols) + " |")
    return "\n".join(out)


def protocol_lines(protocol: dict) -> str:
    return "\n".join(f"  {k}: {v}" for k, v in protocol.items())


def describe_resumed(resumed_from: dict[str, int]) -> str:
    """``RunResult.resumed_from`` in words, in training order: ``"bert4rec after epoch 9, sasrec
    after epoch 2"`` (the last epoch each fit took from its checkpoint, 0-based)."""
    return ", ".join(f"{name} after epoch {n - 1}" for name, n in resumed_from.items())
