"""Render the expert graph for `dag`: text, Mermaid or Graphviz dot source. Pure: strings out,
no I/O (the pages' drawings are `pipeline.drawing`'s).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from moe_pipeline.pipeline import graph as g

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Pipeline


def render(pipeline: Pipeline, fmt: str, statuses: dict[str, str] | None = None, width: int | None = None) -> str:
    """`width`: the terminal's columns, for `text` (None: no wrapping, as in a pipe)."""
    statuses = statuses or {}
    if fmt == "text":
        return _text(pipeline, statuses, width)
    return {"mermaid": _mermaid, "dot": _dot}[fmt](pipeline, statuses)


def _text(pipeline: Pipeline, statuses: dict[str, str], width: int | None) -> str:
    """Sources, then the experts level by level in aligned columns: status, target (with its
    function), inputs. The inputs come last and wrap between inputs, never inside a name."""
    import textwrap

    lines = [f"pipeline {pipeline.name}", "sources"]
    sources = [(name, ", ".join(pipeline.source_fields(name)), source.loader) for name, source in pipeline.sources.items()]
    source_width = max(len(name) for name, _, _ in sources)
    lines += [f"  {name:<{source_width}}  {fields}   ({loader})" for name, fields, loader in sources]
    rows = []
    for level, names in enumerate(g.layers(g.expert_graph(pipeline))):
        for name in names:
            expert = pipeline.experts[name]
            target = f"{expert.target_fn}({expert.target_field})" if expert.target_fn else expert.target_field
            rows.append([str(level), name, statuses.get(name, ""), target, ", ".join(expert.inputs)])
    header = ["", "expert", "status" if statuses else "", "target", "inputs"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lead = 2 + sum(w + 2 for w in widths if w)
    room = None if width is None else max(16, width - lead)

    def row(cells: list[str]) -> list[str]:
        head = "  " + "".join(f"{cell:<{w}}  " for cell, w in zip(cells, widths) if w)
        wrapped = textwrap.wrap(cells[4], room, break_long_words=False, break_on_hyphens=False) if room else [cells[4]]
        return [head + (wrapped or [""])[0]] + [" " * lead + more for more in wrapped[1:]]

    lines.append("experts, level by level (a level reads only sources and lower levels)")
    for cells in [header, *rows]:
        lines += row(cells)
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
