"""The expert graph: which expert consumes which source field or expert output.

Builds a networkx DiGraph from a validated `Pipeline`, checks references and cycles, and
answers order, upstream and downstream queries. It must not read files, train, or talk
to the registry; checks return `GraphIssue`s with a key path, and the loader adds the
file position.
"""
from __future__ import annotations

import graphlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moe_pipeline.pipeline.spec import EXPERT_OUTPUTS
from moe_pipeline.pipeline.wording import did_you_mean

if TYPE_CHECKING:
    import networkx as nx

    from moe_pipeline.pipeline.spec import Pipeline


@dataclass(frozen=True)
class GraphIssue:
    """A problem of the expert graph (an unknown reference, a cycle), at its key path."""

    loc: tuple[Any, ...]
    message: str


@dataclass(frozen=True)
class Ref:
    """One parsed input reference: `owner.output` (an expert) or `owner.field` (a source)."""

    owner: str
    output: str

    def __str__(self) -> str:
        return f"{self.owner}.{self.output}"


def parse_ref(text: str) -> Ref | None:
    owner, dot, output = text.partition(".")
    return Ref(owner, output) if dot and owner and output and "." not in output else None


def check_graph(pipeline: Pipeline) -> list[GraphIssue]:
    issues: list[GraphIssue] = []
    names = set(pipeline.sources) | set(pipeline.experts)
    for name in sorted(set(pipeline.sources) & set(pipeline.experts)):
        issues.append(GraphIssue(("experts", name), f"'{name}' is both a source and an expert; rename one"))
    for name, expert in pipeline.experts.items():
        for index, text in enumerate(expert.inputs):
            issue = _check_ref(pipeline, names, name, text, ("experts", name, "inputs", index), allow_experts=True)
            if issue:
                issues.append(issue)
        target_loc = ("experts", name, "target") + (() if isinstance(expert.target, str) else ("from",))
        issue = _check_ref(pipeline, names, name, expert.target_field, target_loc, allow_experts=False)
        if issue:
            issues.append(issue)
        if len(set(expert.inputs)) != len(expert.inputs):
            issues.append(GraphIssue(("experts", name, "inputs"), "an input is listed twice; list each once"))
    if not issues:
        issues.extend(_row_issues(pipeline))
        issues.extend(_cycle_issues(pipeline))
    return issues + _model_input_issues(pipeline)


def _model_input_issues(pipeline: Pipeline) -> list[GraphIssue]:
    """A cnn convolves one image: given several inputs or an expert's vector it would fail
    minutes into `run`, after its upstream trained; found here instead."""
    issues = []
    for name, expert in pipeline.experts.items():
        if expert.model.kind != "cnn":
            continue
        read = [t for t in expert.inputs if t.partition(".")[0] in pipeline.experts]
        if len(expert.inputs) != 1 or read:
            what = f"expert output '{read[0]}' is a vector, not an image" if read else f"it has {len(expert.inputs)} inputs"
            issues.append(GraphIssue(("experts", name, "inputs"), f"a cnn reads one image field; {what}: give the cnn "
                                     "the image alone, or use an mlp to combine inputs"))
    return issues


def row_source(pipeline: Pipeline, expert: str) -> str:
    """The source whose rows an expert is trained on: the one its target comes from."""
    return pipeline.experts[expert].target_field.partition(".")[0]


def _row_issues(pipeline: Pipeline) -> list[GraphIssue]:
    """Inputs are concatenated row by row, so every input must index the target's rows."""
    issues = []
    for name, expert in pipeline.experts.items():
        rows = row_source(pipeline, name)
        for index, text in enumerate(expert.inputs):
            owner = text.partition(".")[0]
            other = owner if owner in pipeline.sources else row_source(pipeline, owner)
            if other != rows:
                issues.append(GraphIssue(("experts", name, "inputs", index),
                                         f"'{text}' has the rows of source '{other}' but the target "
                                         f"'{expert.target_field}' has those of '{rows}'; inputs and target must share rows"))
    return issues


