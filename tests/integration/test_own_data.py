"""A user's own data files, written by the tests: wine as CSV, an NPZ, a parquet file, a folder
of digit PNGs. Staleness follows the files (DATA names the file), preprocessing is fitted on
the train split and stored with each version, and bad data is one clear error, nothing registered.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli, status_entries, store_bytes

WINE = """
name: wine
seed: 0
sources:
  wine:
    loader: csv
    path: data/wine.csv
    label: cultivar
    transform: {features: standardize}
    split: {val: 0.15, test: 0.15}
  extra:
    loader: npz
    path: data/extra.npz
experts:
  is_first:
    inputs: [wine.features]
    target: {from: wine.label, fn: "wine_targets:is_first"}
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 60, batch_size: 32, lr: 1.0e-2}
  is_last:
    inputs: [wine.features]
    target: {from: wine.label, fn: "wine_targets:is_last"}
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 60, batch_size: 32, lr: 1.0e-2}
  cultivar:
    inputs: [is_first.probs, is_last.probs]
    target: wine.label
    model: {kind: mlp, hidden: [8]}
    train: {epochs: 80, batch_size: 32, lr: 1.0e-2}
    cutoff: "off"
  side:
    inputs: [extra.x]
    target: extra.y
    model: {kind: linear}
    train: {epochs: 40, batch_size: 64, lr: 5.0e-2}
"""

TARGETS = """
def is_first(label):
    return (label == 0).long()


def is_last(label):
    return (label == 2).long()
