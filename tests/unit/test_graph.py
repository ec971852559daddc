import networkx as nx
import pytest

from moe_pipeline.pipeline import graph as g
from moe_pipeline.errors import PipelineError
from moe_pipeline.pipeline.loader import parse_pipeline

PIPE = """
name: p
sources: {d: {loader: sklearn.digits}}
experts:
  a: {inputs: [d.image], target: d.label, model: {kind: linear}}
  b: {inputs: [d.image], target: d.label, model: {kind: linear}}
  c: {inputs: [a.probs, b.embedding], target: d.label, model: {kind: linear}}
  e: {inputs: [c.logits], target: d.label, model: {kind: linear}}
  f: {inputs: [a.logits], target: d.label, model: {kind: linear}}
"""


@pytest.fixture
def graph():
    return g.expert_graph(parse_pipeline(PIPE))


def test_order_is_topological_and_stable(graph):
    assert g.order(graph) == ["a", "b", "c", "e", "f"]


def test_upstream_and_downstream(graph):
    assert g.upstream(graph, "c") == ["a", "b"]
    assert g.upstream(graph, "a") == []
    assert g.downstream(graph, "a") == ["c", "e", "f"]
    assert g.downstream(graph, "b") == ["c", "e"]
    assert g.downstream(graph, "e") == []


def test_layers(graph):
    assert g.layers(graph) == [["a", "b"], ["c", "f"], ["e"]]


def test_full_graph_has_sources_and_outputs():
    full = g.full_graph(parse_pipeline(PIPE))
    assert full.nodes["d"]["kind"] == "source"
    assert full.edges["a", "c"]["outputs"] == ["probs"]
    assert full.edges["d", "a"]["outputs"] == ["image", "label"]


def test_longer_cycle_is_named_in_order():
    text = PIPE.replace("a: {inputs: [d.image]", "a: {inputs: [e.probs]")
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text)
    assert "cycle: a -> c -> e -> a" in str(info.value)


def test_queries_work_on_integer_graphs():
    graph = nx.DiGraph([(1, 2), (2, 3), (1, 3), (4, 3)])
    assert g.order(graph) == [1, 2, 4, 3]
    assert g.downstream(graph, 1) == [2, 3]
    assert g.upstream(graph, 3) == [1, 2, 4]


def test_dag_renderings_name_every_edge():
    from moe_pipeline.pipeline.dagview import render

    pipeline = parse_pipeline(PIPE)
    mermaid = render(pipeline, "mermaid")
    assert "a -->|probs| c" in mermaid and "d[(d)]" in mermaid
    dot = render(pipeline, "dot", {"a": "fresh"})
    assert '"a" -> "c" [label="probs"];' in dot and 'label="a\\nfresh"' in dot
    text = render(pipeline, "text", {"c": "stale"})
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line[:3].strip().isdigit()}
    assert rows["c"][0] == "1" and rows["c"][2] == "stale" and " ".join(rows["c"][4:]) == "a.probs, b.embedding"
    header = next(line for line in text.splitlines() if "expert" in line and "inputs" in line)
    line_c = next(line for line in text.splitlines() if line.split()[1:2] == ["c"])
    assert line_c.index("a.probs") == header.index("inputs")  # aligned under its header
    narrow = render(pipeline, "text", {"c": "stale"}, width=len(line_c) - 4)  # the inputs wrap between names
    assert all(len(line) <= len(line_c) - 4 for line in narrow.splitlines() if "a.probs" in line or "b.embedding" in line)
    assert [w.strip(",") for line in narrow.splitlines() for w in line.split()].count("b.embedding") == 1
