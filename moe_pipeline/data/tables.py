"""Tables (csv, parquet) as named column groups: one table feeds many experts through its fields.

A table source names its fields either in the shorthand (`label:` and `columns:` give the
fields `features` and `label`) or as column groups (`fields: {mean: {columns: ["mean *"]},
diagnosis: {columns: [diagnosis], kind: categorical}}`). Each field has a kind:
`features` (float32, (n, k), column names kept), `categorical` (class ids, (n,), names = the
sorted values) or `numeric` (float32, (n,) or (n, k): a regression target).

Parsing is columnar (pyarrow, in C): a cell is never a Python object unless a column is
wrong, and then only that column is walked to name the first bad cell. Never a silent guess:
a duplicated header name, a row of another length, an empty or non-numeric cell where a
number belongs, an empty class, two spellings of one number as two classes (`0`, `00`), a
column in two fields are all a `DataError` naming the file, row and column. Must not import
torch or mlflow.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from moe_pipeline.errors import DataError, quoted
from moe_pipeline.pipeline.columns import Group, groups_of

def read_csv(source: Any, path: Path) -> tuple[list[Group], dict[str, Any]]:
    """The groups and each needed column as a pyarrow array (row i is file line i + 2): numbers
    as float64 where every cell parses, else text, for `to_fields` to name the first bad cell."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected a header row and one row per sample")
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as "
                        "UTF-8") from None
    first_line = raw.decode("utf-8-sig").split("\n", 1)[0]
    try:
        header = next(csv.reader(io.StringIO(first_line), delimiter=source.delimiter), [""])
    except csv.Error as exc:  # e.g. a header cell past the csv module's field size limit
        raise DataError(f"{path}: line 1 (the header): {exc}") from None
    if len(header) < 2:
        # the line itself is not quoted: a path pointing at some other file must not print its content
        raise DataError(f"{path}: found one column with delimiter {source.delimiter!r} in the first line; is it a "
                        "table? If so, set `delimiter:` to the file's separator")
    no_duplicates(header, path)
    groups = groups_of(source, header, path)
    wanted = [c for g in groups for c in g.columns]
    numbers = {c for g in groups if g.kind != "categorical" for c in g.columns}

    def parse(types):
        return pacsv.read_csv(
            io.BytesIO(raw), parse_options=pacsv.ParseOptions(delimiter=source.delimiter),
            read_options=pacsv.ReadOptions(use_threads=True),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=wanted,
                                                 strings_can_be_null=False, null_values=[]))

    try:  # numbers parsed as numbers in C; a column pyarrow cannot parse is read again as text
        table = parse({c: pa.float64() if c in numbers else pa.string() for c in header})
    except pa.ArrowInvalid:
        try:  # as text, `to_fields` names the first bad cell
            table = parse({c: pa.string() for c in header})
        except pa.ArrowInvalid as exc:  # a row of another length (or a broken quote): say which, in our words
            _name_the_bad_row(raw, source.delimiter, len(header), path)
            # where Python's csv reads every row whole but pyarrow does not: pyarrow's reason, without
            # the row's content it quotes
            raise DataError(f"{path}: cannot read as CSV: {': '.join(str(exc).split(': ')[:2])}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has a header but no rows")
    return groups, {c: table.column(c).combine_chunks() for c in wanted}


def read_parquet(source: Any, path: Path, max_bytes: int) -> tuple[list[Group], dict[str, Any]]:
    """The groups and each needed column as a pyarrow array (row i is the file's row i); a file
    whose needed columns would take more than `max_bytes` to read is refused from its footer."""
    import pyarrow.parquet as pq

    try:  # the footer first: the columns and the row count, before any data is read
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.to_arrow_schema().names
    except Exception as exc:  # pyarrow raises several types for a broken file; the user needs the reason
        raise DataError(f"{path}: cannot read parquet: {exc}") from None
    if meta.num_rows == 0:
        raise DataError(f"{path}: the file has no rows")
    no_duplicates(names, path)
    groups = groups_of(source, names, path)
    wanted = [c for g in groups for c in g.columns]
    size = meta.num_rows * len(wanted) * 8  # each needed column as float64 while it is checked
    if size > max_bytes:
        need = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
        raise DataError(f"{path}: {meta.num_rows} rows x {len(wanted)} columns need {need} to read, "
                        "more than half this machine's memory; split the data or use a smaller sample")
    try:
        table = pq.read_table(path, columns=wanted)  # only the columns the fields name
    except Exception as exc:
        raise DataError(f"{path}: cannot read parquet: {exc}") from None
    return groups, {c: table.column(c).combine_chunks() for c in wanted}