"""


def write_wine(path: Path, edit=None) -> list[str]:
    from sklearn.datasets import load_wine

    bunch = load_wine()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[*(f"{v:g}" for v in row), bunch.target_names[t]] for row, t in zip(bunch.data, bunch.target)]
    if edit:
        edit(rows)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*bunch.feature_names, "cultivar"])
        writer.writerows(rows)
    return list(bunch.feature_names)


@pytest.fixture
def wine(tmp_path: Path, registry_uri: str) -> Path:
    (tmp_path / ".git").mkdir()  # the project root: data paths are relative to it
    (tmp_path / "wine_targets.py").write_text(TARGETS)
    write_wine(tmp_path / "data" / "wine.csv")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    np.savez(tmp_path / "data" / "extra.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    path = tmp_path / "wine.yaml"
    path.write_text(WINE)
    return path


statuses = status_entries


def test_wine_csv_trains_names_flow_and_the_final_expert_beats_ninety_percent(wine: Path, registry_uri: str,
                                                                              capsys):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.registry.artifacts import SPEC
    from moe_pipeline.state.version_spec import VersionSpec

    capsys.readouterr()
    assert cli("run", wine) == 0
    table = capsys.readouterr().out
    assert "weakest on val: class_" in table  # the run table names classes by the label column's values
    assert {e["status"] for e in statuses(wine, capsys).values()} == {"fresh"}
    ws = View(load_pipeline(wine), fast_reads=False)
    record = ws.record("cultivar")
    data, _ = ws.expert_data("cultivar")
    test_probs = ws.load_outputs(record)["test"]["probs"]
    accuracy = float((test_probs.argmax(1) == data.y["test"]).double().mean())
    assert accuracy >= 0.9, accuracy
    assert data.class_names == ["class_0", "class_1", "class_2"]
    saved = VersionSpec.read(ws.artifact(ws.record("is_first"), SPEC))
    assert saved.feature_names[:2] == ["alcohol", "malic_acid"]
    # the standardisation stored with the version was fitted on the train rows only
    params = saved.transforms["wine.features"]
    raw = np.loadtxt(wine.parent / "data" / "wine.csv", delimiter=",", skiprows=1, usecols=range(13))
    train_rows = ws.store.source("wine").splits["train"].numpy()
    assert np.allclose(params["mean"], raw[train_rows].mean(axis=0), rtol=1e-5)
    assert not np.allclose(params["mean"], raw.mean(axis=0), rtol=1e-5)
    assert abs(float(ws.store.source("wine").fields["features"][train_rows].mean())) < 1e-5
    # the system model takes the table's own named columns as a DataFrame, in any order, as predict takes a CSV
    import pandas as pd

    from moe_pipeline.serve.pyfunc import SystemModel
    from moe_pipeline.serve.system import System

    frame = pd.read_csv(wine.parent / "data" / "wine.csv").head(20)
    frame = frame[list(reversed(frame.columns))]  # the label column and reversed order: ignored and matched
    frame.to_csv(wine.parent / "rows.csv", index=False)
    assert cli("predict", wine, "--expert", "cultivar", "--input", wine.parent / "rows.csv",
               "--out", wine.parent / "out.csv") == 0
    by_cli = pd.read_csv(wine.parent / "out.csv")
    by_model = SystemModel(System.from_view(View(load_pipeline(wine)), ["cultivar"])).predict(frame)
    assert list(by_model["cultivar.class"]) == list(by_cli["cultivar.class"])
    assert np.allclose(by_model["cultivar.p[class_0]"], by_cli["cultivar.p[class_0]"], atol=1e-6)
    assert (by_cli["cultivar.class"] == frame["cultivar"]).mean() >= 0.8
    # the system learns its inputs' shapes, dtypes and columns from the versions' records: the training
    # file is not parsed again to build it (predict's cost does not grow with the training data)
    from moe_pipeline.data.store import DataStore

    expected = View(load_pipeline(wine)).store.field_format("wine.features")
    assert expected["columns"][:2] == ["alcohol", "malic_acid"] and expected["shape"] == [13]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DataStore, "source", lambda self, name: pytest.fail(f"source {name} loaded"))
        assert System.from_view(View(load_pipeline(wine)), ["cultivar"]).fields == {"wine.features": expected}


def test_one_edited_cell_makes_exactly_its_readers_stale_and_touch_makes_nothing_stale(wine: Path, registry_uri: str,
                                                                                        capsys):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    assert cli("run", wine) == 0
    csv_path = wine.parent / "data" / "wine.csv"
    os.utime(csv_path)  # touch: same bytes, new mtime
    view = View(load_pipeline(wine))
    assert {s.status for s in view.statuses().values()} == {"fresh"}
    assert view.store.cache.hashed == 1  # the touched file, once
    view = View(load_pipeline(wine))
    assert {s.status for s in view.statuses().values()} == {"fresh"}
    # four fields (wine.features, wine.label, extra.x, extra.y) looked up, each csv field's values
    # hash too (under the file's hash); neither file re-read, nothing parsed
    assert (view.store.cache.hashed, view.store.cache.hits) == (0, 6)

    def edit(rows):
        rows[10][0] = "14.5"

    write_wine(csv_path, edit)
    experts = statuses(wine, capsys)
    assert experts["side"]["status"] == "fresh"  # reads only the npz
    # a table's fields are hashed from their own values: a feature cell blames wine.features alone
    for name in ("is_first", "is_last"):
        assert experts[name]["status"] == "stale"
        assert experts[name]["reasons"] == [{"kind": "DATA", "detail": "wine.features (data/wine.csv) changed"}]
    assert experts["cultivar"]["status"] == "pending"  # its own field, wine.label, is unchanged

    def relabel(rows):
        rows[10][0] = "14.5"
        rows[3][-1] = "class_2" if rows[3][-1] != "class_2" else "class_1"

    write_wine(csv_path, relabel)
    experts = statuses(wine, capsys)
    assert experts["cultivar"]["status"] == "stale"
    assert {"kind": "DATA", "detail": "wine.label (data/wine.csv) changed"} in experts["cultivar"]["reasons"]


def test_a_transform_change_is_a_spec_change_with_its_key(wine: Path, capsys):
    assert cli("run", wine) == 0
    wine.write_text(WINE.replace("{features: standardize}", "{features: minmax}"))
    experts = statuses(wine, capsys)
    assert experts["is_first"]["reasons"] == [
        {"kind": "SPEC", "detail": 'transform.wine.features: "standardize" -> "minmax"'}]
    assert experts["side"]["status"] == "fresh"


def test_an_expert_no_better_than_the_majority_class_is_flagged(tmp_path: Path, registry_uri: str, capsys):
    (tmp_path / ".git").mkdir()
    rows = [[0.0, "rare" if i % 10 == 0 else "common"] for i in range(400)]
    (tmp_path / "flat.csv").write_text("const,kind\n" + "".join(f"{a},{b}\n" for a, b in rows))
    path = tmp_path / "flat.yaml"
    path.write_text("""name: flat
