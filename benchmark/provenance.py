"""Library versions, git commit and machine facts recorded with every result."""
from __future__ import annotations

import os
import platform
import subprocess
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
