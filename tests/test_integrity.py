"""Checksummed artefacts: exported denoised data (MANIFEST.json), single cache files
(``write_checked``/``read_checked``, LLM4DSR's caches), LLM4DSR's LoRA adapter. The
text-embedding shards are covered in test_text_encoders.py, fetched dataset files in
test_catalog.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import cli
from benchmark.config import compose
from benchmark.data.build import build_split_data
from benchmark.data.sequences import DenoisedSequences
from benchmark.export import load_denoised_split, save_denoised
from benchmark.integrity import IntegrityError, read_checked, write_checked, write_manifest
from benchmark.run import denoise_eval_histories
from denoisers.llm4dsr.finetune import is_finished
from tests.helpers import loo_split

ROWS = [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [6, 5, 4, 3, 2], [1, 3, 5, 2, 4]]


def flip_byte(path: Path, at: int | None = None) -> None:
    """Invert one byte of ``path`` (the middle one by default): one flipped bit pattern on disk."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


def exported(tmp_path: Path):
    """A split, an export of decisions (one removal per row) for its train and valid histories."""
    split = loo_split(ROWS, n_items=6)
    keep = np.ones(len(split.train.items), bool)
    keep[split.train.offsets[:-1]] = False
    out = tmp_path / "run" / "denoised"
    save_denoised(out, split, DenoisedSequences(split.train, keep), {"run_id": "run"})
    denoise_eval_histories(lambda history, stage: DenoisedSequences(history, np.ones(len(history.items), bool))
                           if stage == "valid" else None, split, out, {"run_id": "run"})
    return split, out


def test_export_carries_a_manifest_with_checksums_and_provenance_and_loads(tmp_path):
    split, out = exported(tmp_path)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert sorted(manifest["files"]) == ["decisions.npz", "fixture.inter", "masks.tsv"]
    assert manifest["provenance"] == {"dataset": "fixture", "run_id": "run"}
    assert (out / "valid" / "MANIFEST.json").exists()
    loaded = load_denoised_split(out, split)
    assert len(loaded.train.items) == len(split.train.items) - len(ROWS)


@pytest.mark.parametrize("name", ["decisions.npz", "fixture.inter", "masks.tsv", "valid/decisions.npz"])
def test_a_flipped_byte_in_an_exported_file_is_an_error_naming_it(tmp_path, name):
    split, out = exported(tmp_path)
    flip_byte(out / name)
    with pytest.raises(IntegrityError) as err:
        load_denoised_split(out, split)
    message = str(err.value)
    assert f"{out / name}: sha256" in message and "corrupted or changed since written" in message
    assert f"re-create it by running the configuration in {tmp_path / 'run' / 'config.yaml'}" in message


def test_a_truncated_export_and_an_unreadable_manifest_are_errors(tmp_path):
    split, out = exported(tmp_path)
    path = out / "decisions.npz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match="decisions.npz: .* bytes, but .* recorded"):
        load_denoised_split(out, split)
    (out / "MANIFEST.json").write_text("{")
    with pytest.raises(IntegrityError, match="MANIFEST.json: unreadable manifest"):
        load_denoised_split(out, split)


def test_an_export_written_before_manifests_loads_with_a_warning_unless_unreadable(tmp_path, caplog):
    split, out = exported(tmp_path)
    (out / "MANIFEST.json").unlink()
    with caplog.at_level("WARNING", logger="benchmark.export"):
        load_denoised_split(out, split)
    assert f"{out}: no MANIFEST.json" in caplog.text
    (out / "decisions.npz").write_bytes(b"PK not a zip")
    with pytest.raises(IntegrityError, match="decisions.npz: unreadable"):
        load_denoised_split(out, split)


def test_bench_run_on_a_corrupted_export_exits_2_naming_the_file(tmp_path, capsys):
    tiny = ["dataset.synthetic.n_users=30", "dataset.synthetic.n_items=24", "dataset.synthetic.max_len=14",
            "dataset.max_len=8"]
    split = build_split_data(compose(dataset="synthetic", overrides=tiny).dataset)
    out = tmp_path / "runs" / "source" / "denoised"
    save_denoised(out, split, DenoisedSequences(split.train, np.ones(len(split.train.items), bool)))
    flip_byte(out / "synthetic.inter")
    code = cli.main(["run", "--backbone", "gru4rec", "--dataset", "synthetic", "--profile", "smoke", "--data",
                     "denoised:source", "--runs-dir", str(tmp_path / "runs"), *tiny])
    err = capsys.readouterr().err
    assert code == 2 and f"{out / 'synthetic.inter'}: sha256" in err and "Traceback" not in err


def test_checked_cache_file_is_returned_only_while_it_matches_and_rebuilt_after_a_change(tmp_path, caplog):
    path = tmp_path / "scores" / "abc.npy"
    assert read_checked(path) is None
    write_checked(path, b"0123456789", {"adapter": "x"})
    assert read_checked(path) == b"0123456789"
    assert json.loads(path.with_name("abc.npy.sum.json").read_text())["provenance"] == {"adapter": "x"}
    flip_byte(path, at=3)
    with caplog.at_level("WARNING", logger="benchmark.integrity"):
        assert read_checked(path) is None  # the caller computes it again
    assert "abc.npy: sha256" in caplog.text and not path.exists() and not path.with_name("abc.npy.sum.json").exists()
    path.write_bytes(b"legacy")  # written before checksums: used as it is
    assert read_checked(path) == b"legacy"


def test_llm4dsr_adapter_that_changed_is_removed_to_be_saved_again(tmp_path, caplog):
    run_dir = tmp_path / "adapters" / "key"
    adapter = run_dir / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(bytes(range(64)))
    write_manifest(adapter, ["adapter_config.json", "adapter_model.safetensors"], {"settings": {}})
    (run_dir / "DONE").write_text("{}")
    assert is_finished(run_dir)
    flip_byte(adapter / "adapter_model.safetensors")
    with caplog.at_level("WARNING", logger="denoisers.llm4dsr.finetune"):
        assert not is_finished(run_dir)
    assert "adapter_model.safetensors: sha256" in caplog.text
    assert not adapter.exists() and not (run_dir / "DONE").exists()  # finetune_lora saves it again
