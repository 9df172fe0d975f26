"""``bench grid FILE``: run every cell of a grid file that is not yet in the result store."""
from __future__ import annotations

import shlex
from pathlib import Path

DEFAULT_STORE = "results"


def not_applicable_line(grid: str, n: int) -> str:
    """The note on cells skipped as not applicable."""
    return (f"grid {grid}: {n} cells not applicable (they cannot run by design, e.g. a text method on data without "
            "text; the store keeps the reason and they are not retried while their data stays the same: a row that "
            "records its data's digest runs again once the data changes; `bench results --drop RUN_ID` clears an "
            "older one)")


def data_changed_line(grid: str, n: int) -> str:
    """The note on not-applicable cells whose data changed since they were recorded."""
    return (f"grid {grid}: {n} cells recorded as not applicable were recorded on other data than the files hold now "
            "(their data digest differs): they run again")


def stale_text_line(grid: str, n: int, redo: bool) -> str:
    """The note on finished cells whose text vectors depended on the text cache's contents."""
    what = ("they run again" if redo else
            "they count as done; --redo-stale-text runs them again")
    return (f"grid {grid}: {n} finished cells of text-vector denoisers were stored before rows named their text "
            f"encoders: their vectors depended on what the text cache held, so they reproduce only against that "
            f"cache; {what}")


def tuning_lines(grid: str, state, held: dict[str, str]) -> list[str]:
    """The dry run's and each round's account of the grid's validation choices (``tune_seeds``);
    ``held``: run id -> ``waiting`` | ``passed`` for the cells the choices hold back."""
    lines = [f"tuning: {choice.describe()}" for choice in state.choices]
    passed, waiting = (sum(why == kind for why in held.values()) for kind in ("passed", "waiting"))
    if passed:
        lines.append(f"grid {grid}: {passed} cells not run: settings validation did not choose "
                     "(their tuning seeds ran)")
    if waiting:
        lines.append(f"grid {grid}: {waiting} cells wait for a validation choice: their group's "
                     "tuning cells have not all finished (a failed tuning cell holds its group until a rerun "
                     "finishes it)")
    return lines


def waiting_estimate_line(waiting, frame) -> str:
    """What the validation choices may add: per tuning group, the waiting cells of one setting
    (the largest such share and its expected time where the store can tell; none when the choice
    falls on a setting whose cells already finished)."""
    from benchmark.grid import estimate_seconds, format_duration
    from benchmark.tuning import group_key, params_key

    expected = estimate_seconds(waiting, frame)
    per_setting: dict[tuple, dict[str, tuple[int, float]]] = {}  # group -> setting -> (cells, seconds)
    for c in waiting:
        settings = per_setting.setdefault(group_key(c), {})
        n, seconds = settings.get(params_key(c.params), (0, 0.0))
        settings[params_key(c.params)] = (n + 1, seconds + (expected[c.run_id].seconds if c.run_id in expected else 0.0))
    most = sum(max(n for n, _ in s.values()) for s in per_setting.values())
    longest = sum(max(t for _, t in s.values()) for s in per_setting.values())
    time = f", ~{format_duration(longest)} one worker" if expected else ""
    unknown = f" ({len(waiting) - len(expected)} waiting cells without an estimate)" if len(expected) < len(waiting) else ""
    return f"after the validation choices: at most {most} more cells to run{time}{unknown}"


