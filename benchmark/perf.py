"""``bench perf``: training/evaluation throughput of backbones and the per-epoch cost of
denoisers relative to the plain backbone, measured side by side in one process.

Training is timed with the same model, datamodule and ``training_step`` a run uses (built by
``benchmark.run.build_model_and_data``), outside the Trainer so that only the step work is
measured. Denoiser and plain epochs alternate over ``reps`` repetitions; the report gives the
median and the spread (min-max). Throughput counts *training targets* per second, so the
one-pass constructions (a target at every position) and per-prefix instances compare.
"""
from __future__ import annotations

import json
import resource
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from benchmark.config import compose, to_dict
from benchmark.data.sequences import SplitData
from benchmark.metrics import target_ranks
from benchmark.perf_reference import build_reference, time_reference
from benchmark.provenance import git_commit, library_versions, machine


@dataclass
class EpochTiming:
    seconds: float
    targets: int
    batches: int

    @property
    def targets_per_second(self) -> float:
        return self.targets / self.seconds if self.seconds else 0.0


@dataclass
class PerfEntry:
    backbone: str
    denoiser: str
    epochs: list[EpochTiming] = field(default_factory=list)
    setup_seconds: float = 0.0  # one-off: embeddings, graphs, LLM scoring, data-level fit

    def median_seconds(self) -> float:
        return statistics.median(e.seconds for e in self.epochs)


def _n_targets(batch: dict[str, torch.Tensor], instances: str) -> int:
    if instances == "windows":
        return int((batch["items"] > 0).sum())
    return int((batch["targets"] > 0).sum())


