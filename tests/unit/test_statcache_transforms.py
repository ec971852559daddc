"""The stat cache hashes a file once until its bytes may have changed; the transforms are
fitted on the rows they are given and applied as a brute-force loop would."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from moe_pipeline.data.statcache import StatCache
from moe_pipeline.data.transforms import apply, fit


def test_an_unchanged_file_is_hashed_once_and_an_edit_is_seen(tmp_path):
    data, cache_file = tmp_path / "d.csv", tmp_path / ".moe-cache" / "stat-cache.json"
    data.write_bytes(b"a,b\n1,2\n")
    first = StatCache(cache_file)
    assert first.sha256(data) == hashlib.sha256(b"a,b\n1,2\n").hexdigest() and first.hashed == 1
    first.save()
    again = StatCache(cache_file)  # a new process: reads the cache file
    assert again.sha256(data) == first.sha256(data) and (again.hits, again.hashed) == (1, 0)
    data.write_bytes(b"a,b\n1,3\n")
    os.utime(data, ns=(1, 1))  # the size is the same: the mtime tells it changed
    assert again.sha256(data) == hashlib.sha256(b"a,b\n1,3\n").hexdigest() and again.hashed == 1


def test_a_damaged_cache_file_costs_a_rehash_not_an_error(tmp_path):
    data, cache_file = tmp_path / "d.bin", tmp_path / "cache.json"
    data.write_bytes(b"x")
    cache_file.write_text("{not json")
    cache = StatCache(cache_file)
    assert cache.sha256(data) == hashlib.sha256(b"x").hexdigest() and cache.hashed == 1


def test_standardize_and_minmax_use_the_train_rows_only_and_match_a_loop():
    rng = np.random.default_rng(0)
    train, other = rng.normal(3, 2, size=(50, 4)), rng.normal(-1, 1, size=(7, 4))
    for kind in ("standardize", "minmax"):
        params = fit(kind, train)
        got = apply(params, other)
        for j in range(4):  # per column, by hand
            column = train[:, j]
            if kind == "standardize":
                want = (other[:, j] - column.mean()) / column.std()
            else:
                want = (other[:, j] - column.min()) / (column.max() - column.min())
            assert np.allclose(got[:, j], want, atol=1e-5)
    constant = fit("standardize", np.ones((5, 1)))
    assert constant["std"] == [1.0]  # a constant column is centred, never divided by zero


def test_onehot_knows_the_train_values_and_leaves_an_unseen_one_all_zero():
    params = fit("onehot", np.array([2, 0, 2, 5]))
    assert params["values"] == [0, 2, 5]
    out = apply(params, np.array([5, 0, 7]))
    assert out.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]


def _folder_store(root, cache_file):
    from moe_pipeline.data.store import DataStore
    from moe_pipeline.pipeline.loader import load_pipeline

    (root / "p.yaml").write_text("name: p\nsources:\n  imgs: {loader: imagefolder, path: imgs, size: [4, 4]}\n"
                                 "experts:\n  e: {inputs: [imgs.image], target: imgs.label, model: {kind: mlp}}\n")
    return DataStore(load_pipeline(root / "p.yaml").pipeline, root, StatCache(cache_file))


def test_an_unchanged_image_folder_is_one_listing_pass_and_one_change_reads_one_file(tmp_path, monkeypatch):
    """The folder's hashes equal a from-scratch hash (no cache at all) after every step; unchanged,
    no file is read and the per-file check does not run; after one pixel edit, only that file is read."""
    from PIL import Image

    from moe_pipeline.data import files

    for k in range(30):
        (tmp_path / "imgs" / str(k % 3)).mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), color=k).save(tmp_path / "imgs" / str(k % 3) / f"{k}.png")
    cache_file = tmp_path / ".moe-cache" / "stat-cache.json"

    def scratch() -> dict[str, str]:  # the reference: a store with no cache, hashing every file
        from moe_pipeline.data.store import DataStore

        store = DataStore(_folder_store(tmp_path, None).pipeline, tmp_path, StatCache(None))
        return {ref: store.field_hash(ref) for ref in ("imgs.image", "imgs.label")}

    first = _folder_store(tmp_path, cache_file)
    assert {ref: first.field_hash(ref) for ref in ("imgs.image", "imgs.label")} == scratch()
    assert first.cache.hashed == 30

    reference, listed = scratch(), []
    real = files.image_files
    monkeypatch.setattr(files, "image_files", lambda folder: listed.append(folder) or real(folder))
    again = _folder_store(tmp_path, cache_file)
    assert {ref: again.field_hash(ref) for ref in ("imgs.image", "imgs.label")} == reference
    assert again.cache.hashed == 0 and listed == []  # one listing pass, nothing read, nothing checked per file
    monkeypatch.setattr(files, "image_files", real)

    Image.new("L", (4, 4), color=200).save(tmp_path / "imgs" / "1" / "4.png")  # one pixel edit
    edited = _folder_store(tmp_path, cache_file)
    assert edited.field_hash("imgs.image") == scratch()["imgs.image"] != first.field_hash("imgs.image")
    assert edited.cache.hashed == 1  # the edited file only
    assert edited.field_hash("imgs.label") == first.field_hash("imgs.label")  # names unchanged: labels too
    assert edited.changed_files("imgs.image", first.field_hash("imgs.image")) == "imgs.image (imgs/1/4.png) changed"


def test_image_folder_manifests_are_bounded_and_the_least_recently_used_goes_first(tmp_path):
    """Each changed folder state keeps its file list; past MAX_MANIFESTS the one used longest ago
    is deleted, and reading one (as every `status` reads the trained version's) keeps it."""
    from moe_pipeline.data import statcache

    cache_file = tmp_path / ".moe-cache" / "stat-cache.json"
    cache = StatCache(cache_file)
    folder = cache_file.parent / "manifests"
    for k in range(statcache.MAX_MANIFESTS):
        cache.put_manifest(f"k{k}", [[f"a/{k}.png", "0" * 64]])
        os.utime(folder / f"k{k}.json", ns=(10**18 + k, 10**18 + k))  # k0 the oldest
    assert len(list(folder.glob("*.json"))) == statcache.MAX_MANIFESTS
    assert StatCache(cache_file).manifest("k0") == [["a/0.png", "0" * 64]]  # read from disk: now the newest
    cache.put_manifest("new", [["a/new.png", "1" * 64]])
    kept = {p.stem for p in folder.glob("*.json")}
    assert len(kept) == statcache.MAX_MANIFESTS and "new" in kept and "k0" in kept and "k1" not in kept


def test_a_folder_table_of_the_first_form_is_read_without_rehashing_and_a_damaged_one_costs_a_rehash(tmp_path):
    """The per-folder table is written as three flat lists; one written in the first form (name ->
    [size, mtime, inode, sha256]) by an earlier version is read as it is: no file is read again."""
    import json

    from moe_pipeline.data.statcache import FolderTable, folder_listing

    folder = tmp_path / "imgs"
    for k in range(5):
        (folder / str(k % 2)).mkdir(parents=True, exist_ok=True)
        (folder / str(k % 2) / f"{k}.png").write_bytes(bytes([k]) * 10)
    stats = folder_listing(folder)[1]
    names = sorted(stats)
    truth = [hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names]
    path = tmp_path / "table.json"
    path.write_text(json.dumps({n: [*stats[n][:3], d] for n, d in zip(names, truth)}))  # the first form
    table = FolderTable(path)
    assert table.sha256s(folder, names, stats) == truth and table.hashed == 0
    assert not path.read_text().startswith('{"v"')  # nothing changed: not rewritten
    (folder / "1" / "1.png").write_bytes(b"edited")
    stats = folder_listing(folder)[1]
    truth[names.index("1/1.png")] = hashlib.sha256(b"edited").hexdigest()
    table = FolderTable(path)
    assert table.sha256s(folder, names, stats) == truth and table.hashed == 1
    written = json.loads(path.read_text())
    assert written["v"] == 2 and written["names"] == names and written["sha256"] == truth
    again = FolderTable(path)  # the new form, read back
    assert again.sha256s(folder, names, stats) == truth and again.hashed == 0
    path.write_text(json.dumps({"v": 2, "names": names, "stats": [1, 2], "sha256": truth}))  # damaged
    damaged = FolderTable(path)
    assert damaged.sha256s(folder, names, stats) == truth and damaged.hashed == len(names)
