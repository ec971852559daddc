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
