"""Library versions, git commit and machine facts recorded with every result."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
GENERATED_DIRS = ("results", "leaderboards")  # committed outputs of bench grid / bench leaderboard, not code
_PACKAGES = ("torch", "pytorch-lightning", "torchmetrics", "numpy", "polars", "omegaconf", "wandb", "transformers", "sentence-transformers", "llm2vec")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    """``<sha>`` or ``<sha>+dirty``; ``unknown`` outside a git checkout. Generated outputs
    (:data:`GENERATED_DIRS`: the result store that grids rewrite while other grids start, and the
    leaderboards made from it) do not make the checkout dirty; any other modified tracked file does."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        excluded = [f":(exclude){d}" for d in GENERATED_DIRS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=REPO_DIR, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (e.g. ``AMD EPYC 7B13``): floating-point kernels, and so the last
    digits of a run's numbers, can differ between CPU families."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}


PROBE_SIZE, PROBE_MATMULS, PROBE_REPEATS = 256, 32, 9


def speed_probe_seconds() -> float:
    """Wall seconds of the fastest of :data:`PROBE_REPEATS` repeats of a fixed CPU workload at the
    current torch thread count: :data:`PROBE_MATMULS` chained float32 products of
    :data:`PROBE_SIZE` × :data:`PROBE_SIZE` matrices (about 1.1 GFLOP; some 20-40 ms per repeat on
    one core of a 2020s server CPU).

    The same code's epochs can take twice as long on one machine as on another; the fastest repeat
    measures the machine with as little as possible of what else runs on it (the load average
    records that), so two runs' epoch times compare like for like only where their probes agree
    (:func:`benchmark.epoch_cost.like_for_like`). Its own generator leaves the global random state,
    and so the run's numbers, untouched."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=gen)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=gen) / PROBE_SIZE ** 0.5
    fastest = float("inf")
    with torch.no_grad():
        for _ in range(PROBE_REPEATS):
            start, x = time.perf_counter(), a
            for _ in range(PROBE_MATMULS):
                x = torch.tanh(x @ b)
            fastest = min(fastest, time.perf_counter() - start)
    return fastest
