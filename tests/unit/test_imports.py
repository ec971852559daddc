"""`long_lived`: a large import runs with the cyclic collector paused, and what it made is
frozen so later full collections skip it; collection itself keeps working afterwards."""
import gc

from moe_pipeline.imports import long_lived


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector can free it


def _frozen_after(make) -> tuple[bool, int]:
    before = gc.get_freeze_count()
    with long_lived():
        paused = not gc.isenabled()
        made = make()
    return paused, gc.get_freeze_count() - before, made


def test_the_block_runs_with_the_collector_paused_and_what_it_made_is_frozen():
    gc.unfreeze()
    try:
        paused, frozen, made = _frozen_after(lambda: [_Node() for _ in range(5000)])
        assert paused
        assert gc.isenabled()  # given back as it was
        assert frozen >= 5000  # the nodes (and whatever else was alive) no longer scanned
        del made
        # collection still works for what is made afterwards
        gc.collect()
        _Node()
        assert gc.collect() >= 1
    finally:
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
