"""Leaderboard figures (PNG beside each dataset's table), drawn from the same sections:

* ``<dataset>-robustness.png``: test NDCG@10 against the injected replacement-noise ratio
  (0 = clean) per denoiser on one backbone (the LLM4DSR paper's Figure 6);
* ``<dataset>-popularity.png``: per item-popularity bucket (equal-frequency, hot → cold), the
  share of training positions each denoiser removed and the test NDCG@5 of users whose target is
  in the bucket (the IADSR paper's Figure 1).

Only validation-chosen settings are drawn (:func:`benchmark.sections.representative_variants`).
Same sections ⇒ same bytes (Agg backend, no timestamp metadata).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.sections import (Section, Stat, Variant, baseline_of, dump, mean_std, metric_stat, representative_variants,
                                trained_instances)

PREFERRED_BACKBONE = "sasrec"
_PNG_METADATA = {"Software": None}


def _mean(v: Variant, column: str) -> float | None:
    vals = v.values(column)
    return mean_std([vals[s] for s in sorted(vals)])[0] if vals else None


def noise_ratio(section: Section) -> float | None:
    """The replacement ratio of a section (0 for clean data; None for other noise kinds)."""
    kind = section.setting.get("dataset.noise.kind", "none")
    if kind == "none":
        return 0.0
    return float(section.setting["dataset.noise.alpha"]) if kind == "replace" else None


def _backbone(sections: list[Section]) -> str | None:
    names = sorted({v.backbone for s in sections for v in s.variants})
    return PREFERRED_BACKBONE if PREFERRED_BACKBONE in names else (names[0] if names else None)


def _line_labels(variants: list[Variant]) -> dict[int, str]:
    """Denoiser name as the line label, unless a backbone keeps several variants of a denoiser."""
    count: dict[tuple[str, str], int] = {}
    for v in variants:
        count[v.backbone, v.denoiser] = count.get((v.backbone, v.denoiser), 0) + 1
    return {id(v): v.denoiser if count[v.backbone, v.denoiser] == 1 else v.label for v in variants}


@dataclass(frozen=True)
class CurvePoint:
    """One point of a robustness line: the variant drawn at ``ratio`` and the section it is in."""

    ratio: float
    section: Section
    variant: Variant

    def stat(self, metric: str) -> Stat:
        """``metric`` (a result column, e.g. ``test_ndcg@10``) of this point's variant against
        the plain backbone of its section, as the section's table reports it."""
        return metric_stat(self.variant, metric, baseline_of(self.variant, self.section))


def robustness_lines(sections: list[Section], metric: str = "test_ndcg@10") -> tuple[str | None, dict[str, list[CurvePoint]]]:
    """``(backbone, {line: [CurvePoint, ...] by ratio})`` over the group of sections that share
    every setting but the noise and cover the most noise ratios (at least two); the backbone is
    SASRec when it has lines of two or more points, else the one with the most lines."""
    groups: dict[str, list[tuple[float, Section]]] = {}
    for s in sections:
        ratio = noise_ratio(s)
        if ratio is not None:
            rest = {k: v for k, v in s.setting.items() if not k.startswith("dataset.noise.")}
            groups.setdefault(dump(rest), []).append((ratio, s))
    usable = [g for g in groups.values() if len({r for r, _ in g}) >= 2]
    if not usable:
        return None, {}
    group = max(usable, key=lambda g: (len({r for r, _ in g}), sum(len(v.runs) for _, s in g for v in s.variants)))
    # a line follows one denoiser of one backbone on one kind of training instances, through the
    # setting validation chose at each noise ratio (a plain control on HSD's instances is another
    # line); labels are given after one-point lines are dropped, so the plain row stays "none"
    points: dict[tuple, list[CurvePoint]] = {}
    seen: dict[tuple, Variant] = {}
    for ratio, s in sorted(group, key=lambda x: x[0]):
        variants = representative_variants(s)
        kinds = [(v.backbone, v.denoiser, trained_instances(v)) for v in variants]
        for v, kind in zip(variants, kinds):
            if _mean(v, metric) is not None:
                key = kind if kinds.count(kind) == 1 else (*kind, dump(v.config))
                points.setdefault(key, []).append(CurvePoint(ratio, s, v))
                seen.setdefault(key, v)
    kept = {key: pts for key, pts in points.items() if len(pts) >= 2}
    labels = _line_labels([seen[key] for key in kept])
    lines: dict[str, dict[str, list[CurvePoint]]] = {}
    for key, pts in kept.items():
        lines.setdefault(key[0], {})[labels[id(seen[key])]] = pts
    lines = {b: dict(sorted(series.items())) for b, series in lines.items()}
    if not lines:
        return None, {}
    backbone = PREFERRED_BACKBONE if PREFERRED_BACKBONE in lines else max(sorted(lines), key=lambda b: len(lines[b]))
    return backbone, lines[backbone]


