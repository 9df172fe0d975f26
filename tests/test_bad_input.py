"""Bad input gives one clear error: every reader on broken files (hand-written cases and hypothesis
properties), and configs / CLI arguments with unknown names, misspelt keys, wrong types and
out-of-range values. Through ``bench`` each is one line on stderr and exit code 2, before any training."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark import cli
from benchmark.config import ConfigError, compose
from benchmark.data.readers import (
    DataFormatError,
    read_amazon,
    read_atomic,
    read_llm4dsr_windows,
    read_movielens_1m,
    read_movielens_100k,
)
from benchmark.text.base import resolve_encoder

INTER_SCHEMA = {"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Float64}


# ------------------------------------------------------------------------------ fixtures
def rows(n_users: int = 6, n_items: int = 8, per: int = 6) -> list[tuple[str, str, int]]:
    """(user, item, time) with ids 'u1'.. and 'i1'..; every user has ``per`` distinct items."""
    return [(f"u{u}", f"i{(u + k) % n_items + 1}", 1000 * u + k) for u in range(1, n_users + 1) for k in range(per)]


def atomic_inter(data=None) -> str:
    data = rows() if data is None else data
    return "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in data)


def atomic_item(ids=range(1, 9)) -> str:
    return "item_id:token\ttitle:token_seq\n" + "".join(f"i{k}\tTitle {k}\n" for k in ids)


def reviews(data=None) -> str:
    data = rows() if data is None else data
    return "".join(json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t}) + "\n" for u, i, t in data)


def meta(ids=range(1, 9)) -> str:
    return "".join(repr({"asin": f"i{k}", "title": f"Title {k}", "categories": [["Beauty"]]}) + "\n" for k in ids)


def udata(data=None, sep: str = "\t") -> str:
    data = rows() if data is None else data
    return "".join(sep.join((u[1:], i[1:], "3", str(t))) + "\n" for u, i, t in data)


def uitem(ids=range(1, 9)) -> str:
    return "".join(f"{k}|Movie {k} (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n" for k in ids)


WINDOW_HEADER = "user_id,item_ids,item_titles,timestamp\n"


def windows(data=None) -> str:
    """One CSV holding every window (up to 4 items) of every user, as LLM4DSR writes them."""
    data = rows() if data is None else data
    by_user: dict[str, list[tuple[str, int]]] = {}
    for u, i, t in data:
        by_user.setdefault(u, []).append((i[1:], t))
    lines = []
    for u, seq in by_user.items():
        for end in range(min(3, len(seq) - 1), len(seq)):
            window = seq[max(0, end - 3): end + 1]
            ids = "[" + ", ".join(i for i, _ in window) + "]"
            titles = repr([f"T{i}" for i, _ in window])
            lines.append(f'{u[1:]},"{ids}","{titles}",{window[-1][1]}\n')
    return WINDOW_HEADER + "".join(lines)


def window_splits() -> dict[str, str]:
    """``windows()`` cut into train.csv / valid.csv / test.csv: each user's last window is in
    test, the one before in valid, the rest in train (so every window appears once)."""
    lines = windows().splitlines(keepends=True)[1:]
    rank = {}  # line -> how many later windows its user has
    for k, line in enumerate(lines):
        rank[k] = sum(1 for later in lines[k + 1:] if later.split(",")[0] == line.split(",")[0])
    parts = {"test.csv": [], "valid.csv": [], "train.csv": []}
    for k, line in enumerate(lines):
        parts[("test.csv", "valid.csv")[rank[k]] if rank[k] < 2 else "train.csv"].append(line)
    return {name: WINDOW_HEADER + "".join(part) for name, part in parts.items()}


def gz(text: str | bytes) -> bytes:
    return gzip.compress(text.encode() if isinstance(text, str) else text)


def write_files(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def first(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if (folder / n).exists()), None)


# Each reader reads a folder laid out as the catalog expects (optional files only when present).
READERS = {
    "atomic": lambda d: read_atomic(first(d, "d.inter", "d.inter.gz"), first(d, "d.item")),
    "amazon": lambda d: read_amazon(first(d, "reviews.json", "reviews.json.gz"), first(d, "meta.json", "meta.json.gz")),
    "ml-100k": lambda d: read_movielens_100k(d / "u.data", first(d, "u.item")),
    "ml-1m": lambda d: read_movielens_1m(d / "ratings.dat", first(d, "movies.dat")),
    "windows": lambda d: read_llm4dsr_windows(sorted(p for p in d.iterdir() if ".csv" in p.name)),
}

I, R, U, W = atomic_inter(), reviews(), udata(), windows()
TRUNCATED = gz(I)[:-30]
CORRUPT = b"\x1f\x8b\x08\x00" + bytes(range(40)) * 3  # gzip magic, then a deflate stream that is not one

# (case id, reader, files, the bad file, its line (None: the whole file), what the message must say)
BAD_FILES = [
    ("atomic-truncated-gz", "atomic", {"d.inter.gz": TRUNCATED}, "d.inter.gz", None, "not a readable gzip file"),
    ("atomic-corrupt-gz", "atomic", {"d.inter.gz": CORRUPT}, "d.inter.gz", None, "not a readable gzip file"),
    ("atomic-no-header", "atomic", {"d.inter": I.split("\n", 1)[1]}, "d.inter", 1, "is not 'name:type'"),
    ("atomic-wrong-header", "atomic", {"d.inter": I.replace("item_id:token", "iid:token")}, "d.inter", 1,
     "header lacks item_id"),
    ("atomic-column-count", "atomic", {"d.inter": I + "u1\ti1\n"}, "d.inter", 38, "has 2 fields separated by '\\t', expected 3"),
    ("atomic-timestamp", "atomic", {"d.inter": I.replace("\t1003\n", "\tsoon\n")}, "d.inter", 5,
     "timestamp 'soon' is not a finite number"),
    ("atomic-empty", "atomic", {"d.inter": ""}, "d.inter", 1, "empty file; expected a header line"),
    ("atomic-header-only", "atomic", {"d.inter": I.split("\n", 1)[0] + "\n"}, "d.inter", 2, "no interactions"),
    ("atomic-duplicate-row", "atomic", {"d.inter": I + "u1\ti3\t1001\n"}, "d.inter", 38,
     "repeats line 3; each interaction (user, item, timestamp) must appear once"),
    ("atomic-invalid-utf8", "atomic", {"d.inter": I.encode() + b"u9\t\xff\t5\n"}, "d.inter", 38, "not valid utf-8"),
    ("atomic-item-missing", "atomic", {"d.inter": I, "d.item": atomic_item(range(1, 8))}, "d.inter", 13,
     "item id 'i8' has no row in"),
    ("atomic-duplicate-item", "atomic", {"d.inter": I, "d.item": atomic_item() + "i3\tAgain\n"}, "d.item", 10,
     "repeats line 4; item ids must be unique"),
    ("atomic-item-invalid-utf8", "atomic", {"d.inter": I, "d.item": atomic_item().encode() + b"i9\t\xc3(\n"}, "d.item", 10,
     "not valid utf-8"),
    ("amazon-truncated-gz", "amazon", {"reviews.json.gz": gz(R)[:-30]}, "reviews.json.gz", None, "not a readable gzip file"),
    ("amazon-corrupt-gz", "amazon", {"reviews.json.gz": CORRUPT}, "reviews.json.gz", None, "not a readable gzip file"),
    ("amazon-invalid-json", "amazon", {"reviews.json": R + "{not json\n"}, "reviews.json", 37, "not valid JSON"),
    ("amazon-missing-field", "amazon", {"reviews.json": R + '{"reviewerID": "u1", "asin": "i1"}\n'}, "reviews.json", 37,
     "field 'unixReviewTime' is None, expected an integer"),
    ("amazon-timestamp", "amazon", {"reviews.json": R + '{"reviewerID": "u1", "asin": "i1", "unixReviewTime": "soon"}\n'},
     "reviews.json", 37, "field 'unixReviewTime' is 'soon', expected an integer"),
    ("amazon-empty", "amazon", {"reviews.json": ""}, "reviews.json", 1, "no interactions"),
    ("amazon-duplicate-row", "amazon", {"reviews.json": "\n" + R + R.split("\n")[1] + "\n"}, "reviews.json", 38,
     "repeats line 3"),  # the blank first line counts: row numbers are mapped back to file lines
    ("amazon-invalid-utf8", "amazon", {"reviews.json": R.encode() + b'{"reviewerID": "\xff"}\n'}, "reviews.json", 37,
     "utf-8"),
    ("amazon-meta-empty", "amazon", {"reviews.json": R, "meta.json": ""}, "meta.json", 1, "empty file"),
    ("amazon-meta-bad-record", "amazon", {"reviews.json": R, "meta.json": meta(range(1, 8)) + "{'asin': 'i8', 'title': \n"},
     "meta.json", 8, "cannot parse"),
    ("amazon-meta-other-category", "amazon", {"reviews.json": R, "meta.json": meta(range(20, 25)).replace("'i2", "'x2")},
     "meta.json", None, "no record for any of the 8 reviewed items"),
    ("amazon-meta-truncated-gz", "amazon", {"reviews.json": R, "meta.json.gz": gz(meta())[:-20]}, "meta.json.gz", None,
     "not a readable gzip file"),
    ("ml100k-column-count", "ml-100k", {"u.data": U + "1\t2\t3\n"}, "u.data", 37, "has 3 fields separated by '\\t', expected 4"),
    ("ml100k-timestamp", "ml-100k", {"u.data": U.replace("\t1003\n", "\tsoon\n")}, "u.data", 4, "timestamp 'soon'"),
    ("ml100k-empty", "ml-100k", {"u.data": ""}, "u.data", 1, "no interactions; expected one line per rating"),
    ("ml100k-duplicate-row", "ml-100k", {"u.data": U + U.split("\n")[0] + "\n"}, "u.data", 37, "repeats line 1"),
    ("ml100k-item-columns", "ml-100k", {"u.data": U, "u.item": uitem() + "9|x\n"}, "u.item", 9, "has 2 fields separated by '|'"),
    ("ml100k-item-missing", "ml-100k", {"u.data": U, "u.item": uitem(range(1, 8))}, "u.data", 12, "item id '8' has no row in"),
    ("ml100k-duplicate-item", "ml-100k", {"u.data": U, "u.item": uitem() + uitem(range(2, 3))}, "u.item", 9,
     "item id '2' repeats line 2"),
    ("ml1m-empty", "ml-1m", {"ratings.dat": ""}, "ratings.dat", 1, "separated by '::'"),
    ("ml1m-duplicate-movie", "ml-1m", {"ratings.dat": udata(sep="::"), "movies.dat": "".join(
        f"{k}::Movie {k} (1995)::Drama\n" for k in (*range(1, 9), 5))}, "movies.dat", 9, "item id '5' repeats line 5"),
    ("windows-truncated-gz", "windows", {"train.csv.gz": gz(W)[:-30]}, "train.csv.gz", None, "not a readable gzip file"),
    ("windows-no-header", "windows", {"train.csv": W.split("\n", 1)[1]}, "train.csv", 1, "header lacks user_id"),
    ("windows-short-line", "windows", {"train.csv": W + '1,"[1]"\n'}, "train.csv", 20, "has 2 fields, expected 4"),
    ("windows-long-line", "windows", {"train.csv": W + '1,"[1]","[\'a\']",5,7\n'}, "train.csv", 20, "has 5 fields, expected 4"),
    ("windows-timestamp", "windows", {"train.csv": W.replace(",1003\n", ",soon\n")}, "train.csv", 2, "timestamp 'soon'"),
    ("windows-empty", "windows", {"train.csv": ""}, "train.csv", 1, "empty file; expected a header line"),
    ("windows-header-only", "windows", {"train.csv": WINDOW_HEADER}, "train.csv", 2, "no windows after the header"),
    ("windows-invalid-utf8", "windows", {"train.csv": W.encode() + b'1,"[1]","[\'\xff\']",5\n'}, "train.csv", 20,
     "not valid utf-8"),
    ("windows-duplicate", "windows", {"train.csv": W + W.split("\n")[2] + "\n"}, "train.csv", 20, "repeats"),
    ("windows-open-quote", "windows", {"train.csv": W + '1,"[1, 2\n'}, "train.csv", 20, "is a quote left open?"),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_raises_one_error_naming_the_file_the_line_and_the_expectation(tmp_path, case):
    _, reader, files, bad, line, expected = case
    folder = write_files(tmp_path, files)
    with pytest.raises(DataFormatError) as err:
        READERS[reader](folder)
    message = str(err.value)
    where = f"{folder / bad}, line {line}: " if line is not None else f"{folder / bad}: "
    assert message.startswith(where), message
    assert expected in message, message
    assert err.value.line == line


def test_file_with_a_utf8_byte_order_mark_reads_like_one_without(tmp_path):
    plain = read_atomic(write_files(tmp_path / "a", {"d.inter": I}) / "d.inter")
    marked = read_atomic(write_files(tmp_path / "b", {"d.inter": "\ufeff" + I}) / "d.inter")
    assert marked.inter.equals(plain.inter)


def test_repeated_pair_without_timestamps_is_a_repeat_consumption_not_a_duplicate(tmp_path):
    path = write_files(tmp_path, {"d.inter": "user_id:token\titem_id:token\nu\ta\nu\ta\n"}) / "d.inter"
    assert read_atomic(path).inter.height == 2


# ------------------------------------------------------------------ through the `bench` CLI
def stats(root: Path, dataset: str, *overrides: str) -> int:
    return cli.main(["data", "stats", dataset, "--root", str(root), *[a for o in overrides for a in ("--set", o)]])


# (case id, dataset, files in <root>/<dataset>/, the bad file, line, expectation)
CLI_FILES = [
    ("atomic", "beauty", {"beauty.inter": I + "u1\ti1\n"}, "beauty.inter", 38, "expected 3"),
    ("amazon", "beauty", {"reviews_Beauty_5.json": R + "[1, 2]\n"}, "reviews_Beauty_5.json", 37, "expected a JSON object"),
    ("movielens", "ml-100k", {"u.data": U, "u.item": uitem(range(1, 8))}, "u.data", 12, "has no row in"),
    ("windows", "toy", {**window_splits(), "valid.csv": WINDOW_HEADER}, "valid.csv", 2,
     "no windows after the header"),
]


@pytest.mark.parametrize("case", CLI_FILES, ids=[c[0] for c in CLI_FILES])
def test_bench_reports_a_bad_file_in_one_line_and_exits_2(tmp_path, capsys, case):
    _, dataset, files, bad, line, expected = case
    write_files(tmp_path / dataset, files)
    assert stats(tmp_path, dataset, "dataset.k_core=0") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench data: error: {tmp_path / dataset / bad}, line {line}: ") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


K_CORE_CASES = [
    ("atomic", "beauty", {"beauty.inter": I}),
    ("amazon", "beauty", {"reviews_Beauty_5.json": R}),
    ("movielens", "ml-100k", {"u.data": U}),
    ("windows", "toy", window_splits()),
]


@pytest.mark.parametrize("case", K_CORE_CASES, ids=[c[0] for c in K_CORE_CASES])
def test_k_core_that_removes_everything_is_an_error_naming_the_files_and_counts(tmp_path, capsys, case):
    _, dataset, files = case
    write_files(tmp_path / dataset, files)
    assert stats(tmp_path, dataset, "dataset.k_core=50") == 2
    err = capsys.readouterr().err
    assert "dataset.k_core=50 removes every interaction of" in err and str(tmp_path / dataset) in err
    assert "the most active user has 6" in err and "lower dataset.k_core" in err


def test_recipe_that_removes_everything_names_the_recipe(tmp_path, capsys):
    write_files(tmp_path / "toy", {"reviews_Toys_and_Games_5.json": R, "meta_Toys_and_Games.json": meta()})
    assert stats(tmp_path, "toy") == 2
    assert "recipe (titled items only, 5-core) leaves none of its 36 interactions" in capsys.readouterr().err


def run(tmp_path: Path, *args: str) -> int:
    """`bench run` on tiny data (8 items, so cut-offs 1 and 5); every call here must fail before training."""
    return cli.main(["run", "--runs-dir", str(tmp_path / "runs"), "--backbone", "gru4rec", "--profile", "smoke",
                     "eval.ks=[1,5]", "train.monitor=valid/ndcg@5", *args])


def test_split_without_validation_instances_is_an_error_before_training(tmp_path, capsys):
    write_files(tmp_path / "beauty", {"beauty.inter": atomic_inter(rows(per=2))})
    assert run(tmp_path, "--dataset", "beauty", f"dataset.root={tmp_path}", "dataset.k_core=0") == 2
    err = capsys.readouterr().err
    assert "the loo split leaves 0 validation and 0 test instances" in err
    assert "users with at least 3 interactions" in err
    assert not list((tmp_path / "runs").glob("*/checkpoints"))


def test_split_without_training_targets_is_an_error_before_training(tmp_path, capsys):
    write_files(tmp_path / "beauty", {"beauty.inter": atomic_inter(rows(per=3))})
    assert run(tmp_path, "--dataset", "beauty", f"dataset.root={tmp_path}", "dataset.k_core=0") == 2
    assert "no training targets" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/checkpoints"))


# ------------------------------------------------------------------ hypothesis: never a foreign exception
def assert_reads_or_names_the_file(read, path: Path) -> None:
    """``read(path)`` returns RawData with a well-formed, non-empty interaction frame, or raises a
    DataFormatError whose message names ``path``; any other exception fails the test."""
    try:
        raw = read(path)
    except DataFormatError as exc:
        assert str(path) in str(exc)
        return
    assert raw.inter.schema == INTER_SCHEMA and raw.inter.height > 0
    assert raw.inter.null_count().sum_horizontal().item() == 0


PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text close to the formats (digits, quotes, brackets, other separators) so examples get past the
# first checks; field separators come from the line layout (ragged lines give wrong field counts).
FIELD_TEXT = st.text(alphabet=st.sampled_from(list(" ,:|[]'\"{}u1i29.-e\xe9\ufeff")), max_size=12)


def lines_of_width(width: int):
    return st.lists(st.lists(FIELD_TEXT, min_size=width, max_size=width), max_size=8)


# Mostly lines of one width (so examples reach the per-column checks), sometimes ragged ones.
LINES = st.one_of(st.integers(1, 5).flatmap(lines_of_width), st.lists(st.lists(FIELD_TEXT, min_size=1, max_size=5), max_size=8))
ATOMIC_HEADERS = st.sampled_from(["user_id:token\titem_id:token\ttimestamp:float", "user_id:token\titem_id:token",
                                  "item_id:token\tuser_id:token\trating:float\ttimestamp:float", "user_id\titem_id", ""])
# (header, lines), the lines mostly as wide as the header
ATOMIC_FILES = ATOMIC_HEADERS.flatmap(
    lambda header: st.tuples(st.just(header), st.one_of(lines_of_width(len(header.split("\t"))), LINES)))


@PROPERTY
@given(data=st.binary(max_size=300), compressed=st.booleans())
def test_arbitrary_bytes_as_inter_file_read_or_raise_a_data_format_error(tmp_path, data, compressed):
    path = tmp_path / ("d.inter.gz" if compressed else "d.inter")
    path.write_bytes(gz(data) if compressed else data)
    assert_reads_or_names_the_file(read_atomic, path)


@PROPERTY
@given(content=ATOMIC_FILES)
def test_arbitrary_lines_under_an_atomic_header_read_or_raise_a_data_format_error(tmp_path, content):
    header, lines = content
    path = tmp_path / "d.inter"
    path.write_text("\n".join([header, *("\t".join(fields) for fields in lines)]), encoding="utf-8")
    assert_reads_or_names_the_file(read_atomic, path)


@PROPERTY
@given(lines=LINES)
def test_arbitrary_ratings_lines_read_or_raise_a_data_format_error(tmp_path, lines):
    path = tmp_path / "u.data"
    path.write_text("\n".join("\t".join(fields) for fields in lines), encoding="latin-1", errors="replace")
    assert_reads_or_names_the_file(read_movielens_100k, path)


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40), st.text(max_size=4), st.lists(st.integers(), max_size=2))
REVIEW = st.dictionaries(st.sampled_from(["reviewerID", "asin", "unixReviewTime", "overall"]), JSON_VALUES)


@PROPERTY
@given(records=st.lists(st.one_of(REVIEW.map(json.dumps), FIELD_TEXT), max_size=6))
def test_arbitrary_review_lines_read_or_raise_a_data_format_error(tmp_path, records):
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(records), encoding="utf-8")
    assert_reads_or_names_the_file(read_amazon, path)


@PROPERTY
@given(lines=LINES, header=st.sampled_from([WINDOW_HEADER.strip(), "user_id,item_ids,timestamp", "a,b"]))
def test_arbitrary_window_csv_lines_read_or_raise_a_data_format_error(tmp_path, lines, header):
    path = tmp_path / "train.csv"
    path.write_text("\n".join([header, *(",".join(fields) for fields in lines)]), encoding="utf-8")
    assert_reads_or_names_the_file(lambda p: read_llm4dsr_windows([p]), path)


# ------------------------------------------------------------------ names, keys, types and ranges
def run_synthetic(tmp_path: Path, *args: str) -> int:
    return cli.main(["run", "--runs-dir", str(tmp_path / "runs"), "--dataset", "synthetic", "--profile", "smoke",
                     "dataset.synthetic.n_users=30", "dataset.synthetic.n_items=20", "dataset.max_len=8", *args])


@pytest.mark.parametrize("args, message", [
    (["--backbone", "sasrek"], "unknown backbone 'sasrek'; did you mean 'sasrec'? Available: bert4rec, caser,"),
    (["backbone.name=sasrek"], "unknown backbone 'sasrek'; did you mean 'sasrec'?"),
    (["--denoiser", "iadrs"], "unknown denoiser 'iadrs'; did you mean 'iadsr'? Available: cl4srec,"),
    (["--dataset", "beuaty"], "unknown dataset 'beuaty'; did you mean 'beauty'? Available: beauty, game,"),
    (["--profile", "quik"], "unknown profile 'quik'; available: budget, quick, smoke"),
])
def test_unknown_name_lists_the_valid_names_and_exits_2_before_any_run_directory(tmp_path, capsys, args, message):
    assert run_synthetic(tmp_path, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_unknown_text_encoder_lists_backends_and_presets(capsys):
    with pytest.raises(ConfigError, match=r"unknown text encoder 'minilmx'; did you mean 'minilm'\? "
                                          r"Available: llm2vec, llm2vec-llama31-8b, minilm"):  # tests may register more
        resolve_encoder("minilmx")
    assert cli.main(["embed", "--dataset", "synthetic", "--encoder", "minilmx", "dataset.synthetic.n_items=20"]) == 2
    assert "unknown text encoder 'minilmx'" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "unknown key 'train.lrr'; did you mean 'train.lr'? Valid keys of train: accelerator,"),
    ("dataset.noise.ratoi=0.1", "unknown key 'dataset.noise.ratoi'; did you mean 'dataset.noise.alpha'?"),
    ("eval.k=[5]", "unknown key 'eval.k'; did you mean 'eval.ks'?"),
    ("sed=3", "unknown key 'sed'; did you mean 'seed'? Valid keys of the run config:"),
    ("backbone.hiden_size=32", "backbone 'gru4rec': unknown key 'backbone.hiden_size'; did you mean 'backbone.hidden_size'? "
                               "Valid keys of backbone: dropout, embedding_size, gru_bias, hidden_size, learned_padding, "
                               "num_layers, tied_output, xavier_init"),
    ("train.lr=abc", "train.lr: 'abc' is not a float"),
    ("train.batch_size=1.5", "train.batch_size: '1.5' is not an integer"),
    ("eval.ks=abc", "eval.ks: expected a list"),
    ("backbone.dropout=abc", "backbone 'gru4rec': backbone.dropout: 'abc' is not a float"),
])
def test_misspelt_key_or_wrong_type_is_one_line_naming_the_key(tmp_path, capsys, override, message):
    assert run_synthetic(tmp_path, "--backbone", "gru4rec", override) == 2
    err = capsys.readouterr().err
    assert f"bench run: error: {message}" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_misspelt_denoiser_key_suggests_the_closest_key(tmp_path, capsys):
    assert run_synthetic(tmp_path, "--denoiser", "semantic-outlier", "denoiser.ratoi=0.2") == 2
    assert ("denoiser 'semantic-outlier': unknown key 'denoiser.ratoi'; did you mean 'denoiser.ratio'? "
            "Valid keys of denoiser: encoder, protect_last, ratio") in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("train.lr=-0.01", "train.lr=-0.01; expected a learning rate >= 0"),
    ("dataset.noise.alpha=1.5", "dataset.noise.alpha=1.5; expected a probability in [0, 1]"),
    ("train.batch_size=0", "train.batch_size=0; expected >= 1"),
    ("eval.batch_size=0", "eval.batch_size=0; expected >= 1"),
    ("dataset.max_len=0", "dataset.max_len=0; expected >= 1"),
    ("train.max_epochs=0", "train.max_epochs=0; expected >= 1"),
    ("train.patience=-1", "train.patience=-1; expected >= 0"),
    ("train.weight_decay=-1", "train.weight_decay=-1.0; expected >= 0"),
    ("train.num_negatives=0", "train.num_negatives=0; expected >= 1"),
    ("train.limit_train_batches=-1", "train.limit_train_batches=-1; expected a share in (0, 1] or a number of batches"),
    ("dataset.k_core=-1", "dataset.k_core=-1; expected >= 0"),
    ("eval.ks=[0,10]", "eval.ks=[0, 10]; expected a non-empty list of cut-offs K >= 1"),
    ("seed=-1", "seed=-1; expected an integer in [0, 2**32)"),
    ("backbone.dropout=1.5", "backbone 'gru4rec': backbone.dropout=1.5; expected a dropout probability in [0, 1)"),
    ("backbone.embedding_size=0", "backbone 'gru4rec': backbone.embedding_size=0; expected >= 1"),
])
def test_out_of_range_value_is_rejected_before_any_run_directory(tmp_path, capsys, override, message):
    assert run_synthetic(tmp_path, "--backbone", "gru4rec", override) == 2
    assert f"bench run: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_every_out_of_range_key_is_listed_in_one_error():
    with pytest.raises(ConfigError, match=r"^dataset.noise.alpha=2.0; expected a probability in \[0, 1\]\. "
                                          r"train.lr=-1.0; expected a learning rate >= 0"):
        compose(dataset="synthetic", overrides=["train.lr=-1", "dataset.noise.alpha=2"])


@pytest.mark.parametrize("denoiser", ["none", "semantic-outlier"])
def test_k_larger_than_the_item_count_is_rejected_before_denoising_and_training(tmp_path, capsys, denoiser):
    assert run_synthetic(tmp_path, "--denoiser", denoiser, "eval.ks=[5,10,50]") == 2
    err = capsys.readouterr().err
    assert "eval.ks=[5, 10, 50]: K=50 is larger than the 20 items of dataset 'synthetic'; expected cut-offs K <= 20" in err
    made = [p.name for p in (tmp_path / "runs").rglob("*")]
    assert "denoised" not in made and "checkpoints" not in made and "result.json" not in made


def test_grid_cell_with_an_out_of_range_override_names_the_grid_file_and_cell(tmp_path):
    from benchmark.grid import expand, load_grid

    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndatasets: [synthetic]\nbackbones: [gru4rec]\ndenoisers: [none]\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=rf"{grid}: cell '.*gru4rec.*': train.lr=-1.0; expected a learning rate >= 0"):
        expand(load_grid(grid), ["train.lr=-1"])


def test_every_shipped_dataset_backbone_denoiser_and_profile_passes_the_range_checks():
    from benchmark.config import CONFIG_DIR
    from benchmark.registry import BACKBONES, DENOISERS

    for path in sorted((CONFIG_DIR / "datasets").glob("*.yaml")):
        compose(dataset=path.stem)
    for path in sorted((CONFIG_DIR / "profiles").glob("*.yaml")):
        compose(profile=path.stem)
    for name in BACKBONES.names():
        cfg = compose(backbone=name)
        BACKBONES.get(name).parse_config(dict(cfg.backbone))
    for name in DENOISERS.names():
        cfg = compose(denoiser=name)
        DENOISERS.get(name).parse_config(dict(cfg.denoiser))
