"""The README's own-data examples run as written: each `<!-- example: NAME -->` block is taken
from README.md (never a copy), its data script run, its YAML written, its commands run.

What is checked beyond exit 0 is what the README says of them: one table feeds three experts,
`predict` reads a parquet file by column names, one edited `worst ...` cell blames that field
alone, a numeric column is a regression target.
"""
from __future__ import annotations

import csv
import json
import re
import runpy
import shlex
from pathlib import Path

import pytest

from tests.conftest import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def example(name: str) -> str:
    """The fenced block right after `<!-- example: name -->` in the README."""
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def commands(name: str) -> list[list[str]]:
    """The `moe-pipeline ...` lines of a bash example, as argument lists (comments dropped)."""
    lines = [shlex.split(line, comments=True) for line in example(name).splitlines()]
    assert all(line[0] == "moe-pipeline" for line in lines if line)
    return [line[1:] for line in lines if line]


@pytest.fixture
def project(tmp_path: Path, registry_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_one_table_cancer_example_runs_predicts_by_name_and_blames_one_field(project: Path, capsys):
    runpy.run_path(str(_script(project, "cancer data")))
    (project / "cancer.yaml").write_text(example("cancer.yaml"))
    run, predict, status = commands("cancer commands")
    assert cli(*run) == 0 and cli(*predict) == 0
    with open(project / "answers.csv") as fh:
        answers = list(csv.DictReader(fh))
    assert len(answers) == 20 and {a["diagnosis.class"] for a in answers} <= {"benign", "malignant"}
    rows = list(csv.reader(open(project / "data" / "cancer.csv")))
    column = rows[0].index("worst area")
    rows[7][column] = str(float(rows[7][column]) + 1)
    with open(project / "data" / "cancer.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    capsys.readouterr()
    assert cli(*status, "--json") == 0
    got = {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}
    assert {name: e["status"] for name, e in got.items()} == {"from_mean": "fresh", "from_worst": "stale",
                                                             "diagnosis": "pending"}
    assert got["from_worst"]["reasons"] == [{"kind": "DATA", "detail": "cancer.worst (data/cancer.csv) changed"}]


def test_the_diabetes_example_is_a_regression_from_a_csv_column(project: Path, capsys):
    runpy.run_path(str(_script(project, "diabetes data")))
    (project / "diabetes.yaml").write_text(example("diabetes.yaml"))
    run, predict = commands("diabetes commands")
    capsys.readouterr()
    assert cli(*run) == 0
    assert len(re.findall(r"r2 0\.\d{4}", capsys.readouterr().out)) == 2  # a regression's metric, per expert
    assert cli(*predict) == 0
    header = (project / "progression.csv").read_text().splitlines()[0].split(",")
    assert sorted(header) == ["from_blood.value", "from_body.value"]
    capsys.readouterr()
    assert cli("status", "diabetes.yaml", "--json") == 0
    assert {e["status"] for e in json.loads(capsys.readouterr().out)["experts"]} == {"fresh"}


def _script(project: Path, name: str) -> Path:
    path = project / f"{name.replace(' ', '_')}.py"
    path.write_text(example(name))
    return path