def to_fields(groups: list[Group], columns: dict[str, Any], path: Path, first_row: int,
              known: dict[str, list[str]] | None = None):
    """(fields, feature names, class names) of the groups, every cell checked. `known`: each
    categorical field's class names, found beforehand over the whole file (a block of rows is
    read with the file's classes, not its own)."""
    fields, names, classes = {}, {}, {}
    for group in groups:
        if group.kind == "categorical":
            column = columns[group.columns[0]]
            text = class_texts(column, group, path, first_row)
            classes[group.name] = known[group.name] if known is not None else \
                class_order(pc_unique(text), group.columns[0], path)
            fields[group.name] = class_index(text, classes[group.name])
            continue
        # one float32 block, filled a column at a time: no float64 copy of the whole group
        matrix = np.empty((len(columns[group.columns[0]]), len(group.columns)), dtype=np.float32)
        for j, c in enumerate(group.columns):
            matrix[:, j] = _numbers(columns[c], c, group, path, first_row)
        if group.kind == "numeric" and matrix.shape[1] == 1:
            matrix = np.ascontiguousarray(matrix[:, 0])
        else:
            names[group.name] = list(group.columns)
        fields[group.name] = matrix
    return fields, names, classes


def _numbers(column, name: str, group: Group, path: Path, first_row: int) -> np.ndarray:
    """A column as float64, or the first cell that is empty, not a number, NaN or inf, named."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        try:
            values = pc.cast(pc.utf8_trim_whitespace(values), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = None
    elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_decimal(values.type):
        values = pc.cast(values, pa.float64())
    else:
        raise DataError(f"{path}: column {name!r} holds {values.type}, not numbers; field '{group.name}' "
                        f"({group.kind}) needs numbers")
    if values is not None and values.null_count == 0:
        out = values.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(out)
        if not bad.any():
            return out
        row = int(np.argmax(bad))
        raise DataError(f"{path}: {_row(row, first_row)}, column {name!r}: NaN or inf; field '{group.name}' "
                        f"({group.kind}) must hold finite numbers (clean the file, or leave the column out)")
    out = np.empty(len(column), dtype=np.float64)
    for row, cell in enumerate(column.to_pylist()):  # only a wrong column is walked, to name its first bad cell
        text = "" if cell is None else str(cell).strip()
        value = _float(text)
        if value is None or not np.isfinite(value):
            what = "an empty cell" if not text else f"{quoted(cell)}, not a number" if value is None else "NaN or inf"
            raise DataError(f"{path}: {_row(row, first_row)}, column {name!r}: {what}; field '{group.name}' "
                            f"({group.kind}) must hold finite numbers (clean the file, or leave the column "
                            "out of it)")
        out[row] = value
    return out  # numbers pyarrow does not parse but Python does (e.g. `1_000`)


def class_texts(column, group: Group, path: Path, first_row: int):
    """A categorical column as trimmed text, or the first null or empty cell, named."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = group.columns[0]
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{path}: {_row(row, first_row)}, column {name!r}: an empty (null) cell; every row needs a "
                        f"class in field '{group.name}' (clean the file or drop the row)")
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    empty = pc.equal(text, "").to_numpy(zero_copy_only=False)
    if empty.any():
        raise DataError(f"{path}: {_row(int(np.argmax(empty)), first_row)}, column {name!r}: an empty cell; a class "
                        f"cannot be empty in field '{group.name}' (clean the file or drop the row)")
    return text


def pc_unique(text) -> list[str]:
    """The distinct values of a text column."""
    import pyarrow.compute as pc

    return pc.unique(text).to_pylist()


def class_order(values: list[str], name: str, path: Path) -> list[str]:
    """Class names: the distinct values, sorted (numerically when all are numbers); one number
    written two ways (`0`, `00`) is an error, not two classes."""
    distinct = sorted(set(values))
    numbers = [_float(v) for v in distinct]
    if all(n is not None for n in numbers):
        spelled: dict[float, str] = {}
        for value, number in zip(distinct, numbers):
            if number in spelled:
                raise DataError(f"{path}: column {name!r} holds {quoted(spelled[number])} and {quoted(value)}, one number written "
                                f"two ways; as classes they would be two: write each class one way")
            spelled[number] = value
        distinct = [d for _, d in sorted(zip(numbers, distinct))]
    return distinct


def class_index(text, classes: list[str]) -> np.ndarray:
    """Each row's class id: its value's place in `classes`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.index_in(text, value_set=pa.array(classes, pa.string())).to_numpy(zero_copy_only=False).astype(np.int64)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _row(index: int, first_row: int) -> str:
    return f"row {index + first_row}"


def no_duplicates(header: list[str], path: Path | str) -> None:
    """A header naming a column twice is an error: columns are found by name, and one would hide the other."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(f"{path}: the header names column {quoted(name)} twice (columns {seen[name]} and {number}); "
                            "rename one: a table's columns are found by name")
        seen[name] = number


def _name_the_bad_row(raw: bytes, delimiter: str, width: int, path: Path) -> None:
    rows = csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=delimiter)
    try:
        for number, row in enumerate(rows, start=1):
            if row and len(row) != width:
                raise DataError(f"{path}: row {number} has {len(row)} cells, the header {width}")
    except csv.Error as exc:  # a broken quote, a cell past the field size limit
        raise DataError(f"{path}: line {rows.line_num}: {exc}") from None
