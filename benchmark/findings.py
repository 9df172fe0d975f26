"""The leaderboards' findings in plain words, generated from the same sections as the tables.

For every dataset, noise setting and backbone of the ``benchmark`` preset: which denoisers raise
or lower test NDCG@10 against the backbone's plain row (a method that is its own model, such as FMLP-Rec or
DCRec, against the plain row of the backbone it modifies), by how much, whether a paired t-test over
the shared seeds says p < 0.05, and what a training epoch costs against the plain one. Where a
backbone and denoiser ran with several settings, only the one chosen on validation speaks (as in
the tables). Under injected noise, a denoiser whose seeds rank the injected items on opposite
sides of chance is named with each seed's detection AUC (:func:`direction_lines`), and every
setting whose mask flagged (almost) every position on some seed is listed (:func:`collapse_lines`).
Nothing here is written by hand: the sentences change when the store does.
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmark.epoch_cost import MARKS_NOTE, EpochCost, PerfCosts, epoch_cost
from benchmark.protocols import DEFAULT_PROTOCOL
from benchmark.sections import (COLLAPSED_FLAG_RATE, SIGNIFICANCE, Section, Stat, Variant, baseline_of, bucket_count,
                                collapsed_seeds, instance_control_of, mean_of, metric_stat, representative_variants,
                                section_title, trained_instances)
from benchmark.superseded import Supersession


@dataclass
class Verdict:
    variant: Variant
    stat: Stat
    cost: EpochCost | None  # seconds per epoch over the plain backbone's
    control: Variant | None = None  # plain backbone trained on the variant's instances (instance_control_of)
    control_stat: Stat | None = None  # the variant against ``control``
    perf_cost: float | None = None  # `bench perf`'s side-by-side cost per training target over plain

    @property
    def tested(self) -> bool:
        return self.stat.p is not None

    @property
    def significant(self) -> bool:
        return self.tested and self.stat.p < SIGNIFICANCE

    def phrase(self) -> str:
        """``said-hard +14.1% (p = 0.003)``, ``steam +0.5% (n.s.)``, ``fmlp +3.0% (1 seed)``."""
        evidence = _evidence(self.stat, "seed")
        mode = self.variant.mode
        detail = [evidence] + ([mode] if mode not in ("plain", "joint") else []) + _cap_note(self.variant)
        if self.perf_cost is not None:
            detail.append(f"×{self.perf_cost:.2f} per target in perf")
        elif self.cost is not None:
            detail.append(f"epoch ×{self.cost.text()}")
        if self.control_stat is not None and self.control_stat.gain is not None:
            detail.append(self._control_phrase())
        return f"{self.name} {self.stat.gain:+.1%} ({'; '.join(detail)})"

    def _control_phrase(self) -> str:
        """``against plain gru4rec on the same prefix instances (share 0.1): -24.0%, n.s., epoch ×3.22``"""
        stat, control = self.control_stat, self.control
        share = control.config.get("train.prefix_epoch_share", 1.0)
        where = f"the same {trained_instances(control)} instances" + (f" (share {share:g})" if share != 1.0 else "")
        evidence = _evidence(stat, "shared seed")
        cost = epoch_cost(self.variant, control)
        return (f"against plain {control.backbone} on {where}: {stat.gain:+.1%}, {evidence}"
                + (f", epoch ×{cost.text()}" if cost is not None else ""))

    @property
    def name(self) -> str:
        """The denoiser's label, or for a standalone model's plain row the model's name with the
        label's settings (``fmlp (train.prefix_epoch_share=0.1)``)."""
        label = self.variant.label
        if self.variant.denoiser == "none":
            return self.variant.backbone + label[len("none"):]
        return label


