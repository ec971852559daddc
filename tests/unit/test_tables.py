"""Tables as column groups: values equal a brute-force parse, and every silent guess is an error
naming the file, row and column."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from moe_pipeline.data.files import read
from moe_pipeline.errors import DataError
from moe_pipeline.pipeline.spec import TableSource


def _source(**settings) -> TableSource:
    return TableSource.model_validate({"loader": "csv", "path": "t.csv", **settings})


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_column_groups_keep_file_order_names_and_kinds_and_equal_a_brute_force_parse(tmp_path: Path):
    rng = np.random.default_rng(0)
    rows = [[f"{v:.6g}" for v in rng.normal(size=5)] + [rng.choice(["b", "a", "c"])] for _ in range(40)]
    header = ["mean x", "worst x", "mean y", "worst y", "price", "kind"]
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    source = _source(fields={"mean": {"columns": ["mean *"]}, "worst": {"columns": ["worst *"]},
                             "price": {"columns": ["price"], "kind": "numeric"},
                             "kind": {"columns": ["kind"], "kind": "categorical"}})
    data = read(source, path, "t")
    by_hand = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    assert data.names["mean"] == ["mean x", "mean y"] and data.names["worst"] == ["worst x", "worst y"]
    want_mean = np.array([[float(a), float(b)] for a, b in zip(by_hand["mean x"], by_hand["mean y"])], np.float32)
    assert np.array_equal(data.fields["mean"], want_mean)
    assert data.fields["price"].shape == (40,) and data.fields["price"].dtype == np.float32
    assert np.array_equal(data.fields["price"], np.array([float(v) for v in by_hand["price"]], np.float32))
    assert data.classes["kind"] == ["a", "b", "c"]
    assert [data.classes["kind"][i] for i in data.fields["kind"]] == by_hand["kind"]


def test_numeric_classes_sort_as_numbers(tmp_path: Path):
    data = read(_source(label="y"), _csv(tmp_path, "a,y\n1,10\n2,9\n3,10\n4,-1\n"), "t")
    assert data.classes["label"] == ["-1", "9", "10"] and data.fields["label"].tolist() == [2, 1, 2, 0]


@pytest.mark.parametrize("text, settings, fragment", [
    ("a,a,b\n1,2,x\n", {"label": "b"}, "the header names column 'a' twice (columns 1 and 2)"),
    ("a,b,y\n1,2,x\n3,x\n", {"label": "y"}, "row 3 has 2 cells, the header 3"),
    ("a,b,y\n1,,x\n", {"label": "y"}, "row 2, column 'b': an empty cell"),
    ("a,b,y\n1,oops,x\n", {"label": "y"}, "row 2, column 'b': 'oops', not a number"),
    ("a,b,y\n1,2,x\n1,nan,x\n", {"label": "y"}, "row 3, column 'b': NaN or inf"),
    ("a,b,y\n1,2,x\n3,4, \n", {"label": "y"}, "row 3, column 'y': an empty cell; a class cannot be empty"),
    ("a,b,y\n1,2,0\n3,4,00\n", {"label": "y"}, "holds '0' and '00', one number written two ways"),
    ("a,b,y\n1,2,x\n", {"label": "y", "columns": ["a", "y"]}, "is the label and also listed in `columns:`"),
    ("a,b,y\n1,2,x\n", {"fields": {"p": {"columns": ["a", "b"]}, "q": {"columns": ["b"]}}},
     "column 'b' is in two fields, 'p' and 'q'"),
    ("alpha,b,y\n1,2,x\n", {"fields": {"p": {"columns": ["alpah"]}}}, "no column matches 'alpah' (did you mean 'alpha'?)"),
    ("a,b,y\n1,2,x\n", {"fields": {"p": {"columns": ["a", "b"], "kind": "categorical"}}},
     "is categorical but has 2 columns"),
    ("a,b,y\n1,2,x\n", {"label": "label"}, "no column 'label' (the label)"),
])
@pytest.mark.reliability("silent guesses in tables")
def test_a_silent_guess_is_an_error_naming_file_row_and_column(tmp_path: Path, text, settings, fragment):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as info:
        read(_source(**settings), path, "t")
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)


@pytest.mark.reliability("silent guesses in tables")
def test_a_huge_cell_is_quoted_by_its_start_and_length_not_whole(tmp_path: Path):
    """A 200,000-character cell (past the CSV reader's default field limit) is named, row and column,
    and shown by its first characters: the message stays one readable line."""
    path = _csv(tmp_path, "a,b,y\n1,2,x\n1," + "z" * 200_000 + ",x\n")
    with pytest.raises(DataError) as info:
        read(_source(label="y"), path, "t")
    message = str(info.value)
    assert f"{path}: row 3, column 'b': " in message and "(200000 characters)" in message and len(message) < 600


@pytest.mark.reliability("silent guesses in tables")
def test_a_file_that_is_not_a_table_is_named_without_quoting_its_content(tmp_path: Path):
    """A path pointing at some other file (a key, a password file) is refused without printing its
    first line: an error message must not leak a file's content."""
    path = _csv(tmp_path, "root:secret-hash:0:0\nmore\n")
    with pytest.raises(DataError) as info:
        read(_source(label="y"), path, "t")
    assert "secret" not in str(info.value) and "found one column" in str(info.value)


def test_fields_and_the_shorthand_are_one_or_the_other():
    with pytest.raises(ValueError, match="either `fields:`"):
        _source(label="y", fields={"p": {"columns": ["a"]}})


@pytest.mark.reliability("silent guesses in tables")
def test_parquet_nulls_are_errors_not_classes_or_numbers(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "y": ["x", None, "z"]}), path)
    source = TableSource.model_validate({"loader": "parquet", "path": "t.parquet", "label": "y"})
    with pytest.raises(DataError, match=r"row 1, column 'y': an empty \(null\) cell"):
        read(source, path, "t")
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "y": ["x", "y", "z"]}), path)
    with pytest.raises(DataError, match=r"row 1, column 'a': an empty cell"):
        read(source, path, "t")
    pq.write_table(pa.table({"a": [1, 2, 3], "y": [0, 1, 1]}), path)
    data = read(source, path, "t")
    assert data.fields["features"].tolist() == [[1.0], [2.0], [3.0]] and data.classes["label"] == ["0", "1"]


