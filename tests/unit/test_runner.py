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