def _count(n: int, noun: str) -> str:
    """``n`` with ``noun`` in the number it takes: "1 denoiser", "3 denoisers"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _verb(n: int) -> str:
    """The form of "to be" that agrees with a count of ``n``."""
    return "is" if n == 1 else "are"


def _evidence(stat: Stat, unit: str) -> str:
    """``p = 0.003`` when the paired t-test is significant, ``n.s.`` when not, ``1 seed, untested``
    when too few seeds are shared for a test."""
    if stat.p is None:
        return f"{_count(stat.n, unit)}, untested"
    return f"p = {stat.p:.3f}" if stat.p < SIGNIFICANCE else "n.s."


def _cap_note(variant: Variant) -> list[str]:
    capped, n = len(variant.capped_seeds()), len(variant.runs)
    return [f"{capped} of {_count(n, 'seed')} hit the epoch cap"] if capped else []


def _metric(section: Section) -> str:
    ks = section.ks
    return f"ndcg@{10 if 10 in ks else ks[0]}"


def perf_name(variant: Variant) -> str:
    """The name ``bench perf`` times ``variant`` under: its denoiser, or for a standalone model's
    plain row (FMLP-Rec, DCRec) the model, timed beside the backbone it is compared with."""
    return variant.backbone if variant.denoiser == "none" else variant.denoiser


def verdicts(section: Section, perf: PerfCosts | None = None) -> dict[str, list[Verdict]]:
    """Backbone -> the verdicts of its denoiser rows (best gain first); ``perf``: side-by-side costs
    (:func:`benchmark.epoch_cost.load_perf_costs`) that speak for a row's cost where they have it."""
    column = f"test_{_metric(section)}"
    out: dict[str, list[Verdict]] = {}
    for variant in representative_variants(section):
        base = baseline_of(variant, section)
        if base is None:
            continue
        stat = metric_stat(variant, column, base)
        if stat.gain is None:
            continue
        # a standalone model (FMLP-Rec, DCRec) is listed with the backbone it is compared with
        control = instance_control_of(variant, section, base)
        control_stat = metric_stat(variant, column, control) if control is not None else None
        out.setdefault(base.backbone, []).append(
            Verdict(variant, stat, epoch_cost(variant, base), control, control_stat,
                    (perf or {}).get((section.dataset, base.backbone, perf_name(variant)))))
    for rows in out.values():
        rows.sort(key=lambda v: (-v.stat.gain, v.name))
    return out


def _backbone_line(section: Section, title: str, backbone: str, rows: list[Verdict]) -> str:
    metric = _metric(section)
    base = baseline_of(rows[0].variant, section)
    plain = mean_of(base, f"test_{metric}") if base else None
    better = [v for v in rows if v.stat.gain > 0]
    worse = [v for v in rows if v.stat.gain <= 0]
    wins = [v for v in better if v.significant]
    cap = _cap_note(base)
    cap_text = f"; {cap[0]}, so it may be undertrained" if cap else ""
    head = (f"- **{section.dataset}, {title}: {backbone}** (plain {metric.upper()} {plain:.4f}, "
            f"{_count(len(base.runs), 'seed')}{cap_text}): ")
    if wins:
        verdict = f"{len(wins)} of {_count(len(rows), 'denoiser')} {_verb(len(wins))} significantly better."
    elif len(rows) == 1:
        verdict = "the one denoiser is not significantly better."
    else:
        verdict = f"none of {len(rows)} denoisers is significantly better."
    parts = [head + verdict]
    if better:
        parts.append("Higher: " + ", ".join(v.phrase() for v in better) + ".")
    if worse:
        parts.append("Lower: " + ", ".join(v.phrase() for v in worse) + ".")
    return " ".join(parts)


def _replaced(section: Section, sections: list[Section], backbone: str, rows: list[Verdict],
              superseded: list[Supersession]) -> tuple[Supersession | None, list[Verdict]]:
    """The rule that replaced ``backbone``'s setting in ``section`` and the rows that ran again
    under the replacement (same backbone and denoiser), or ``(None, [])``."""
    for rule in superseded:
        if not rule.covers(section, backbone):
            continue
        newer = rule.replacement(section, sections)
        if newer is None:
            continue
        rerun = {(v.variant.backbone, v.variant.denoiser) for v in verdicts(newer).get(backbone, [])}
        return rule, [v for v in rows if (v.variant.backbone, v.variant.denoiser) in rerun]
    return None, []


def _ratio(r: float) -> str:
    return f"{100 * r:g}%"


def robustness_line(dataset: str, sections: list[Section]) -> str | None:
    """One sentence on the dataset's robustness figure (:func:`benchmark.figures.robustness_lines`):
    how far the plain backbone's test NDCG@10 falls from the lowest to the highest noise ratio, and
    each denoiser line against plain at the highest ratio it reached. None without a plain line."""
    from benchmark.figures import robustness_lines

    metric = "test_ndcg@10"
    backbone, lines = robustness_lines(sections, metric)
    plain = lines.get("none", [])
    if len(plain) < 2:
        return None
    first, last = plain[0], plain[-1]
    start, end = mean_of(first.variant, metric), mean_of(last.variant, metric)
    parts = []
    for label, points in lines.items():
        if label == "none":
            continue
        top = points[-1]
        stat = top.stat(metric)
        if stat.gain is None:
            continue
        better = [_ratio(p.ratio) for p in points
                  if (st := p.stat(metric)).p is not None
                  and st.p < SIGNIFICANCE and st.gain > 0]
        detail = [_evidence(stat, "seed")]
        if top.ratio != last.ratio:
            detail.append(f"at {_ratio(top.ratio)}, its highest ratio")
        if better:
            detail.append("significantly above plain at " + ", ".join(better))
        parts.append(((top.ratio != last.ratio, -stat.gain), f"{label} {stat.gain:+.1%} ({'; '.join(detail)})"))
    parts.sort(key=lambda x: x[0])  # lines that reach the highest ratio first, then by change
    return (f"- **Robustness, {dataset}, {backbone}** ({len(lines)} lines of the figure): plain test NDCG@10 falls "
            f"from {start:.4f} at {_ratio(first.ratio)} injected noise to {end:.4f} at {_ratio(last.ratio)} "
            f"({(end - start) / start:+.1%}). Each denoiser against plain at {_ratio(last.ratio)}: "
            + (", ".join(text for _, text in parts) if parts else "none has a plain row to compare with") + ".")