def _check_ref(pipeline: Pipeline, names: set[str], expert: str, text: str, loc: tuple, allow_experts: bool) -> GraphIssue | None:
    ref = parse_ref(text)
    if ref is None:
        return GraphIssue(loc, f"'{text}' is not a reference; write `source.field` or `expert.output`")
    if ref.owner == expert:
        return GraphIssue(loc, f"expert '{expert}' cannot consume its own output '{text}'")
    if ref.owner in pipeline.sources:
        fields = pipeline.source_fields(ref.owner)
        if ref.output not in fields:
            return GraphIssue(loc, f"source '{ref.owner}' has no field '{ref.output}'{did_you_mean(ref.output, fields)}"
                                   f" (fields: {', '.join(fields)})")
        return None
    if ref.owner in pipeline.experts:
        if not allow_experts:
            return GraphIssue(loc, f"a target must be a source field, not the expert output '{text}'")
        if ref.output not in EXPERT_OUTPUTS:
            return GraphIssue(loc, f"expert '{ref.owner}' has no output '{ref.output}'{did_you_mean(ref.output, EXPERT_OUTPUTS)}"
                                   f" (outputs: {', '.join(EXPERT_OUTPUTS)})")
        return None
    kind = "source or expert" if allow_experts else "source"
    choices = names if allow_experts else set(pipeline.sources)
    return GraphIssue(loc, f"unknown {kind} '{ref.owner}'{did_you_mean(ref.owner, choices)}")




def _cycle_issues(pipeline: Pipeline) -> list[GraphIssue]:
    # the standard library says whether there is a cycle; networkx (a quarter of `validate`'s
    # start-up) is imported only to list every cycle of a pipeline that has one
    sorter = graphlib.TopologicalSorter({name: [r.owner for t in e.inputs if (r := parse_ref(t)) and
                                                r.owner in pipeline.experts] for name, e in pipeline.experts.items()})
    try:
        sorter.prepare()
        return []
    except graphlib.CycleError:
        pass
    import networkx as nx

    graph = expert_graph(pipeline)
    issues = []
    for cycle in sorted(nx.simple_cycles(graph), key=lambda c: (len(c), c)):
        start = cycle.index(min(cycle))  # print each cycle from a stable starting point
        ordered = cycle[start:] + cycle[:start]
        path = " -> ".join(ordered + [ordered[0]])
        issues.append(GraphIssue(("experts", ordered[0], "inputs"), f"cycle: {path}; an expert may not depend on itself"))
    return issues


# ---------------------------------------------------------------- building and queries


def full_graph(pipeline: Pipeline) -> nx.DiGraph:
    """Sources and experts as nodes (attribute `kind`); edges carry the outputs consumed."""
    import networkx as nx

    graph = nx.DiGraph()
    for name in pipeline.sources:
        graph.add_node(name, kind="source")
    for name in pipeline.experts:
        graph.add_node(name, kind="expert")
    for name, expert in pipeline.experts.items():
        for text in expert.inputs:
            ref = parse_ref(text)
            if ref is None or ref.owner not in graph:
                continue
            graph.add_edge(ref.owner, name)
            graph.edges[ref.owner, name].setdefault("outputs", []).append(ref.output)
        ref = parse_ref(expert.target_field)
        if ref and ref.owner in pipeline.sources:
            graph.add_edge(ref.owner, name)
            graph.edges[ref.owner, name].setdefault("outputs", []).append(ref.output)
    return graph


def expert_graph(pipeline: Pipeline) -> nx.DiGraph:
    """Experts only; an edge u -> v means v consumes an output of u."""
    full = full_graph(pipeline)
    return full.subgraph(n for n, kind in full.nodes(data="kind") if kind == "expert").copy()


def order(graph: nx.DiGraph) -> list:
    """Topological order, ties broken by name so plans are stable from run to run."""
    import networkx as nx

    return list(nx.lexicographical_topological_sort(graph, key=str))


def upstream(graph: nx.DiGraph, node) -> list:
    """Experts `node` consumes directly."""
    return sorted(graph.predecessors(node), key=str)


def downstream(graph: nx.DiGraph, node) -> list:
    """Every expert that depends on `node`, directly or not, in topological order."""
    import networkx as nx

    below = nx.descendants(graph, node)
    return [n for n in order(graph) if n in below]


def layers(graph: nx.DiGraph) -> list[list]:
    """Generations: experts that could train in parallel, level by level."""
    import networkx as nx

    return [sorted(layer, key=str) for layer in nx.topological_generations(graph)]