sources:
  t: {loader: csv, path: flat.csv, label: kind}
experts:
  guess:
    inputs: [t.features]
    target: t.label
    model: {kind: linear}
    train: {epochs: 5, batch_size: 64, lr: 1.0e-2}
""")
    capsys.readouterr()
    assert cli("run", path) == 0
    assert "NOT better than the trivial predictor" in capsys.readouterr().out
    entry = statuses(path, capsys)["guess"]
    assert entry["below_baseline"].startswith("val accuracy ") and "vs majority class" in entry["below_baseline"]


def test_npz_parquet_and_an_image_folder_train_end_to_end(tmp_path: Path, registry_uri: str, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    from sklearn.datasets import load_digits

    (tmp_path / ".git").mkdir()
    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images[:400], digits.target[:400])):
        target = tmp_path / "pngs" / str(label) / f"{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(target)
    table = {f"p{i}": digits.data[:400, i].tolist() for i in range(64)}
    table["digit"] = [str(t) for t in digits.target[:400]]
    pq.write_table(pa.table(table), tmp_path / "digits.parquet")
    np.save(tmp_path / "pixels.npy", digits.data[:400].astype(np.float32))
    path = tmp_path / "mixed.yaml"
    path.write_text("""name: mixed
sources:
  images: {loader: imagefolder, path: pngs, size: [8, 8], mode: L}
  table: {loader: parquet, path: digits.parquet, label: digit, transform: {features: minmax}}
