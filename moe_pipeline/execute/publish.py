"""Publishing statuses: the registry's staleness tags made to say what `status` says.

Each current version's `moe.needs_retrain` and `moe.state` tags and each registered model's `moe.status` tag
(the MLflow UI's model list) are written where they differ from what the view computes
(`View.tag_changes`), and only there. Used at the end of every `run` and by `status --record`.
Must not train, check or register anything.
"""
from __future__ import annotations

from moe_pipeline.execute.view import View
from moe_pipeline.registry.writes import Registry
from moe_pipeline.state import planner
from moe_pipeline.state.record import STATE


def publish_statuses(view: View, registry: Registry, verify: bool = False) -> dict[str, planner.Status]:
    """Every expert's status, with the registry's tags brought into agreement with it."""
    statuses = view.statuses(verify)
    snap, current = view.snapshot(), view.current()
    for change in view.tag_changes(statuses):
        if change.version is None:
            registry.set_model_tag(change.expert, change.key, change.value)
            snap[change.expert].model_tags[change.key] = change.value
        elif change.key == STATE:
            registry.set_tags(change.expert, change.version, {STATE: change.value})
            current[change.expert].state = change.value
        else:
            registry.mark_needs_retrain(change.expert, change.version, change.value)
            current[change.expert].needs_retrain = change.value
    return statuses
