"""The CSV reader: pyarrow parses, and every table reads exactly as Python's csv module
reads it (the reader keepbest had before, rebuilt here from the csv module alone), with
the same values, the same labels and, for a bad file, the same one-line message."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from keepbest.data.files import CsvRows, numeric_columns, read_csv_table, target_column
from keepbest.errors import DataError


def by_csv_module(path: Path, features: list[str], target: str):
    """Features and labels as the csv module and float() give them, field by field."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row]
    header = [name.strip() for name in rows[0]]
    x = np.array(
        [[float(row[header.index(f)]) for f in features] for row in rows[1:]], dtype="float32"
    )
    return x, np.array([row[header.index(target)].strip() for row in rows[1:]])


def read(path: Path, features: list[str], target: str):
    header, body = read_csv_table(path, ",", "data.path")
    x = numeric_columns(path, header, body, features, "data.path")
    return header, body, x, target_column(path, header, body, target, "data.path")


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffa, b ,label\n1.5,2,x\n3,4,y\n",  # byte-order mark, spaces around names
        "a,b,label\n\n1,2,x\n\n3,4,y\n\n",  # blank lines
        "a,b,label\r\n1,2,x\r\n3,4,y\r\n",  # CRLF
        "a,b,label\n 1 ,2\t,x\n3,4, y \n",  # spaces around numbers and labels
        'a,b,label\n"1","2","x, and y"\n3,4,"say ""hi"""\n',  # quoting
        'a,b,label\n1,2,"two\nlines"\n3,4,y\n',  # a newline inside quotes
        "a,b,label\n1e-3,-0,x\n.5,+7,y\n3.4028234e38,1e-45,z\n",  # float32 edges
        "a,b,label\n1,2,x\n3,4,y",  # no final newline
    ],
    ids=["bom", "blank", "crlf", "spaces", "quotes", "newline", "floats", "no-eol"],
)
def test_tables_read_as_the_csv_module_reads_them(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8", newline="")
    header, body, x, y = read(path, ["a", "b"], "label")
    assert isinstance(body, CsvRows)  # pyarrow read it
    assert header == ["a", "b", "label"]
    expected_x, expected_y = by_csv_module(path, ["a", "b"], "label")
    assert x.dtype == np.float32 and np.array_equal(x, expected_x)
    assert y.tolist() == expected_y.tolist()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,label\n1,2,x\n3,red,y\n", "t.csv line 3, column 'b': 'red' is not a number"),
        ("a,b,label\n1,2,x\n\n3,nan,y\n", "t.csv line 4, column 'b': 'nan' is not a finite"),
        ("a,b,label\n1,1e39,x\n", "t.csv line 2, column 'b': '1e39' is not a finite number"),
        ("a,b,label\n1,,x\n", "t.csv line 2, column 'b': '' is not a number"),
        ("a,b,label\n1,2,x\n3,4\n", "t.csv line 3 has 2 fields, the header has 3"),
        ("a,b,label\n1,2,x,9\n", "t.csv line 2 has 4 fields, the header has 3"),
        ("a,b,label\n1,2,x\n3,4, \n", "t.csv line 3: the target 'label' is empty"),
        ('a,b,label\n1,2,"x\ny"\n5,6,\n', "t.csv line 4: the target 'label' is empty"),
        ("a,b,label\n", "t.csv needs a header row and at least one data row"),
        ("", "t.csv needs a header row and at least one data row"),
    ],
    ids=[
        "text",
        "nan",
        "overflow",
        "empty-field",
        "short-row",
        "long-row",
        "empty-target",
        "line-after-quoted-newline",
        "header-only",
        "empty-file",
    ],
)
def test_bad_tables_get_the_messages_they_always_got(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(DataError) as caught:
        read(path, ["a", "b"], "label")
    [line] = caught.value.problems
    assert line.startswith(f"data.path: {message}")


def test_unreadable_files_name_the_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b,label\n1,2,\xff\n")
    with pytest.raises(DataError, match=r"data\.path: cannot read .*t\.csv \('utf-8' codec"):
        read(path, ["a", "b"], "label")
    with pytest.raises(
        DataError, match=r"data\.path: cannot read .* \(\[Errno 21\] Is a directory"
    ):
        read_csv_table(tmp_path, ",", "data.path")