# a seed's noise scores rank injected items this far from chance (ROC AUC 0.5) in either direction
DIRECTION_MARGIN = 0.1


def _hot_and_cold_removal(variant: Variant, seeds: list[int]) -> tuple[float, float] | None:
    """Mean share of the hottest and of the coldest popularity bucket's positions that ``seeds``
    removed (``det_removal_ratio_b<k>``); None when the rows have fewer than two buckets."""
    n = bucket_count([variant])
    hot, cold = variant.values("det_removal_ratio_b0"), variant.values(f"det_removal_ratio_b{n - 1}")
    if n < 2 or not all(s in hot and s in cold for s in seeds):
        return None
    return sum(hot[s] for s in seeds) / len(seeds), sum(cold[s] for s in seeds) / len(seeds)


def direction_line(section: Section, title: str, variant: Variant) -> str | None:
    """One sentence when ``variant``'s seeds disagree on which items are noise: at least one
    seed's noise scores rank the injected items above chance (ROC AUC >= 0.5 + DIRECTION_MARGIN)
    and another's below it (<= 0.5 - DIRECTION_MARGIN), with what each group removed from the
    hottest and the coldest popularity bucket."""
    auc = variant.values("det_roc_auc")
    above = [s for s in sorted(auc) if auc[s] >= 0.5 + DIRECTION_MARGIN]
    below = [s for s in sorted(auc) if auc[s] <= 0.5 - DIRECTION_MARGIN]
    if not above or not below:
        return None
    by_seed = ", ".join(f"{auc[s]:.2f} (seed {s})" for s in sorted(auc))
    text = f"- **{section.dataset}, {title}: {variant.backbone} / {variant.label}**: noise-score AUC {by_seed}."
    up, down = _hot_and_cold_removal(variant, above), _hot_and_cold_removal(variant, below)
    if up is not None and down is not None:
        text += (f" The seeds above chance removed {up[0]:.0%} of the hottest popularity bucket's positions and "
                 f"{up[1]:.0%} of the coldest's; those below, {down[0]:.0%} and {down[1]:.0%}.")
    return text


def collapse_line(section: Section, title: str, variant: Variant, chosen: bool) -> str | None:
    """One sentence when some of ``variant``'s seeds flag (almost) every training position
    (:func:`~benchmark.sections.collapsed_seeds`): their flag rates, and their mean test NDCG@10
    beside the other seeds'. ``chosen``: validation chose this variant (or it had no rival)."""
    down = collapsed_seeds(variant)
    if not down:
        return None
    rates, ndcg = variant.values("det_flag_rate"), variant.values("test_ndcg@10")
    rest = [s for s in sorted(rates) if s not in down]
    text = (f"- **{section.dataset}, {title}: {variant.backbone} / {variant.label}**"
            f"{' (the row validation chose)' if chosen else ''}: seed{'s' if len(down) > 1 else ''} "
            f"{', '.join(str(s) for s in down)} of {len(rates)} flagged "
            f"{', '.join(f'{rates[s]:.1%}' for s in down)} of the positions")
    if rest and all(s in ndcg for s in down + rest):
        text += (f"; test NDCG@10 {sum(ndcg[s] for s in down) / len(down):.4f} there against "
                 f"{sum(ndcg[s] for s in rest) / len(rest):.4f} for the other seeds")
    return text + "."


def collapse_lines(by_dataset: dict[str, list[Section]]) -> list[str]:
    """:func:`collapse_line` for every variant of the ``benchmark`` sections, tuning candidates
    included (a setting that collapses is a finding whether or not validation chose it)."""
    out = []
    for _, section, title in _benchmark_sections(by_dataset):
        chosen = {id(v) for v in representative_variants(section)}
        out += [line for v in section.variants if (line := collapse_line(section, title, v, id(v) in chosen))]
    return out


def _benchmark_sections(by_dataset: dict[str, list[Section]]):
    """``(dataset, section, title)`` of every section under the ``benchmark`` preset, by dataset."""
    for dataset in sorted(by_dataset):
        for section in by_dataset[dataset]:
            if str(section.setting.get("protocol", DEFAULT_PROTOCOL)) == DEFAULT_PROTOCOL:
                yield dataset, section, section_title(section, by_dataset[dataset])