def register(sub) -> None:
    p = sub.add_parser("grid", help="run a grid of configurations (resumable; local processes or Ray)",
                       description="Expand configs/grids/NAME.yaml into cells and run the ones missing from the "
                                   "result store. Finished cells are skipped, failed cells are retried unless "
                                   "--skip-failed; Ctrl-C/SIGTERM keeps everything finished.")
    p.add_argument("grid", help="grid file, e.g. configs/grids/ml100k.yaml")
    p.add_argument("overrides", nargs="*", help="key=value applied to every cell (changes run ids), e.g. profile=quick")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their status; run nothing")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"result store directory (default: {DEFAULT_STORE})")
    p.add_argument("--runs-dir", default="runs", help="run directories (default: runs)")
    p.add_argument("--skip-failed", action="store_true", help="do not retry cells with a failure record")
    p.add_argument("--launcher", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=1, help="local: cells in parallel, each in its own process")
    p.add_argument("--ray-address", default=None, help="ray: cluster address (default: start a local instance)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="ray: CPUs reserved per cell")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="ray: GPUs reserved per cell")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per cell (default: all cores, shared among --workers); give each "
                        "grid its share when several run at once (two on 2 cores: --threads 1)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (for logs): a line per finished cell and per training epoch instead")
    p.add_argument("--redo-stale-text", action="store_true",
                   help="also re-run finished cells of text-vector denoisers stored before rows named their text "
                        "encoders (their vectors depended on the text cache's contents); each new row replaces "
                        "the old one, a failure keeps it")
    p.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                   help="run (or list) only matching cells; repeatable; KEY: dataset, noise, backbone, denoiser, seed, "
                        "or a denoiser_params key of the grid")
    p.set_defaults(func=main)


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (stable across machines), else as given."""
    from benchmark.provenance import REPO_DIR

    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_DIR))
    except ValueError:
        return str(path)


def command_line(grid_file: str, overrides: list[str], store: str) -> str:
    """The canonical command recorded with every row (launcher options do not change results)."""
    parts = ["bench", "grid", grid_file, *overrides]
    if store != DEFAULT_STORE:
        parts += ["--store", store]
    return shlex.join(parts)


def main(args) -> int:
    from benchmark.cli import UserError
    from benchmark.grid import (data_changed_ids, estimate_seconds, expand, format_duration, load_grid, plan,
                                run_grid, select)
    from benchmark.store import ResultStore
    from benchmark.tuning import resolve_tuning, stored_outcomes

    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected >= 1")
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: expected >= 0 (0 = all cores, shared among the workers)")
    if args.launcher == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise UserError("--launcher ray needs Ray: pip install 'dsr-bench[ray]' (or 'ray[default]')") from exc
    spec = load_grid(args.grid)
    try:
        # logging keys are not part of run ids, so silencing the cells' bars keeps every cell's id
        quiet = ["logging.progress=false", "logging.epoch_lines=true"] if args.no_progress else []
        every = expand(spec, list(args.overrides) + quiet)
        cells = select(every, args.only)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    store = ResultStore(args.store)

    def tuned():
        """The validation choices the store allows now, made over every cell (--only may leave out a
        group's tuning seeds, whose results still decide); the selected cells they keep; and the
        selected cells they hold back (``run id -> "waiting" | "passed"``). A finished cell is
        never held: its row stands whatever the choice."""
        outcomes = stored_outcomes(store, every) if spec.tune_seeds else {}
        state = resolve_tuning(every, spec.tune_seeds, outcomes)
        finished = {rid for rid, row in outcomes.items() if row["status"] == "ok"}
        held = {**{c.run_id: "waiting" for c in state.waiting}, **{c.run_id: "passed" for c in state.passed_over}}
        selected = {c.run_id for c in cells}
        held = {rid: why for rid, why in held.items() if rid not in finished and rid in selected}
        return state, [c for c in cells if c.run_id not in held], held

    remote = args.launcher == "ray" and args.ray_address
    runs_dir = args.runs_dir if remote else str(Path(args.runs_dir).resolve())  # workers may have another cwd
    if args.dry_run:
        from benchmark.run import checkpointed_epochs  # reads checkpoints: torch, only for the listing

        state, runnable, held = tuned()
        stale = store.stale_text_ids() & {c.run_id for c in cells}
        data_changed = data_changed_ids(runnable, store)
        p = plan(runnable, {rid: s for rid, s in store.statuses().items() if rid not in data_changed},
                 args.skip_failed, runs_dir, stale if args.redo_stale_text else set())
        status = {**{c.run_id: "failed" for c in p.failed}, **{c.run_id: "done" for c in p.done},
                  **{c.run_id: "stale" for c in p.done if c.run_id in stale},
                  **{c.run_id: "n/a" for c in p.not_applicable}, **{c.run_id: "running" for c in p.running},
                  **held}
        ok_rows = store.frame("ok")
        expected = estimate_seconds(p.todo, ok_rows)
        for c in cells:
            guess = ""
            if c.run_id in expected:
                estimate = expected[c.run_id]
                guess = f"  ~{format_duration(estimate.seconds)}{' (scaled)' if estimate.scaled else ''}"
            if c.run_id in held:
                guess = ""
            elif c.run_id not in status:  # an interrupted cell continues from its checkpoint
                done = checkpointed_epochs(Path(runs_dir) / c.run_id)
                guess += "".join(f"  (resumes {name} after {n} epochs)" for name, n in done.items())
            print(f"{c.index:4d}  {c.run_id}  {status.get(c.run_id, 'todo'):7s}  {c.label}{guess}")
        held_part = f"{len(held)} held by tuning, " if spec.tune_seeds else ""
        print(f"\ngrid {spec.name}: {len(cells)} cells; {held_part}{len(p.done)} done, {len(p.running)} running in another "
              f"process, {len(p.failed)} failed ({'skipped' if args.skip_failed else 'will retry'}), "
              f"{len(p.todo)} to run; store {args.store}")
        if p.not_applicable:
            print(not_applicable_line(spec.name, len(p.not_applicable)))
        if data_changed:
            print(data_changed_line(spec.name, len(data_changed)))
        for line in tuning_lines(spec.name, state, held):
            print(line)
        if stale:
            print(stale_text_line(spec.name, len(stale), args.redo_stale_text))
        if p.todo and not expected:
            print("expected time: no finished runs with the same dataset, backbone, denoiser, protocol, "
                  "training instances, stopping metric and epoch budget, nor a plain run to scale, to estimate from")
        elif p.todo:
            total = sum(e.seconds for e in expected.values())
            scaled = sum(e.scaled for e in expected.values())
            print(f"expected time of the cells to run: ~{format_duration(total)} for {len(expected)} of {len(p.todo)}, "
                  f"one worker ({len(expected) - scaled} from the median wall time of finished runs with the same "
                  f"dataset, backbone, denoiser, protocol, training instances, stopping metric and epoch budget; {scaled} scaled: "
                  f"the matching plain runs' time times the denoiser's cost ratio where both ran; {len(p.todo) - len(expected)} with "
                  f"neither)")
        waiting = [c for c in cells if held.get(c.run_id) == "waiting"]
        if waiting:
            print(waiting_estimate_line(waiting, ok_rows))
        return 0
    grid_file = display_path(args.grid)
    state, runnable, held = tuned()
    attempted: set[str] = set()
    failed = False
    while True:  # with tune_seeds: again for the other seeds of every group whose choice the last round made
        batch = [c for c in runnable if c.run_id not in attempted]
        attempted |= {c.run_id for c in batch}
        summary = run_grid(
            batch, args.store, runs_dir, grid_name=spec.name, grid_file=grid_file,
            command=command_line(grid_file, list(args.overrides), args.store), launcher=args.launcher,
            workers=args.workers, ray_address=args.ray_address, cpus_per_cell=args.cpus_per_cell,
            gpus_per_cell=args.gpus_per_cell, skip_failed=args.skip_failed, progress=not args.no_progress,
            torch_threads=args.threads, redo_stale_text=args.redo_stale_text,
        )
        report(spec.name, summary, args.store)
        failed = failed or bool(summary.failed)
        if summary.interrupted:
            return 130
        if not spec.tune_seeds:
            break
        state, runnable, held = tuned()
        for line in tuning_lines(spec.name, state, held):
            print(line)
        unlocked = [c for c in runnable if c.run_id not in attempted]
        if not unlocked:
            break
        print(f"grid {spec.name}: {len(unlocked)} cells of the settings chosen on validation follow")
    return 1 if failed else 0


def report(grid: str, summary, store: str) -> None:
    """What one ``run_grid`` call ran and skipped."""
    print(f"grid {grid}: ran {len(summary.ran)} cells ({len(summary.ok)} ok, {len(summary.failed)} failed, "
          f"{len(summary.not_applicable)} not applicable); skipped {summary.skipped_done} done, "
          f"{summary.skipped_failed} failed, {len(summary.busy)} running in another process; store {store}")
    if summary.skipped_not_applicable:
        print(not_applicable_line(grid, summary.skipped_not_applicable))
    if summary.stored_elsewhere:
        print(f"grid {grid}: {len(summary.stored_elsewhere)} cells were finished and stored by another "
              f"process while this one ran ({','.join(summary.stored_elsewhere)})")
    print("ran: " + ",".join(summary.ran))
    if summary.busy:
        print(f"grid {grid}: {len(summary.busy)} cells were left to the processes running them "
              f"({','.join(summary.busy)}); they store their own results")
    if summary.interrupted:
        print(f"grid {grid}: interrupted; finished cells are stored, run the same command to resume")