def time_epoch(model, dm, max_batches: int | None = None, batches: list | None = None) -> EpochTiming:
    """One training epoch (or ``max_batches`` steps) with optimiser updates; ``batches``
    (pre-materialised) bypasses the DataLoader to measure the step alone."""
    model.train()
    opt = model.configure_optimizers()
    source = batches if batches is not None else dm.train_dataloader()
    n_targets = n_batches = 0
    start = time.perf_counter()
    for i, batch in enumerate(source):
        if max_batches is not None and i >= max_batches:
            break
        loss = model.training_step(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_targets += _n_targets(batch, dm.train_instances)
        n_batches += 1
    model.denoiser.on_train_epoch_end(model, 0)
    return EpochTiming(time.perf_counter() - start, n_targets, n_batches)


def draw_batches(dm, max_batches: int | None = None) -> tuple[list, float]:
    """One epoch's (or ``max_batches``) training batches from the DataLoader, and the seconds
    the loader took to produce them (no step runs meanwhile)."""
    start = time.perf_counter()
    batches = [b for _, b in zip(range(max_batches or 10**9), dm.train_dataloader())]
    return batches, time.perf_counter() - start


@torch.no_grad()
def time_full_ranking(model, dm) -> tuple[float, int]:
    """Seconds to score all test users against all items and rank their targets."""
    model.eval()
    start = time.perf_counter()
    n = 0
    with torch.inference_mode():  # as in Lightning's test loop: no autograd graph
        for batch in dm.test_dataloader():
            scores = model._eval_scores(batch, "test")
            target_ranks(scores, batch["targets"])
            n += len(batch["targets"])
    return time.perf_counter() - start, n


def _build(cfg: DictConfig, split: SplitData, backbone: str, denoiser_name: str):
    from benchmark.resources import Resources
    from benchmark.run import build_model_and_data
    from denoisers.base import make_denoiser

    torch.manual_seed(int(cfg.seed))
    resources = Resources(split, seed=int(cfg.seed))
    start = time.perf_counter()
    section = to_dict(compose(backbone=backbone, denoiser=denoiser_name, dataset=cfg.dataset.name).denoiser)
    denoiser = make_denoiser(section, resources)
    data_split = split
    if denoiser.level == "data":
        denoiser.fit(split.train, resources)
        data_split = split.with_train(denoiser.denoise(split.train).apply())
        denoiser = make_denoiser({"name": "none"}, resources)
    model, dm = build_model_and_data(cfg, data_split, backbone, denoiser)
    model.prepare_split(data_split)  # what the Trainer's setup would do (e.g. DCRec's graphs)
    return model, dm, time.perf_counter() - start


def check_standalone(backbones: list[str], standalone: list[str]) -> None:
    """ValueError unless every standalone model is one (its class names ``compared_with``) and the
    backbone it is compared with is among ``backbones``."""
    from benchmark.sections import compared_with

    for m in standalone:
        other = compared_with(m)
        if other is None:
            raise ValueError(f"{m!r} is not a standalone model: no registered backbone of that name is compared "
                             f"with another (expected e.g. fmlp or dcrec)")
        if other not in backbones:
            raise ValueError(f"{m!r} is timed beside {other!r}, which the backbones ({', '.join(backbones)}) do not list")


def measure(cfg: DictConfig, split: SplitData, backbones: list[str], denoisers: list[str], reps: int = 3,
            max_batches: int | None = None, standalone: list[str] = ()) -> dict:
    """Side-by-side measurements; returns the JSON-able report dict.

    ``denoisers`` are timed beside each backbone's plain epochs; ``standalone`` models (FMLP-Rec,
    DCRec: backbones that denoise by design) beside the backbone they are compared with
    (their class's ``compared_with``), which must be among ``backbones``. A denoiser that cannot run
    by design (:class:`~benchmark.config.NotApplicableError`: item text on Sports, a loss the backbone
    cannot train) is listed under ``not_applicable`` with the reason."""
    from benchmark.config import NotApplicableError
    from benchmark.sections import compared_with

    check_standalone(backbones, standalone)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    report: dict = {"dataset": cfg.dataset.name, "n_users": split.n_users, "n_items": split.n_items,
                    "train_interactions": int(len(split.train.items)), "reps": reps, "max_batches": max_batches,
                    "backbones": {}, "denoisers": []}
    from benchmark.registry import DENOISERS

    report["transfer_only"], report["not_applicable"] = [], []
    for backbone in backbones:
        built = {"none": _build(cfg, split, backbone, "none")}
        for name in denoisers:
            native = DENOISERS.get(name).native_backbones
            if native is not None and backbone not in native:
                # trained natively, then the plain backbone on its exported data: no joint epoch to time
                report["transfer_only"].append({"backbone": backbone, "denoiser": name, "native": list(native)})
                continue
            try:
                built[name] = _build(cfg, split, backbone, name)
            except NotApplicableError as exc:
                report["not_applicable"].append({"backbone": backbone, "denoiser": name, "reason": str(exc)})
        own = [m for m in standalone if compared_with(m) == backbone]
        built.update({m: _build(cfg, split, m, "none") for m in own})
        names = list(built)
        entries = {name: PerfEntry(backbone, name, setup_seconds=b[2]) for name, b in built.items()}
        model, dm, _ = built["none"]
        in_memory: list[EpochTiming] = []
        loader_seconds: list[float] = []
        reference = build_reference(backbone, asdict(model.cfg), split.n_items, int(model.max_len))
        reference_tps: list[float] = []
        for _ in range(reps):  # alternate plain and denoiser epochs
            for name, (m, d, _) in built.items():
                entries[name].epochs.append(time_epoch(m, d, max_batches))
            # the same batches twice over: drawn by the loader, then stepped from memory, so the
            # loader's cost is measured on exactly the batches (widths, lengths) the step saw
            batches, seconds = draw_batches(dm, max_batches)
            in_memory.append(time_epoch(model, dm, max_batches, batches=batches))
            loader_seconds.append(seconds)
            if reference is not None:  # a plain PyTorch loop on the same in-memory batches
                ref_seconds, ref_targets = time_reference(reference, batches)
                reference_tps.append(ref_targets / ref_seconds if ref_seconds else 0.0)
        eval_seconds, n_eval = time_full_ranking(model, dm)
        plain = entries["none"]
        best = max(plain.epochs, key=lambda e: e.targets_per_second)
        scale = dm.n_train_targets / best.targets if max_batches is not None and best.targets else 1.0  # extrapolate a cut epoch
        report["backbones"][backbone] = {
            "train_instances": dm.train_instances,
            "seconds_per_epoch": plain.median_seconds() * scale,
            "epoch_spread": [min(e.seconds for e in plain.epochs) * scale, max(e.seconds for e in plain.epochs) * scale],
            "targets_per_epoch": best.targets,
            "targets_per_second": statistics.median(e.targets_per_second for e in plain.epochs),
            "step_only_targets_per_second": statistics.median(e.targets_per_second for e in in_memory),
            # the loader runs in the training process (num_workers 0): its time adds to the step's
            "loader_overhead": statistics.median(t / e.seconds for t, e in zip(loader_seconds, in_memory) if e.seconds),
            "eval_users": n_eval,
            "eval_seconds": eval_seconds,
            "eval_users_per_second": n_eval / eval_seconds if eval_seconds else 0.0,
        }
        if reference_tps:
            report["backbones"][backbone]["reference_targets_per_second"] = statistics.median(reference_tps)
        for name in names[1:]:
            e = entries[name]
            # cost per training target, so a method with another instance construction (HSD's one
            # target per prefix) or a --max-batches cut still compares per epoch of the same data
            ratios = [(d.seconds / d.targets) / (p.seconds / p.targets)
                      for d, p in zip(e.epochs, plain.epochs) if p.seconds and d.targets and p.targets]
            epoch_targets = int(dm.n_train_targets)
            report["denoisers"].append({
                "backbone": backbone, "denoiser": name, "standalone": name in own,
                "seconds_per_epoch": statistics.median(x.seconds / x.targets for x in e.epochs if x.targets) * epoch_targets,
                "train_instances": built[name][1].train_instances,
                "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "setup_seconds": e.setup_seconds,
            })
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return report


def scaling(backbones: list[str], factors=(1, 2, 4, 8), base_users: int = 500, max_batches: int | None = None) -> list[dict]:
    """Epoch cost on synthetic data at ``base_users × factor`` users."""
    from benchmark.data.build import build_split_data

    rows = []
    for factor in factors:
        cfg = compose(dataset="synthetic", overrides=[f"dataset.synthetic.n_users={base_users * factor}", "logging.wandb=disabled"])
        split = build_split_data(cfg.dataset)
        for backbone in backbones:
            model, dm, _ = _build(cfg, split, backbone, "none")
            t = time_epoch(model, dm, max_batches)
            rows.append({"factor": factor, "users": split.n_users, "interactions": int(len(split.train.items)),
                         "backbone": backbone, "seconds": t.seconds, "targets_per_second": t.targets_per_second})
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for backbone in sorted({r["backbone"] for r in rows}):
        pts = sorted((r["interactions"], r["seconds"]) for r in rows if r["backbone"] == backbone)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=backbone)
    ax.set_xlabel("training interactions")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("Epoch cost vs data size (synthetic)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_section(report: dict) -> list[str]:
    """Markdown lines of one dataset's measurements."""
    lines = [f"## {report['dataset']}", "",
             f"Loading and preprocessing: {report.get('load_seconds', float('nan')):.2f} s. "
             f"{report['n_users']} users, {report['n_items']} items, {report['train_interactions']} training interactions; "
             f"{report['reps']} alternating repetitions" + (f", {report['max_batches']} batches timed per epoch (seconds per epoch extrapolated per training target)" if report["max_batches"] else ", full epochs") + ".", "",
             "Loader overhead: seconds the DataLoader takes to produce an epoch's batches over seconds of the "
             "training steps on those same batches from memory (median over repetitions).", "",
             "| backbone | instances | s/epoch (median, min–max) | targets/s | targets/s (data in memory) | loader overhead | eval users/s (full ranking) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, b in report["backbones"].items():
        lines.append(f"| {name} | {b['train_instances']} | {b['seconds_per_epoch']:.2f} ({b['epoch_spread'][0]:.2f}–{b['epoch_spread'][1]:.2f}) | "
                     f"{b['targets_per_second']:,.0f} | {b['step_only_targets_per_second']:,.0f} | {100 * b['loader_overhead']:+.0f}% | "
                     f"{b['eval_users_per_second']:,.0f} ({b['eval_users']} users in {b['eval_seconds']:.2f} s) |")
    refs = {name: b for name, b in report["backbones"].items() if b.get("reference_targets_per_second")}
    if refs:
        lines += ["", "Minimal PyTorch reference (`benchmark/perf_reference.py`: `nn.GRU` / `nn.TransformerEncoder`, "
                  "logits against the whole item table, `F.cross_entropy`, Adam; same sizes, on the same in-memory "
                  "batches, alternating with the suite's step):", "",
                  "| backbone | reference targets/s | suite targets/s (data in memory) | suite / reference |", "|---|---:|---:|---:|"]
        for name, b in refs.items():
            ref = b["reference_targets_per_second"]
            lines.append(f"| {name} | {ref:,.0f} | {b['step_only_targets_per_second']:,.0f} | "
                         f"{b['step_only_targets_per_second'] / ref:.2f}x |")
    if report["denoisers"]:
        lines += ["", "| backbone | denoiser | instances | s/epoch | × plain (median, per target) | min–max | one-off setup s |", "|---|---|---|---:|---:|---:|---:|"]
        for d in report["denoisers"]:
            label = f"{d['denoiser']} (standalone model)" if d.get("standalone") else d["denoiser"]
            lines.append(f"| {d['backbone']} | {label} | {d.get('train_instances', '')} | {d['seconds_per_epoch']:.2f} | {d['ratio_median']:.2f} | "
                         f"{d['ratio_min']:.2f}–{d['ratio_max']:.2f} | {d['setup_seconds']:.1f} |")
    if report.get("transfer_only"):
        pairs = ", ".join(f"{t['denoiser']} on {t['backbone']} (native: {'/'.join(t['native'])})" for t in report["transfer_only"])
        lines += ["", f"Not timed jointly (these run by the transfer protocol: native training, export, then the plain "
                      f"backbone, so their cost is the native row plus a plain run): {pairs}."]
    if report.get("not_applicable"):
        lines += ["", "Not applicable (cannot run by design, e.g. the data lack the item text the method needs):", ""]
        lines += [f"- {t['denoiser']} on {t['backbone']}: {t['reason']}" for t in report["not_applicable"]]
    if report.get("scaling"):
        lines += ["", "Scaling (synthetic):", "", "| backbone | users | interactions | s/epoch | targets/s |", "|---|---:|---:|---:|---:|"]
        for r in report["scaling"]:
            lines.append(f"| {r['backbone']} | {r['users']} | {r['interactions']} | {r['seconds']:.2f} | {r['targets_per_second']:,.0f} |")
    lines += ["", f"Peak RSS so far: {report['peak_rss_mb']:.0f} MB.", ""]
    return lines


# RecBole 1.2.1 on ML-100K, training instances/s (one instance per prefix), as the performance
# issue states them for the machine it was written on; `bench perf --recbole NAME=N,...` replaces
# them with figures measured on the machine at hand. RECBOLE_FACTOR: required multiple in targets/s.
RECBOLE_ML100K = {"sasrec": 1200.0, "gru4rec": 8000.0}
RECBOLE_FACTOR = {"sasrec": 30.0, "gru4rec": 8.0, "caser": 5.0, "bert4rec": 5.0}
EVAL_SECONDS_TARGET = 3.0  # all Beauty test users, full ranking
LOAD_SECONDS_TARGET = 10.0
RATIO_TARGET = {"iadsr": 1.5}
RATIO_DEFAULT = 2.0


def parse_recbole(text: str) -> dict[str, float]:
    """``"sasrec=1200,caser=2500"`` -> ``{"sasrec": 1200.0, "caser": 2500.0}`` (instances/s)."""
    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or name not in RECBOLE_FACTOR or rate <= 0:
            raise ValueError(f"--recbole {part!r}: expected BACKBONE=INSTANCES_PER_SECOND with BACKBONE one of "
                             f"{', '.join(RECBOLE_FACTOR)} and a positive number")
        out[name] = rate
    return out


def target_rows(reports: list[dict], recbole: dict[str, float] | None = None) -> list[tuple[str, str, str, bool]]:
    """(what, target, measured, met) for every target that the reports measure; ``recbole``:
    RecBole's instances/s per backbone on ML-100K (default: the issue's figures)."""
    recbole = RECBOLE_ML100K if recbole is None else recbole
    rows = []
    for r in reports:
        ds = r["dataset"]
        if ds == "ml-100k":
            for name, recbole_rate in sorted(recbole.items()):
                factor = RECBOLE_FACTOR[name]
                if name in r["backbones"]:
                    tps = r["backbones"][name]["targets_per_second"]
                    rows.append((f"{ds} {name} training targets/s",
                                 f">= {factor:.0f}x RecBole ({recbole_rate:,.0f}/s: {recbole_rate * factor:,.0f})",
                                 f"{tps:,.0f} ({tps / recbole_rate:.1f}x)", tps >= recbole_rate * factor))
        if ds == "beauty":
            for name, b in r["backbones"].items():
                rows.append((f"{ds} {name} full-ranking eval of {b['eval_users']:,} users", f"<= {EVAL_SECONDS_TARGET:.0f} s",
                             f"{b['eval_seconds']:.2f} s", b["eval_seconds"] <= EVAL_SECONDS_TARGET))
            if "load_seconds" in r:
                rows.append((f"{ds} load + preprocess", f"<= {LOAD_SECONDS_TARGET:.0f} s", f"{r['load_seconds']:.2f} s",
                             r["load_seconds"] <= LOAD_SECONDS_TARGET))
        for name, b in r["backbones"].items():
            rows.append((f"{ds} {name} loader overhead", "DataLoader not the bottleneck (< +25%)",
                         f"{100 * b['loader_overhead']:+.0f}%", b["loader_overhead"] < 0.25))
        for d in (d for d in r["denoisers"] if not d.get("standalone")):  # the cost targets are for denoisers
            limit = RATIO_TARGET.get(d["denoiser"], RATIO_DEFAULT)
            rows.append((f"{ds} {d['denoiser']} on {d['backbone']} epoch cost", f"<= {limit:g}x plain",
                         f"{d['ratio_median']:.2f}x", d["ratio_median"] <= limit))
    return rows


def render_markdown(doc: dict) -> str:
    """The whole report: one section per dataset, the targets table, the machine and the command."""
    lines = ["# Performance", "", "Training throughput counts training *targets* per second (one-pass constructions "
             "and per-prefix instances compare). Denoiser ratios are per training target, measured side by side "
             "(alternating epochs in one process); a standalone model (FMLP-Rec, DCRec) is timed the same way "
             "beside the backbone it is compared with.", ""]
    for r in doc["reports"]:
        lines += render_section(r)
    rows = target_rows(doc["reports"], doc.get("recbole"))
    if rows:
        source = doc.get("recbole_source") or "the performance issue's figures for the machine it was written on"
        lines += ["## Targets", "", f"RecBole 1.2.1 reference throughput on ML-100K: {source}.", "",
                  "| what | target | measured | met |", "|---|---|---:|:---:|"]
        lines += [f"| {w} | {t} | {m} | {'yes' if ok else '**no**'} |" for w, t, m, ok in rows]
        lines.append("")
    m = doc["machine"]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}; "
              + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if k in ("python", "torch", "pytorch-lightning")) + ".",
              "", f"Generated by `{doc['command']}` at commit {doc['git_commit']}.", ""]
    return "\n".join(lines)


def write_report(reports: list[dict], out: Path, command: str, recbole: dict[str, float] | None = None,
                 recbole_source: str | None = None) -> tuple[Path, Path]:
    doc = {"reports": reports, "machine": machine(), "versions": library_versions(), "git_commit": git_commit(),
           "command": command, "recbole": recbole if recbole is not None else dict(RECBOLE_ML100K),
           "recbole_source": recbole_source}
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    md_path.write_text(render_markdown(doc))
    return md_path, json_path