def robustness_series(sections: list[Section], metric: str = "test_ndcg@10") -> tuple[str | None, dict[str, list]]:
    """``(backbone, {line: [(noise ratio, mean metric), ...]})``: :func:`robustness_lines` as numbers."""
    backbone, lines = robustness_lines(sections, metric)
    return backbone, {label: [(p.ratio, _mean(p.variant, metric)) for p in pts] for label, pts in lines.items()}


def _bucket_values(v: Variant, template: str) -> list[float] | None:
    out, b = [], 0
    while (value := _mean(v, template.format(b=b))) is not None:
        out.append(value)
        b += 1
    return out or None


def popularity_series(sections: list[Section]) -> tuple[Section | None, str | None, dict[str, list], dict[str, list]]:
    """``(section, backbone, removal ratio per bucket, test NDCG@5 per bucket)`` per line, for the
    section and backbone with the most variants that have per-bucket figures."""
    best = None
    for s in sections:
        backbone = _backbone([s])
        variants = [v for v in representative_variants(s) if v.backbone == backbone]
        with_data = [v for v in variants if _bucket_values(v, "test_ndcg@5_b{b}") or _bucket_values(v, "det_removal_ratio_b{b}")]
        key = (len(with_data), sum(len(v.runs) for v in with_data))
        if with_data and (best is None or key > best[0]):
            best = (key, s, backbone, with_data)
    if best is None:
        return None, None, {}, {}
    _, section, backbone, variants = best
    labels = _line_labels(variants)
    removal = {labels[id(v)]: vals for v in variants if (vals := _bucket_values(v, "det_removal_ratio_b{b}"))}
    ndcg = {labels[id(v)]: vals for v in variants if (vals := _bucket_values(v, "test_ndcg@5_b{b}"))}
    return section, backbone, removal, ndcg


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_robustness(dataset: str, backbone: str, series: dict[str, list], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
    for label, pts in series.items():
        plain = {"color": "black", "linestyle": "--"} if label == "none" else {}  # the baseline stands apart
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, **plain)
    ax.set_xlabel("injected replacement noise (% of interactions)")
    ax.set_ylabel("test NDCG@10 (mean over seeds)")
    ax.set_title(f"{dataset}, {backbone}: robustness to noise")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata=_PNG_METADATA)
    plt.close(fig)


def plot_popularity(dataset: str, title: str, removal: dict[str, list], ndcg: dict[str, list], path: Path) -> None:
    plt = _pyplot()
    panels = [(removal, "share of training positions removed"), (ndcg, "test NDCG@5 (target in bucket)")]
    panels = [p for p in panels if p[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), dpi=100, squeeze=False)
    for ax, (series, ylabel) in zip(axes[0], panels):
        labels = list(series)
        width = 0.8 / max(len(labels), 1)
        for i, label in enumerate(labels):
            vals = series[label]
            ax.bar([b + (i - (len(labels) - 1) / 2) * width for b in range(len(vals))], vals, width, label=label)
        n = max(len(v) for v in series.values())
        ax.set_xticks(range(n), [f"b{b}" for b in range(n)])
        ax.set_xlabel("popularity bucket (b0 hottest; equal interactions)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(f"{dataset}: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata=_PNG_METADATA)
    plt.close(fig)


@dataclass(frozen=True)
class Figure:
    """A PNG written beside a dataset's table; ``kind`` names what it shows (``robustness`` or
    ``popularity``) so the page can put the figure's own numbers under it."""

    path: Path
    caption: str
    kind: str


def write_figures(dataset: str, sections: list[Section], out_dir: Path) -> list[Figure]:
    """Draw the dataset's figures that its sections have data for."""
    written = []
    backbone, series = robustness_series(sections)
    if series:
        path = out_dir / f"{dataset}-robustness.png"
        plot_robustness(dataset, backbone, series, path)
        written.append(Figure(path, f"Test NDCG@10 against the injected replacement-noise ratio, {backbone}, one line "
                                    "per denoiser (validation-chosen settings; mean over seeds).", "robustness"))
    section, backbone, removal, ndcg = popularity_series(sections)
    if section is not None:
        title = f"{backbone}, {section.noise}"
        path = out_dir / f"{dataset}-popularity.png"
        plot_popularity(dataset, title, removal, ndcg, path)
        written.append(Figure(path, f"Per item-popularity bucket ({title}): share of training positions each denoiser "
                                    "removed, and test NDCG@5 of users whose target lies in the bucket (mean over seeds).",
                              "popularity"))
    return written