experts:
  from_images:
    inputs: [images.image]
    target: images.label
    model: {kind: cnn, channels: [4], hidden: 16}
    train: {epochs: 4, batch_size: 64, lr: 1.0e-2}
  from_table:
    inputs: [table.features]
    target: table.label
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 4, batch_size: 64, lr: 1.0e-2}
""")
    assert cli("run", path) == 0
    experts = statuses(path, capsys)
    assert {e["status"] for e in experts.values()} == {"fresh"}
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    view = View(load_pipeline(path))
    images = view.store.source("images")
    assert tuple(images.fields["image"].shape) == (400, 1, 8, 8) and images.classes["label"] == [str(d) for d in range(10)]
    assert float(images.fields["image"].max()) <= 1.0
    assert view.store.source("table").names["features"][:2] == ["p0", "p1"]
    # predict reads a PNG folder (any depth) and one PNG as the loader reads them: the same numbers as the arrays
    source = view.store.source("images")
    np.savez(tmp_path / "all.npz", image=source.fields["image"].numpy())
    for name, given in (("by_folder", tmp_path / "pngs"), ("by_npz", tmp_path / "all.npz"),
                        ("one", tmp_path / "pngs" / "7" / "7.png")):
        assert cli("predict", path, "--expert", "from_images", "--input", given, "--out", tmp_path / f"{name}.csv") == 0
    import pandas as pd

    by_folder, by_npz = pd.read_csv(tmp_path / "by_folder.csv"), pd.read_csv(tmp_path / "by_npz.csv")
    from moe_pipeline.data.files import image_files

    files = [f"{label}/{p.name}" for p, label in image_files(tmp_path / "pngs")]
    assert list(by_folder["file"]) == files
    assert np.allclose(by_folder.drop(columns="file").filter(like=".p[").values, by_npz.filter(like=".p[").values,
                       atol=1e-6)
    one = pd.read_csv(tmp_path / "one.csv")
    assert list(one["file"]) == ["7.png"] and one["from_images.class"][0] == by_folder.set_index("file").loc[
        "7/7.png", "from_images.class"]
    Image.fromarray(np.zeros((9, 8), np.uint8), mode="L").save(tmp_path / "wrong.png")
    capsys.readouterr()
    assert cli("predict", path, "--expert", "from_images", "--input", tmp_path / "wrong.png") == 2
    assert f"{tmp_path / 'wrong.png'}: size 9x8 (height x width), expected 8x8" in capsys.readouterr().err
    # one edited pixel blames that image, not the folder, and not the labels (its class is its folder)
    edited = tmp_path / "pngs" / "7" / "7.png"
    pixels = np.asarray(Image.open(edited)).copy()
    pixels[3, 3] = (int(pixels[3, 3]) + 77) % 256
    Image.fromarray(pixels, mode="L").save(edited)
    reasons = statuses(path, capsys)["from_images"]["reasons"]
    assert reasons == [{"kind": "DATA", "detail": "images.image (pngs/7/7.png) changed"}], reasons
    Image.fromarray(pixels, mode="L").save(tmp_path / "pngs" / "3" / "new.png")
    reasons = [r["detail"] for r in statuses(path, capsys)["from_images"]["reasons"]]
    assert reasons == ["images.image (pngs/7/7.png changed; pngs/3/new.png added)", "images.label (pngs) changed"]
    (tmp_path / "pngs" / "3" / "new.png").unlink()
    npy = tmp_path / "npy.yaml"
    npy.write_text("name: npy\nsources:\n  pixels: {loader: npy, path: pixels.npy}\n  images: {loader: imagefolder, "
                   "path: pngs, size: [8, 8]}\nexperts: {}\n")
    assert cli("validate", npy) == 2  # no experts: but the npy field is named after its source
    npy.write_text(npy.read_text().replace("experts: {}", "experts:\n  e: {inputs: [pixels.pixels], target: "
                                           "pixels.pixels, model: {kind: linear}}"))
    assert cli("validate", npy) == 0


def test_init_then_run_works_in_a_fresh_folder(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    for template in ("tabular", "images"):
        folder = tmp_path / template
        for args in (["init", str(folder), "--template", template], ["run", str(folder / "pipeline.yaml"), "-q"],
                     ["status", str(folder / "pipeline.yaml"), "--check"]):
            proc = subprocess.run([sys.executable, "-m", "moe_pipeline", *args], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, (args, proc.stderr)
        assert (folder / "registry" / "mlflow.db").exists()  # the project's own registry
    again = subprocess.run([sys.executable, "-m", "moe_pipeline", "init", str(tmp_path / "tabular")], env=env,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "already has" in again.stderr


# ---------------------------------------------------------------- bad data

def _bad_pipeline(tmp_path: Path, loader: str = "csv", extra: str = "") -> Path:
    (tmp_path / ".git").mkdir(exist_ok=True)
    path = tmp_path / "bad.yaml"
    source = {"csv": "{loader: csv, path: data/wine.csv, label: cultivar}",
              "images": "{loader: imagefolder, path: pngs, size: [8, 8], mode: L}"}[loader]
    target = "t.label"
    path.write_text(f"name: bad\nsources:\n  t: {source}\nexperts:\n  e:\n    inputs: [t.{'features' if loader == 'csv' else 'image'}]\n"
                    f"    target: {target}\n    model: {{kind: linear}}\n    train: {{epochs: 1}}\n{extra}")
    return path


def _assert_clean_failure(path: Path, registry_uri: str, fragment: str, capsys) -> None:
    before = store_bytes(registry_uri) if Path(registry_uri[len("sqlite:///"):]).exists() else None
    capsys.readouterr()
    assert cli("run", path) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err
    if before is not None:
        assert store_bytes(registry_uri) == before
    if Path(registry_uri[len("sqlite:///"):]).exists():
        client = MlflowClient(registry_uri, registry_uri)
        assert client.search_model_versions("name LIKE 'bad.%'") == []
        assert client.get_experiment_by_name("bad") is None  # no empty experiment left behind, so no FAILED run


@pytest.mark.reliability("bad data files")
def test_a_bad_csv_through_run_is_one_message_naming_the_file_and_leaves_nothing(tmp_path: Path, registry_uri: str,
                                                                                   capsys):
    """One `run` for the kind (the reader's cases are in unit/test_tables.py): the file and row
    named, no version, no experiment, the store untouched."""
    path = _bad_pipeline(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "wine.csv").write_bytes(b"a,b,cultivar\n1,2,x\n3,oops,y\n")
    _assert_clean_failure(path, registry_uri, f"{tmp_path / 'data' / 'wine.csv'}: row 3, column 'b': 'oops', "
                          "not a number", capsys)


def test_missing_file_is_a_validation_error_at_its_line(tmp_path: Path, registry_uri: str, capsys):
    path = _bad_pipeline(tmp_path)
    capsys.readouterr()
    assert cli("validate", path) == 2
    assert f"{path}:3:" in (err := capsys.readouterr().err) and f"no file {tmp_path / 'data' / 'wine.csv'}" in err


def test_a_class_seen_only_outside_train_is_an_error(tmp_path: Path, registry_uri: str, capsys):
    from moe_pipeline.data.sources import split_indices
    from moe_pipeline.pipeline.spec import Split

    path = _bad_pipeline(tmp_path)
    (tmp_path / "data").mkdir()
    lonely = int(split_indices(61, Split(), 0)["val"][0])  # the row the seeded split puts first in val
    rows = "".join(f"{i},{i % 7},{'lonely' if i == lonely else ('a' if i % 2 else 'b')}\n" for i in range(61))
    (tmp_path / "data" / "wine.csv").write_text("a,b,cultivar\n" + rows)
    _assert_clean_failure(path, registry_uri, "class 'lonely' appears only in the val split (1 row(s))", capsys)


@pytest.mark.reliability("bad data files")
def test_a_bad_image_through_run_is_one_message_naming_the_image_and_leaves_nothing(tmp_path: Path,
                                                                                     registry_uri: str, capsys):
    """One `run` for the kind (the reader's cases are in unit/test_hostile_data.py)."""
    from PIL import Image

    path = _bad_pipeline(tmp_path, "images")
    for label in ("0", "1"):
        for i in range(10):
            (tmp_path / "pngs" / label).mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), color=i * 10).save(tmp_path / "pngs" / label / f"{i}.png")
    bad = tmp_path / "pngs" / "1" / "bad.png"
    Image.new("RGB", (8, 8)).save(bad)
    _assert_clean_failure(path, registry_uri, f"{bad}: mode RGB, expected L", capsys)