def test_validate_finds_a_wrong_column_from_the_header_alone_at_the_sources_key(tmp_path: Path):
    from moe_pipeline.errors import PipelineError
    from moe_pipeline.pipeline.loader import load_pipeline

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "t.csv").write_text("mean a,mean b,worst a,label\n" + "1,2,3,x\n" * 3)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nsources:\n  s:\n    loader: csv\n    path: t.csv\n    fields:\n"
                        "      m: {columns: ['mean *']}\n      w: {columns: ['wrost *']}\n"
                        "experts:\n  e: {inputs: [s.m], target: s.w, model: {kind: mlp}}\n")
    with pytest.raises(PipelineError) as info:
        load_pipeline(pipeline)
    text = str(info.value)
    assert text.startswith(f"{pipeline}:6:5: sources.s.fields: ") and "no column matches 'wrost *'" in text


def test_a_parquet_file_too_large_for_memory_is_refused_from_its_footer(tmp_path: Path, monkeypatch):
    """The row count and columns come from the footer: a file that would not fit is an error before
    a byte of its data is read (the bound is half this machine's memory; here set small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moe_pipeline.data import files

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0] * 1000, "b": [2.0] * 1000, "y": ["x", "z"] * 500}), path)
    source = TableSource.model_validate({"loader": "parquet", "path": "t.parquet", "label": "y"})
    monkeypatch.setattr(files, "max_array_bytes", lambda: 1000 * 3 * 8 - 1)
    read = []
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: read.append(a) or pytest.fail("data read"))
    with pytest.raises(DataError) as info:
        files.read(source, path, "t")
    assert str(info.value) == (f"{path}: 1000 rows x 3 columns need 0.0 MiB to read, more than half this machine's "
                               "memory; split the data or use a smaller sample") and read == []


# ---------------------------------------------------------------- fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TABLE = "a,b,label\n" + "".join(f"{i * 0.5},{-i},{'yes' if i % 3 else 'no'}\n" for i in range(30))
CELLS = [",", "\n", '"', "nan", "inf", "", " ", "1e400", "00", "0", "\x00", "\xff", "a,a", "\r\n", "x" * 200_000]


@st.composite
def mutated_table(draw) -> bytes:
    text = TABLE
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(CELLS)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
    return text.encode("utf-8", "surrogateescape") if "\xff" not in text else text.encode("latin-1", "replace")


@pytest.mark.reliability("fuzzed CSV files", tried=400)
@settings(derandomize=True, max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=mutated_table())
def test_a_mutated_csv_reads_whole_or_is_one_data_error(content: bytes, tmp_path_factory):
    """Any mutation of a small table: it reads (every row, finite numbers, no empty class) or is
    refused with a DataError naming the file; never another exception."""
    path = tmp_path_factory.getbasetemp() / "fuzz.csv"
    path.write_bytes(content)
    try:
        data = read(_source(label="label"), path, "t")
    except DataError as exc:
        assert str(exc).startswith(f"{path}"), str(exc)[:200]
        return
    assert np.isfinite(data.fields["features"]).all()
    assert len(data.fields["features"]) == len(data.fields["label"]) and "" not in data.classes["label"]


BAD_CSV = {  # name -> (bytes of the file, fragment of the message)
    "empty file": (b"", "the file is empty"),
    "wrong delimiter": (b"a;b;cultivar\n1;2;x\n", "found one column"),
    "not UTF-8": ("a,b,cultivar\n1,2,caf\u00e9\n".encode("latin-1"), "line 2: byte 0xe9 is not UTF-8"),
    "non-numeric cell": (b"a,b,cultivar\n1,2,x\n3,oops,y\n", "row 3, column 'b': 'oops', not a number"),
    "NaN in features": (b"a,b,cultivar\n1,2,x\n3,nan,y\n", "row 3, column 'b': NaN or inf"),
    "no label column": (b"a,b,kind\n1,2,x\n", "no column 'cultivar'"),
}


@pytest.mark.reliability("bad data files")
@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_a_bad_csv_is_one_data_error_naming_the_file(case: str, tmp_path: Path):
    content, fragment = BAD_CSV[case]
    (tmp_path / "wine.csv").write_bytes(content)
    source = TableSource.model_validate({"loader": "csv", "path": "wine.csv", "label": "cultivar"})
    with pytest.raises(DataError) as info:
        read(source, tmp_path / "wine.csv", "t")
    assert str(info.value).startswith(f"{tmp_path / 'wine.csv'}: ") and fragment in str(info.value), str(info.value)