def direction_lines(by_dataset: dict[str, list[Section]]) -> list[str]:
    """:func:`direction_line` for every validation-chosen variant of the ``benchmark`` sections."""
    return [line for _, section, title in _benchmark_sections(by_dataset)
            for v in representative_variants(section) if (line := direction_line(section, title, v))]


def findings_lines(by_dataset: dict[str, list[Section]], superseded: list[Supersession] = (),
                   perf: PerfCosts | None = None) -> list[str]:
    """The index's "Findings" section (empty when no section has a denoiser beside its plain row).

    ``superseded``: settings a later grid replaced (:mod:`benchmark.superseded`); a row under a
    replaced setting is left out once its backbone and denoiser ran under the replacement.
    ``perf``: `bench perf`'s side-by-side costs, quoted for the rows they cover."""
    lines: list[str] = []
    left_out: dict[Supersession, list[str]] = {}  # rule -> "noise: backbone (denoisers)"
    counts = {"better": 0, "worse": 0, "neither": 0, "untested": 0}
    for dataset, section, title in _benchmark_sections(by_dataset):
        for backbone, rows in sorted(verdicts(section, perf).items()):
            rule, rerun = _replaced(section, by_dataset[dataset], backbone, rows, superseded)
            if rerun:
                left_out.setdefault(rule, []).append(
                    f"{section.noise}: {backbone} ({', '.join(v.name for v in rerun)})")
                rows = [v for v in rows if v not in rerun]
            if not rows:
                continue
            line = _backbone_line(section, title, backbone, rows)
            if rule is not None:
                line += f" (A replaced setting, {rule.change()}; these denoisers have not run under the new one.)"
            lines.append(line)
            for v in rows:
                key = ("better" if v.stat.gain > 0 else "worse") if v.significant else (
                    "neither" if v.tested else "untested")
                counts[key] += 1
    if not lines:
        return []
    total = sum(counts.values())
    summary = (f"Of {_count(total, 'denoiser row')} beside a plain backbone, {counts['better']} "
               f"{_verb(counts['better'])} significantly better on test NDCG@10, {counts['worse']} significantly "
               f"worse and {counts['neither']} not distinguishable from the plain backbone; {counts['untested']} "
               f"{'has' if counts['untested'] == 1 else 'have'} too few shared seeds for a test.")
    intro = ("Generated from the tables (preset `benchmark`; where a denoiser ran with several settings, the one "
             "chosen on validation): the relative change of test NDCG@10 against the backbone's plain row, a paired "
             f"t-test over the shared seeds (p < {SIGNIFICANCE}, else n.s.), the mode when it is not joint "
             "training, and the cost of training against the plain backbone: where `bench perf` timed the denoiser "
             "beside that backbone on the dataset, its median seconds per training target over plain ("
             "[perf.md](perf.md): default settings, alternating epochs in one process, so machine and load cancel), "
             "else the rows' seconds per epoch from the store (" + MARKS_NOTE + "). Where the store holds a plain "
             "backbone trained on the same instances as a denoiser (HSD and SSDRec: one instance per target), the "
             "change against that control follows, separating the method from its training instances.")
    out = ["## Findings", "", intro, "", summary, "", *lines, ""]
    robustness = [line for dataset in sorted(by_dataset) if (line := robustness_line(dataset, by_dataset[dataset]))]
    if robustness:
        out += ["Robustness figures: how each validation-chosen line of the figure fares as injected replacement "
                "noise grows (the figure's table gives every point).", "", *robustness, ""]
    flips = direction_lines(by_dataset)
    if flips:
        out += [f"Noise detection that changes direction with the seed: rows with injected noise where one seed's "
                f"noise scores rank the injected items above chance (ROC AUC >= {0.5 + DIRECTION_MARGIN:g}) and "
                f"another's below it (<= {0.5 - DIRECTION_MARGIN:g}), so which items the method removes depends on "
                "the seed as much as on the data.", "", *flips, ""]
    collapsed = collapse_lines(by_dataset)
    if collapsed:
        out += [f"Masks that collapse: rows where a seed's method flagged at least {COLLAPSED_FLAG_RATE:.0%} of the "
                "training positions as noise, so its detection scores say nothing about which items are noise.", "",
                *collapsed, ""]
    if left_out:
        out += ["Left out above: rows under a training setting that a later grid replaced "
                "(`configs/superseded.yaml`) whose backbone and denoiser ran again under the replacement. "
                "They stay in the dataset's leaderboard as the evidence for the change.", "",
                *(f"- **{rule.dataset}, {rule.change()}**: {rule.why} Left out: {'; '.join(rows)}."
                  for rule, rows in left_out.items()), ""]
    return out
