"""Training settings a later grid replaced, so that the Findings stop citing the old rows.

``configs/superseded.yaml`` lists, per replacement: the dataset, optionally the backbone and the
noise setting it applies to, ``setting`` — section keys (:data:`benchmark.sections.SETTING_KEYS`)
and the values that identify the old section — ``replaced_by``, the values of the same keys in the
new section, and ``why``. The old rows stay in the store and in the dataset's leaderboard (they
are the evidence for the change); the Findings leave out an old row once the same backbone and
denoiser ran under the replacement, and name what they left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import CONFIG_DIR, ConfigError
from benchmark.entries_file import read_entries
from benchmark.sections import SETTING_KEYS, Section, fmt_value

SUPERSEDED_FILE = CONFIG_DIR / "superseded.yaml"
_REQUIRED = {"dataset": str, "setting": dict, "replaced_by": dict, "why": str}
_OPTIONAL = {"backbone": str, "noise": str}


def _same(a: Any, b: Any) -> bool:
    """Values compared as text: YAML ``10`` matches a stored ``10``, ``0.1`` a stored ``0.1``."""
    return fmt_value(a) == fmt_value(b)


@dataclass(frozen=True)
class Supersession:
    dataset: str
    setting: tuple[tuple[str, Any], ...]  # section key -> value of the old section
    replaced_by: tuple[tuple[str, Any], ...]  # the same keys -> value of the new section
    why: str
    backbone: str | None = None  # None: every backbone
    noise: str | None = None  # None: every noise setting

    def covers(self, section: Section, backbone: str) -> bool:
        """Whether ``backbone``'s rows of ``section`` ran under the replaced setting."""
        return (section.dataset == self.dataset and self.backbone in (None, backbone)
                and self.noise in (None, section.noise)
                and all(_same(section.setting.get(k), v) for k, v in self.setting))

    def replacement(self, section: Section, sections: list[Section]) -> Section | None:
        """The section of ``sections`` that equals ``section`` but for ``replaced_by``."""
        new = dict(section.setting)
        new.update(self.replaced_by)
        for other in sections:
            if other is not section and other.noise == section.noise and \
                    set(other.setting) == set(new) and all(_same(other.setting[k], v) for k, v in new.items()):
                return other
        return None

    def change(self) -> str:
        """``train.patience=10 → 20``."""
        old = dict(self.setting)
        return ", ".join(f"{k}={fmt_value(old[k])} → {fmt_value(v)}" for k, v in self.replaced_by)


def load_superseded(path: str | Path = SUPERSEDED_FILE) -> list[Supersession]:
    """Read and check the file (a missing file: no replacements)."""
    out = []
    for where, entry in read_entries(Path(path), "superseded", _REQUIRED, _OPTIONAL):
        for group in ("setting", "replaced_by"):
            bad = sorted(k for k in entry[group] if k not in SETTING_KEYS)
            if bad:
                raise ConfigError(f"{where}: {group} keys {bad} are not section keys; expected some of "
                                  f"{', '.join(SETTING_KEYS)}")
        missing = sorted(set(entry["replaced_by"]) - set(entry["setting"]))
        if missing or not entry["replaced_by"]:
            raise ConfigError(f"{where}: replaced_by must give new values of keys named in setting "
                              f"(missing from setting: {missing})")
        out.append(Supersession(entry["dataset"], tuple(sorted(entry["setting"].items())),
                                tuple(sorted(entry["replaced_by"].items())), " ".join(entry["why"].split()),
                                entry.get("backbone"), entry.get("noise")))
    return out
