"""Safety: nothing loaded from disk can run code, and secrets from the environment never reach
a run directory or the logs."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from benchmark import cli

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "models", "denoisers")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    return next((ast.unparse(k.value) for k in call.keywords if k.arg == name), None)


def unsafe_loads(source: str) -> list[str]:
    """Calls in ``source`` that can execute code from data: ``eval``/``exec``, ``pickle.load(s)``,
    ``torch.load`` without ``weights_only=True``, ``np.load`` with ``allow_pickle=True``,
    ``yaml.load`` (not ``safe_load``)."""
    found = []
    for call, name in _calls(ast.parse(source)):
        bad = (name in ("eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load")
               or (name == "torch.load" and _keyword(call, "weights_only") != "True")
               or (name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") == "True"))
        if bad:
            found.append(f"line {call.lineno}: {ast.unparse(call)}")
    return found


def test_the_unsafe_load_check_catches_each_pattern():
    source = ("eval(x)\nexec(y)\npickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
              "np.load(p, allow_pickle=True)\nyaml.load(t)\nmodel.eval()\ntorch.load(p, weights_only=True)\n"
              "np.load(p)\nyaml.safe_load(t)\nast.literal_eval(s)\n")
    assert [line.split(":")[0] for line in unsafe_loads(source)] == [f"line {i}" for i in range(1, 8)]


def test_no_code_in_the_packages_loads_files_unsafely():
    offenders = {str(path.relative_to(REPO)): found for package in PACKAGES for path in (REPO / package).rglob("*.py")
                 if (found := unsafe_loads(path.read_text()))}
    assert offenders == {}


SECRETS = {"WANDB_API_KEY": "wandbkeyMARKER0123456789abcdef0123456789ab", "HF_TOKEN": "hf_tokenMARKER42",
           "MY_SERVICE_SECRET": "secretMARKER42", "OPENAI_API_KEY": "sk-keyMARKER42"}


def test_secret_environment_variables_never_reach_the_run_directory_or_the_logs(tmp_path, monkeypatch, capfd):
    pytest.importorskip("wandb")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "false")  # let W&B print whatever it prints
    for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):  # W&B's own logs, e.g. core-debug-*.log
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    code = cli.main(["run", "--backbone", "gru4rec", "--dataset", "synthetic", "--profile", "smoke",
                     "--runs-dir", str(tmp_path / "runs"), "logging.wandb=offline", "train.max_epochs=1",
                     "dataset.synthetic.n_users=30", "dataset.synthetic.n_items=24", "dataset.max_len=8"])
    output = "".join(capfd.readouterr())
    assert code == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name.split("-2")[0] for p in files}
    assert {"config.yaml", "result.json", "metrics.csv", "debug.log", "debug-internal.log", "core-debug"} <= names
    assert any(p.suffix == ".wandb" for p in files)
    leaks = {f"{p.relative_to(tmp_path)}: {name}" for p in files for name, value in SECRETS.items()
             if value.encode() in p.read_bytes()}
    leaks |= {f"output: {name}" for name, value in SECRETS.items() if value in output}
    assert leaks == set()
    assert os.environ["WANDB_API_KEY"] == SECRETS["WANDB_API_KEY"]  # the run saw the key (it was not unset)
