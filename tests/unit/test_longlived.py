"""`long_lived`: a large import runs with the cyclic collector paused, and what it made is
frozen so later full collections skip it; collection itself keeps working afterwards."""
import gc
import importlib
import sys

from moe_pipeline.longlived import long_lived


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector can free it


def _frozen_after(make) -> tuple[bool, int, object]:
    before = gc.get_freeze_count()
    with long_lived():
        paused = not gc.isenabled()
        made = make()
    return paused, gc.get_freeze_count() - before, made


def _import_a_new_module_and_make_nodes(tmp_path, name: str) -> list:
    (tmp_path / f"{name}.py").write_text("X = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(name)  # left in sys.modules: the test removes it afterwards
    finally:
        sys.path.remove(str(tmp_path))
    return [_Node() for _ in range(5000)]


def test_a_block_that_imports_runs_with_the_collector_paused_and_what_it_made_is_frozen(tmp_path):
    gc.unfreeze()
    try:
        paused, frozen, made = _frozen_after(lambda: _import_a_new_module_and_make_nodes(tmp_path, "moe_fresh_a"))
        assert paused
        assert gc.isenabled()  # given back as it was
        assert frozen >= 5000  # the nodes (and whatever else was alive) no longer scanned
        del made
        # collection still works for what is made afterwards
        gc.collect()
        _Node()
        assert gc.collect() >= 1
    finally:
        sys.modules.pop("moe_fresh_a", None)
        gc.unfreeze()


def test_a_collector_paused_by_the_caller_stays_paused():
    gc.disable()
    try:
        with long_lived():
            with long_lived():  # nested: the inner one does not turn it back on
                pass
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_an_error_in_the_block_still_turns_the_collector_back_on():
    try:
        with long_lived():
            raise ValueError("an import failed")
    except ValueError:
        pass
    assert gc.isenabled()
    gc.unfreeze()


def test_a_block_that_imports_nothing_new_freezes_nothing():
    gc.unfreeze()
    try:
        paused, frozen, made = _frozen_after(lambda: [_Node() for _ in range(5000)])
        assert paused
        assert frozen == 0
        del made
        assert gc.collect() >= 5000  # the nodes' cycles are still collected
    finally:
        gc.unfreeze()
