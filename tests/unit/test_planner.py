"""The planner on DiGraphs of integers with hand-made records: no MLflow, no torch."""
from dataclasses import dataclass, field

import networkx as nx

from moe_pipeline.state import planner
from moe_pipeline.state.record import UpstreamRef


@dataclass
class FP:
    spec: dict
    spec_hash: str
    code: dict = field(default_factory=lambda: {"m:f": "c1"})
    data: dict = field(default_factory=lambda: {"d.x": "h1"})


@dataclass
class Rec:
    version: int
    spec: dict
    spec_hash: str
    code: dict = field(default_factory=lambda: {"m:f": "c1"})
    data: dict = field(default_factory=lambda: {"d.x": "h1"})
    upstream: dict = field(default_factory=dict)
    outputs_sha: str = "o"


#   1 -> 2 -> 3
#   4 ------> 3
GRAPH = nx.DiGraph([(1, 2), (2, 3), (4, 3)])


def world():
    fps = {n: FP({"lr": 0.1}, "s") for n in GRAPH}
    recs = {
        1: Rec(1, {"lr": 0.1}, "s"),
        4: Rec(1, {"lr": 0.1}, "s"),
        2: Rec(1, {"lr": 0.1}, "s", upstream={1: UpstreamRef(1, "o")}),
        3: Rec(1, {"lr": 0.1}, "s", upstream={2: UpstreamRef(1, "o"), 4: UpstreamRef(1, "o")}),
    }
    return fps, recs


def kinds(status):
    return {n: s.status for n, s in status.items()}


def test_all_fresh():
    fps, recs = world()
    assert set(kinds(planner.statuses(GRAPH, fps, recs)).values()) == {"fresh"}
    assert planner.plan(GRAPH, planner.statuses(GRAPH, fps, recs), {}).steps == ()


def test_spec_change_makes_stale_and_downstream_pending_with_root_cause():
    fps, recs = world()
    fps[1] = FP({"lr": 0.01}, "s2")
    status = planner.statuses(GRAPH, fps, recs)
    assert kinds(status) == {1: "stale", 2: "pending", 3: "pending", 4: "fresh"}
    assert [str(r) for r in status[1].reasons] == ["SPEC lr: 0.1 -> 0.01"]
    assert status[3].root_causes == [1]
    assert "waits for 1 (stale: SPEC lr: 0.1 -> 0.01)" in status[3].reasons[0].detail
    steps = planner.plan(GRAPH, status, {1: 2.0, 2: 3.0, 3: None})
    assert steps.experts == [1, 2, 3]
    assert steps.estimate is None
    assert planner.plan(GRAPH, status, {1: 2.0, 2: 3.0, 3: 1.0}).estimate == 6.0


def test_code_and_data_reasons_name_the_object_and_field():
    fps, recs = world()
    fps[4] = FP({"lr": 0.1}, "s", code={"m:f": "c2"}, data={"d.x": "h2"})
    status = planner.statuses(GRAPH, fps, recs)
    assert [str(r) for r in status[4].reasons] == ["CODE m:f changed", "DATA d.x changed"]
    assert status[3].status == "pending"


def test_missing_upstream_makes_downstream_pending_and_missing_is_reported():
    fps, recs = world()
    del recs[2]
    status = planner.statuses(GRAPH, fps, recs)
    assert status[2].status == "missing" and status[2].reasons[0].kind == "MISSING"
    assert status[3].status == "pending" and status[3].root_causes == [2]  # nothing to compare with until 2 trains


def test_new_upstream_version_makes_stale_with_versions():
    fps, recs = world()
    recs[2] = Rec(2, {"lr": 0.1}, "s", upstream={1: UpstreamRef(1, "o")}, outputs_sha="o2")
    status = planner.statuses(GRAPH, fps, recs)
    assert status[3].status == "stale" and status[3].upstream_only
    assert [str(r) for r in status[3].reasons] == ["UPSTREAM 2 v1 -> v2"]


def test_refreshed_outputs_of_same_version_make_stale():
    fps, recs = world()
    recs[2].outputs_sha = "refreshed"
    status = planner.statuses(GRAPH, fps, recs)
    assert [str(r) for r in status[3].reasons] == ["UPSTREAM 2 v1 (stored outputs refreshed)"]


def test_selection_named_downstream_and_force():
    fps, recs = world()
    fresh = planner.statuses(GRAPH, fps, recs)
    assert planner.plan(GRAPH, fresh, {}, force=True).experts == [1, 2, 4, 3]
    assert planner.plan(GRAPH, fresh, {}, named=[2], force=True).experts == [2]
    assert planner.plan(GRAPH, fresh, {}, downstream_of=2, force=True).experts == [2, 3]
    fps[1] = FP({"lr": 0.01}, "s2")
    stale = planner.statuses(GRAPH, fps, recs)
    assert planner.plan(GRAPH, stale, {}, named=[3]).experts == [1, 2, 3]  # brings non-fresh ancestors
    assert planner.plan(GRAPH, stale, {}, named=[4]).experts == []
    assert planner.plan(GRAPH, stale, {}, downstream_of=2).experts == [1, 2, 3]


def test_impact_lists_cascade_with_estimate():
    imp = planner.impact(GRAPH, 1, {1: 1.0, 2: 2.0, 3: 4.0})
    assert imp.experts == [1, 2, 3] and imp.estimate == 7.0
