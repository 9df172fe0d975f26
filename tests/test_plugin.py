"""A third-party denoiser package is discovered through its entry point and runs end to end.

The package is the one docs/plugin_example.md shows (its fenced blocks that start with
``# file: <path>``), written into tmp_path and made importable with a ``*.dist-info``
directory on a temporary ``sys.path`` entry — nothing is installed into the environment."""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.registry import DENOISERS

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugin_example.md"


def doc_files() -> dict[str, str]:
    """``{relative path: content}`` of the fenced blocks in the doc that start with ``# file:``."""
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = rest
    return files


def write_package(root: Path) -> Path:
    """Write the example package and an installed-distribution record; return the sys.path entry."""
    files = doc_files()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    dist = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    site = write_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(DENOISERS, "_items", dict(DENOISERS._items))
    monkeypatch.setattr(DENOISERS, "_origin", dict(DENOISERS._origin))
    monkeypatch.setattr(DENOISERS, "_discovered", False)
    yield site
    sys.modules.pop("dsr_example", None)


def test_doc_example_declares_a_denoiser_entry_point():
    files = doc_files()
    assert set(files) == {"dsr_example/__init__.py", "pyproject.toml"}
    entry = tomllib.loads(files["pyproject.toml"])["project"]["entry-points"]["dsr_bench.denoisers"]
    assert entry == {"downweight-repeats": "dsr_example:DownweightRepeats"}
    assert len(files["dsr_example/__init__.py"].splitlines()) <= 45


def test_bench_list_shows_the_plugin(plugin, capsys):
    assert cli.main(["list", "denoisers"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("downweight-repeats"))
    assert "Down-weights next-item targets" in line
    assert "entry point dsr_example:DownweightRepeats" in line


def test_plugin_weights_repeated_targets():
    import torch

    namespace: dict = {}
    exec(compile(doc_files()["dsr_example/__init__.py"], "dsr_example", "exec"), namespace)
    den = namespace["DownweightRepeats"](namespace["RepeatConfig"](repeat_weight=0.25))

    class Ctx:
        extras = {"input_items": torch.tensor([[0, 5, 7, 5]]), "targets": torch.tensor([[5, 5, 5, 9]])}

    assert den.sample_weights(Ctx()).tolist() == [[1.0, 0.25, 0.25, 1.0]]


def test_bench_run_trains_with_the_plugin(plugin, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = cli.main([
        "run", "--backbone", "sasrec", "--denoiser", "downweight-repeats", "--dataset", "synthetic",
        "--profile", "smoke", "--runs-dir", str(runs), "dataset.synthetic.n_users=40",
        "denoiser.repeat_weight=0.25", "train.batch_size=64",
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "denoiser=downweight-repeats" in out and "NDCG@10" in out
    (result_file,) = runs.glob("*/result.json")
    result = json.loads(result_file.read_text())
    assert result["mode"] == "joint"
    assert result["config"]["denoiser"] == {"name": "downweight-repeats", "repeat_weight": 0.25}
    assert 0.0 <= result["test"]["ndcg@10"] <= 1.0
