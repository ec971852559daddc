"""Render the expert graph for `dag`: text, Mermaid or Graphviz dot source. Pure: strings out,
no I/O (the pages' drawings are `pipeline.drawing`'s).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from moe_pipeline.pipeline import graph as g

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Pipeline


def render(pipeline: Pipeline, fmt: str, statuses: dict[str, str] | None = None) -> str:
    statuses = statuses or {}
    return {"text": _text, "mermaid": _mermaid, "dot": _dot}[fmt](pipeline, statuses)


def _text(pipeline: Pipeline, statuses: dict[str, str]) -> str:
    lines = [f"pipeline {pipeline.name}"]
    for name, source in pipeline.sources.items():
        lines.append(f"  source {name} [{', '.join(pipeline.source_fields(name))}]")
    for level, names in enumerate(g.layers(g.expert_graph(pipeline))):
        lines.append(f"level {level}")
        for name in names:
            expert = pipeline.experts[name]
            mark = f"  ({statuses[name]})" if name in statuses else ""
            lines.append(f"  {name}{mark} <- {', '.join(expert.inputs)}   target {expert.target_field}")
    return "\n".join(lines)


def _mermaid(pipeline: Pipeline, statuses: dict[str, str]) -> str:
    lines = ["graph TD"]
    for name in pipeline.sources:
        lines.append(f"  {name}[({name})]")
    for name in pipeline.experts:
        label = f"{name}<br/>{statuses[name]}" if name in statuses else name
        lines.append(f'  {name}["{label}"]')
    for u, v, data in g.full_graph(pipeline).edges(data=True):
        lines.append(f"  {u} -->|{','.join(data['outputs'])}| {v}")
    return "\n".join(lines)


def _dot(pipeline: Pipeline, statuses: dict[str, str]) -> str:
    lines = [f'digraph "{pipeline.name}" {{', "  rankdir=LR;"]
    for name in pipeline.sources:
        lines.append(f'  "{name}" [shape=cylinder];')
    for name in pipeline.experts:
        label = f"{name}\\n{statuses[name]}" if name in statuses else name
        lines.append(f'  "{name}" [shape=box, label="{label}"];')
    for u, v, data in g.full_graph(pipeline).edges(data=True):
        lines.append(f'  "{u}" -> "{v}" [label="{",".join(data["outputs"])}"];')
    lines.append("}")
    return "\n".join(lines)
