"""predict's table inputs: columns matched by the names training recorded, a missing one named,
a header-less CSV refused, parquet read like CSV."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from moe_pipeline.errors import DataError
from moe_pipeline.serve.inputs import from_file

NAMES = ["alcohol", "malic_acid", "ash"]


def _system():
    expert = SimpleNamespace(inputs=["wine.features"], saved=SimpleNamespace(feature_names=NAMES))
    return SimpleNamespace(fields={"wine.features": {"shape": [3], "dtype": "float32"}}, experts={"e": expert})


def test_columns_are_matched_by_name_whatever_their_order_in_the_file(tmp_path: Path):
    path = tmp_path / "rows.csv"
    path.write_text("ash,extra,alcohol,malic_acid\n3,9,1,2\n6,9,4,5\n")
    got = from_file(path, _system()).fields["wine.features"]
    assert np.array_equal(got, np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_parquet_reads_as_csv_does(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"malic_acid": [2.0], "alcohol": [1.0], "ash": [3.0]}), path)
    assert from_file(path, _system()).fields["wine.features"].tolist() == [[1.0, 2.0, 3.0]]


@pytest.mark.parametrize("text, fragment", [
    ("alcohol,malic_acid\n1,2\n", "no column 'ash'; the system reads 3 columns of wine.features by name: alcohol, malic_acid, ash"),
    ("1,2,3\n4,5,6\n", "the first row holds numbers"),
    ("alcohol,malic_acid,ash\n1,2,3\n1,oops,3\n", "row 3, column 'malic_acid': 'oops' is not a number"),
    ("alcohol,malic_acid,ash\n1,nan,3\n", "row 2, column 'malic_acid': NaN or inf"),
])
@pytest.mark.reliability("hostile predict inputs")
def test_a_table_predict_cannot_read_as_training_did_is_refused_naming_why(tmp_path: Path, text, fragment):
    path = tmp_path / "rows.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        from_file(path, _system())
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)


@pytest.mark.reliability("hostile predict inputs")
def test_an_npz_is_read_for_the_arrays_the_system_needs_and_each_is_size_checked_first(tmp_path: Path):
    """An unused member claiming 10^11 rows is never read; the same claim on the needed one is
    refused from its header, before anything is allocated."""
    import io
    import zipfile

    def header_only(shape) -> bytes:  # an .npy whose header claims `shape` and holds no data
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": shape})
        return out.getvalue()

    path = tmp_path / "rows.npz"
    with zipfile.ZipFile(path, "w") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.array([[1, 2, 3]], np.float32))
        archive.writestr("features.npy", buffer.getvalue())
        archive.writestr("unused.npy", header_only((10**11, 4)))
    assert from_file(path, _system()).fields["wine.features"].tolist() == [[1.0, 2.0, 3.0]]

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("features.npy", header_only((10**11, 3)))
    with pytest.raises(DataError, match=r"array 'features' declares shape \(100000000000, 3\)"):
        from_file(path, _system())


@pytest.mark.reliability("hostile predict inputs")
def test_a_csv_naming_a_column_twice_is_refused_not_a_traceback(tmp_path: Path):
    path = tmp_path / "rows.csv"
    path.write_text("alcohol,alcohol,malic_acid,ash\n1,9,2,3\n")
    with pytest.raises(DataError, match="the header names column 'alcohol' twice"):
        from_file(path, _system())


@pytest.mark.reliability("hostile predict inputs")
@pytest.mark.parametrize("name, content", [
    ("rows.parquet", b"PAR1 not really a parquet file"),
    ("rows.csv", b'alcohol,malic_acid,ash\n1,"2,3\n'),  # a quote that never closes
])
def test_a_damaged_table_file_is_one_data_error_naming_it(tmp_path: Path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        from_file(path, _system())
    assert str(info.value).startswith(f"{path}: cannot read it: "), str(info.value)