def test_a_failure_partway_lists_what_was_trained_and_blames_the_source_key(tmp_path: Path, registry_uri: str,
                                                                            capsys):
    """An expert trained before a bad image stops the run is registered and in the run table; the
    image's error is reported at its source's key (line 3), not at the expert reading it."""
    from PIL import Image

    path = _bad_pipeline(tmp_path, "images", extra="  ahead:\n    inputs: [n.x]\n    target: n.y\n"
                         "    model: {kind: linear}\n    train: {epochs: 1}\n")  # ties go by name: it trains first
    path.write_text(path.read_text().replace("sources:\n", "sources:\n  n: {loader: npz, path: n.npz}\n"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    np.savez(tmp_path / "n.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    for label in ("0", "1"):
        (tmp_path / "pngs" / label).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (8, 8), color=i * 10).save(tmp_path / "pngs" / label / f"{i}.png")
    (tmp_path / "pngs" / "1" / "bad.png").write_bytes(b"not a png at all")
    capsys.readouterr()
    assert cli("run", path) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {path}:4:3: source 't': {tmp_path / 'pngs' / '1' / 'bad.png'}: "), captured.err
    table = [line for line in captured.out.splitlines() if "ahead" in line]
    assert len(table) == 1 and "trained" in table[0] and "v1" in table[0], captured.out
    versions = MlflowClient(registry_uri, registry_uri).search_model_versions("name = 'bad.ahead'")
    assert [int(v.version) for v in versions] == [1]

