"""Dependency graphs: cycles are found, named and refused; order puts upstreams first."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.dag import ensure_acyclic, find_cycle, topological_order
from scheduler_domain.errors import DependencyCycle


def test_graph_without_cycle_has_none() -> None:
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_three_node_cycle_is_returned_with_first_node_repeated_last() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def test_self_dependency_is_a_cycle_of_one() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_cycle_not_reachable_from_the_first_node_is_still_found() -> None:
    assert find_cycle({"a": ["b"], "b": [], "x": ["y"], "y": ["x"]}) == ["x", "y", "x"]


def test_cycle_is_reported_without_its_lead_in_path() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]


def test_answer_does_not_depend_on_insertion_order_of_sortable_nodes() -> None:
    edges = {"c": ["a"], "b": ["c"], "a": ["b"]}

    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle(dict(reversed(edges.items()))) == ["a", "b", "c", "a"]


def test_unsortable_nodes_are_walked_in_insertion_order() -> None:
    edges: dict[object, list[object]] = {1: ["x"], "x": [1]}

    assert find_cycle(edges) == [1, "x", 1]


def test_dependencies_given_as_generators_are_read_once() -> None:
    edges = {"a": (n for n in ["b"]), "b": (n for n in ["a"])}

    assert find_cycle(edges) == ["a", "b", "a"]


def test_ten_thousand_node_chain_needs_no_recursion() -> None:
    chain = {i: [i + 1] for i in range(10_000)}

    assert find_cycle(chain) is None
    assert topological_order(chain)[:3] == [10_000, 9_999, 9_998]

    chain[10_000] = [0]
    cycle = find_cycle(chain)
    assert cycle is not None
    assert len(cycle) == 10_002
    assert cycle[0] == cycle[-1] == 0


def test_ensure_acyclic_names_the_cycle_with_task_names() -> None:
    names = {"t1": "extract", "t2": "transform", "t3": "load"}

    with pytest.raises(DependencyCycle) as info:
        ensure_acyclic({"t1": ["t3"], "t2": ["t1"], "t3": ["t2"]}, names=names)

    assert info.value.cycle == ["extract", "load", "transform", "extract"]
    assert info.value.field == "depends_on"
    assert "extract -> load -> transform -> extract" in str(info.value)


def test_ensure_acyclic_accepts_a_dag() -> None:
    ensure_acyclic({"a": ["b"], "b": []})


def test_topological_order_lists_upstreams_first_including_undeclared_nodes() -> None:
    order = topological_order({"load": ["transform"], "transform": ["extract"]})

    assert order == ["extract", "transform", "load"]


def test_topological_order_of_a_cyclic_graph_is_refused() -> None:
    with pytest.raises(DependencyCycle):
        topological_order({"a": ["b"], "b": ["a"]})


def _has_cycle_brute_force(nodes: int, edges: set[tuple[int, int]]) -> bool:
    """A cycle exists iff some node reaches itself; compute reachability by closure."""
    reach = set(edges)
    for k, i, j in itertools.product(range(nodes), repeat=3):
        if (i, k) in reach and (k, j) in reach:
            reach.add((i, j))
    return any((n, n) in reach for n in range(nodes))


graphs = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=n * n),
    )
)


@given(graph=graphs)
def test_cycle_is_found_exactly_when_one_exists(graph: tuple[int, set[tuple[int, int]]]) -> None:
    nodes, edges = graph
    adjacency: dict[int, list[int]] = {n: [] for n in range(nodes)}
    for src, dst in edges:
        adjacency[src].append(dst)

    cycle = find_cycle(adjacency)

    assert (cycle is not None) == _has_cycle_brute_force(nodes, edges)
    if cycle is None:
        order = topological_order(adjacency)
        position = {node: i for i, node in enumerate(order)}
        assert sorted(order) == list(range(nodes))
        assert all(position[dst] < position[src] for src, dst in edges)
    else:
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1
        assert all((a, b) in edges for a, b in itertools.pairwise(cycle))
