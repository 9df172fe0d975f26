"""Run grid cells: in this process, in spawned worker processes, or on a Ray cluster.

Every launcher calls :func:`execute_cell` once per cell (a module-level function, so it pickles
for ``spawn`` and Ray) and hands each :class:`CellOutcome` to a callback in the driver, which
writes the store file (so a remote worker needs no access to the store). A cell that raises —
any ``Exception``: a non-finite loss (``FloatingPointError`` from the training step), out of
memory, a bad config — becomes a failed outcome and the other cells go on. With worker
processes, a cell whose process dies (killed, out of memory) breaks the pool: the cells that
were in flight are retried one at a time in a fresh pool, so the one that kills its process
is identified and recorded as failed without failing its neighbours.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from benchmark.config import NotApplicableError
from benchmark.grid import Cell
from benchmark.provenance import REPO_DIR
from benchmark.runlock import RunInProgressError
from benchmark.store import STATUS_FAILED, STATUS_OK, describe_exception

STATUS_BUSY = "busy"  # another live process is running this cell: nothing to record

DEFAULT_EXECUTOR = "benchmark.run:execute"
_ENV_FORWARD = ("BENCH_DATA", "BENCH_CACHE", "WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "WANDB_SILENT",
                "HF_HOME", "TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE")


@dataclass
class CellTask:
    """What a worker needs to run one cell (picklable)."""

    cell: Cell
    runs_dir: str
    # "module:function" called as f(cfg, runs_dir=..., resume=True): a cell that an earlier
    # invocation interrupted continues from its last finished epoch (benchmark.run.execute)
    executor: str = DEFAULT_EXECUTOR
    torch_threads: int = 0  # > 0: torch.set_num_threads in the worker (N workers share the cores)
    # run again if the run directory's finished result predates text-encoder ids (passed as force=True);
    # a result another grid already re-ran names them and is reused
    redo_stale_text: bool = False


@dataclass
class CellOutcome:
    run_id: str
    status: str  # ok | failed | busy
    config: dict
    result: dict | None = None  # RunResult.to_json() when ok
    error: str | None = None
    error_kind: str | None = None
    error_traceback: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _load_executor(path: str) -> Callable:
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"executor {path!r}: expected 'module:function'")
    return getattr(importlib.import_module(module), name)


def _close_wandb() -> None:
    """Finish a W&B run a failed cell left open, so the next cell in this process starts clean."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=1)
        except Exception:  # noqa: BLE001 - cleanup must not mask the cell's own error
            pass


