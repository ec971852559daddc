"""The sequential runner: every step in plan order, each outcome reported as it comes, a
failure stops the rest, and Ctrl-C names the expert that was running."""
from __future__ import annotations

import pytest

from moe_pipeline.errors import StepsFailed, Interrupted, TrainingError
from moe_pipeline.execute.runner import Outcome, run_plan
from moe_pipeline.state.planner import Plan, Step


def _plan(*experts: str) -> Plan:
    return Plan(steps=tuple(Step(e, "missing", (), None) for e in experts))


def _outcome(expert: str) -> Outcome:
    return Outcome(expert, "trained", 1, "accuracy", 0.9, 0.1, 1.0)


def test_steps_run_in_plan_order_and_each_outcome_is_reported_as_it_comes():
    seen, reported = [], []
    outcomes = run_plan(_plan("a", "b", "c"), lambda step: seen.append(step.expert) or _outcome(step.expert),
                        lambda outcome: reported.append((outcome.expert, list(seen))))
    assert [o.expert for o in outcomes] == ["a", "b", "c"] == seen
    assert reported == [("a", ["a"]), ("b", ["a", "b"]), ("c", ["a", "b", "c"])]


def test_a_failing_step_stops_the_steps_after_it():
    seen = []

    def step(s):
        seen.append(s.expert)
        if s.expert == "b":
            raise TrainingError("b failed")
        return _outcome(s.expert)

    with pytest.raises(StepsFailed) as info:  # what finished before the failure travels with it
        run_plan(_plan("a", "b", "c"), step)
    assert seen == ["a", "b"]
    assert [o.expert for o in info.value.outcomes] == ["a"]
    assert isinstance(info.value.cause, TrainingError) and str(info.value.cause) == "b failed"
    seen.clear()
    with pytest.raises(TrainingError):  # failing first: nothing finished, the error as it was raised
        run_plan(_plan("b", "c"), step)
    assert seen == ["b"]


def test_an_interrupt_names_the_expert_that_was_running():
    def step(s):
        if s.expert == "b":
            raise Interrupted(2)
        return _outcome(s.expert)

    with pytest.raises(Interrupted) as info:
        run_plan(_plan("a", "b"), step)
    assert info.value.expert == "b"


# ---------------------------------------------------------------- the Ray runner's own logic, without a cluster

def test_the_ray_runner_refuses_a_request_no_node_can_meet_at_the_experts_position():
    """A task asking for more than the cluster has would wait forever: refused before submitting."""
    import networkx as nx

    from moe_pipeline.errors import ExecutorError
    from moe_pipeline.execute.ray_runner import RayRunner

    wants = {"a": {"num_cpus": 1.0}, "b": {"num_cpus": 1.0, "num_gpus": 1.0}}
    runner = RayRunner(step=lambda s: _outcome(s.expert), graph=nx.DiGraph([("a", "b")]),
                       resources=wants.__getitem__, where=lambda e: f"p.yaml:{ord(e) - 90}:5")
    runner._check_requests(_plan("a", "b"), {"CPU": 2.0, "GPU": 1.0})  # met: no error
    with pytest.raises(ExecutorError) as info:
        runner._check_requests(_plan("a", "b"), {"CPU": 2.0})
    assert str(info.value).startswith("p.yaml:8:5: expert 'b' asks for num_gpus=1, but the Ray cluster at this "
                                      "machine has 0 in all")


def test_ray_failures_name_each_experts_own_error_and_the_experts_not_run_because_of_it():
    import networkx as nx

    from moe_pipeline.execute.ray_runner import _describe_failures

    graph = nx.DiGraph([("a", "c"), ("b", "c"), ("c", "d")])
    text = _describe_failures(graph, _plan("a", "b", "c", "d"),
                              {"a": TrainingError("loss became nan\nmore detail"), "c": RuntimeError("x"),
                               "d": RuntimeError("y")})
    assert text.splitlines() == ["1 expert(s) failed on the Ray cluster:", "  a: loss became nan",
                                 "not run: c (upstream a failed); d (upstream a, c failed)"]