def execute_cell(task: CellTask) -> CellOutcome:
    """Compose the cell's config, run it, and return the outcome; never raises for a failing
    cell (only for KeyboardInterrupt/SystemExit). A cell whose run directory another live
    process is running returns status ``busy`` without touching that directory."""
    from benchmark.config import run_id, to_dict

    t0 = time.perf_counter()
    cell = task.cell
    config: dict = {}
    if task.torch_threads > 0:
        import torch

        torch.set_num_threads(task.torch_threads)
    try:
        cfg = cell.compose()
        config = to_dict(cfg)
        rid = run_id(cfg)
        if rid != cell.run_id:
            raise RuntimeError(f"cell {cell.label}: run id changed from {cell.run_id} (expansion) to {rid} "
                               "(worker); the configs differ between driver and worker")
        extra = {"force": True} if task.redo_stale_text and _stale_text_result(Path(task.runs_dir) / rid) else {}
        result = _load_executor(task.executor)(cfg, runs_dir=task.runs_dir, resume=True, **extra)
        payload = result.to_json() if hasattr(result, "to_json") else dict(result)
        return CellOutcome(cell.run_id, STATUS_OK, config, result=payload, seconds=time.perf_counter() - t0)
    except RunInProgressError as exc:
        return CellOutcome(cell.run_id, STATUS_BUSY, config, error=str(exc), error_kind=type(exc).__name__,
                           seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - fault isolation: every cell failure is recorded
        _close_wandb()
        kind, text, tb = describe_exception(exc)
        extra = {}
        if isinstance(exc, NotApplicableError) and config:
            # the data a cell cannot run on is recorded with it: on other data it may run (bench grid)
            from benchmark.data.build import data_digest_of

            extra["data_digest"] = data_digest_of(config["dataset"])
        return CellOutcome(cell.run_id, STATUS_FAILED, config, error=text, error_kind=kind, error_traceback=tb,
                           seconds=time.perf_counter() - t0, extra=extra)


def _stale_text_result(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished result written before results named their text encoders."""
    try:
        return "text_encoders" not in json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return False


def crashed_outcome(task: CellTask, reason: str, kind: str = "WorkerCrashed") -> CellOutcome:
    """The outcome of a cell whose worker died without returning."""
    config: dict = {}
    try:
        from benchmark.config import to_dict

        config = to_dict(task.cell.compose())
    except Exception:  # noqa: BLE001 - the crash is the error to record
        pass
    return CellOutcome(task.cell.run_id, STATUS_FAILED, config, error=f"{kind}: {reason}", error_kind=kind)


Callback = Callable[[CellTask, CellOutcome], None]


def run_sequential(tasks: list[CellTask], on_done: Callback) -> None:
    """One cell after another in this process."""
    for task in tasks:
        on_done(task, execute_cell(task))


def _terminate_pool(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's worker processes (ours) right away."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_processes(tasks: list[CellTask], on_done: Callback, workers: int) -> None:
    """Up to ``workers`` cells at a time, each in a fresh spawned process (``max_tasks_per_child=1``).

    If a worker process dies, the pool breaks and every in-flight cell is retried alone in a
    fresh pool; a cell that kills its process when alone is recorded as failed."""
    ctx = multiprocessing.get_context("spawn")
    share = max(1, (os.cpu_count() or 1) // workers)  # without this each worker takes every core
    tasks = [t if t.torch_threads else replace(t, torch_threads=share) for t in tasks]
    queue: deque[tuple[CellTask, bool]] = deque((t, False) for t in tasks)  # (task, solo)

    def new_pool(n: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=n, mp_context=ctx, max_tasks_per_child=1)

    pool = new_pool(workers)
    inflight: dict = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < workers:
                task, solo = queue[0]
                if solo and inflight:
                    break
                queue.popleft()
                inflight[pool.submit(execute_cell, task)] = (task, solo)
                if solo:
                    break
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                task, solo = inflight.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool:
                    broken.append((task, solo))
                    continue
                on_done(task, outcome)
            if broken:
                broken += list(inflight.values())  # siblings break with the pool
                inflight.clear()
                _terminate_pool(pool)
                pool = new_pool(workers)
                for task, solo in reversed(broken):
                    if solo:
                        on_done(task, crashed_outcome(task, "the worker process died while running this cell "
                                                             "(killed, or out of memory)"))
                    else:
                        queue.appendleft((task, True))
    except BaseException:
        _terminate_pool(pool)
        raise
    pool.shutdown(wait=True)


def _ray_runtime_env(address: str | None) -> dict[str, Any]:
    env_vars = {k: os.environ[k] for k in _ENV_FORWARD if k in os.environ}
    if address:  # a cluster may run on other machines: ship the code
        return {"working_dir": str(REPO_DIR), "env_vars": env_vars,
                "excludes": [".git", "runs", "results", "wandb", "leaderboards", "*.ckpt", "*.parquet", "__pycache__"]}
    env_vars["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": env_vars}


def run_ray(tasks: list[CellTask], on_done: Callback, address: str | None = None, cpus_per_cell: float = 1.0,
            gpus_per_cell: float = 0.0) -> None:
    """Send every cell to Ray as a task (``ray.remote``, no automatic retries).

    Uses the running Ray instance if this process already called ``ray.init``; otherwise
    connects to ``address`` (``auto``, ``ray://host:10001``, ...) or starts a local instance,
    and shuts it down at the end. A task whose worker dies is recorded as failed."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, runtime_env=_ray_runtime_env(address),
                 log_to_driver=False, configure_logging=False)
        started = True
    remote = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(execute_cell)
    refs = {remote.remote(task): task for task in tasks}
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                task = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    outcome = crashed_outcome(task, str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
                                              kind=type(exc).__name__)
                on_done(task, outcome)
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def launch(tasks: list[CellTask], on_done: Callback, launcher: str = "local", workers: int = 1,
           ray_address: str | None = None, cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0) -> None:
    """Dispatch to the chosen launcher (``local`` or ``ray``)."""
    if launcher == "local":
        if workers <= 1:
            run_sequential(tasks, on_done)
        else:
            run_processes(tasks, on_done, workers)
    elif launcher == "ray":
        run_ray(tasks, on_done, ray_address, cpus_per_cell, gpus_per_cell)
    else:
        raise ValueError(f"launcher {launcher!r}: expected 'local' or 'ray'")

