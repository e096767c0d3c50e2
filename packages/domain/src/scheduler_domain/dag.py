"""Task dependencies form a DAG; a cycle would leave its runs waiting on each other forever.

``edges`` maps a node to the nodes it depends on (its upstreams). Nodes that only appear as an
upstream are nodes too. The walks are iterative, so deep chains never hit the recursion limit, and
they visit nodes in sorted order when the nodes can be sorted, so answers are reproducible.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from scheduler_domain.errors import DependencyCycle

K = TypeVar("K", bound=Hashable)

_UNSEEN, _ON_PATH, _DONE = 0, 1, 2


def find_cycle(edges: Mapping[K, Iterable[K]]) -> list[K] | None:
    """A dependency cycle as a path with its first node repeated last, or ``None``."""
    return _walk(edges)[1]


def ensure_acyclic(edges: Mapping[K, Iterable[K]], *, names: Mapping[K, str] | None = None) -> None:
    """Refuse a graph with a cycle, naming the cycle's nodes (by ``names`` when given)."""
    cycle = find_cycle(edges)
    if cycle is not None:
        raise DependencyCycle(_named(cycle, names))


def topological_order(edges: Mapping[K, Iterable[K]]) -> list[K]:
    """Every node after all of its upstreams; :class:`DependencyCycle` if there is no such order."""
    order, cycle = _walk(edges)
    if cycle is not None:
        raise DependencyCycle(_named(cycle, None))
    return order


def _walk(edges: Mapping[K, Iterable[K]]) -> tuple[list[K], list[K] | None]:
    """Depth-first post-order (upstreams first) and the first cycle met, if any."""
    upstreams: dict[K, list[K]] = {node: _ordered(deps) for node, deps in edges.items()}
    for deps in list(upstreams.values()):
        for dep in deps:
            upstreams.setdefault(dep, [])
    state = dict.fromkeys(upstreams, _UNSEEN)
    order: list[K] = []
    for root in _ordered(upstreams):
        if state[root] != _UNSEEN:
            continue
        path = [root]
        positions = [0]  # how far each node on the path has got through its upstreams
        state[root] = _ON_PATH
        while path:
            deps = upstreams[path[-1]]
            if positions[-1] == len(deps):
                finished = path.pop()
                positions.pop()
                state[finished] = _DONE
                order.append(finished)
                continue
            node = deps[positions[-1]]
            positions[-1] += 1
            if state[node] == _ON_PATH:
                return order, [*path[path.index(node) :], node]
            if state[node] == _UNSEEN:
                state[node] = _ON_PATH
                path.append(node)
                positions.append(0)
    return order, None


def _ordered(nodes: Iterable[K]) -> list[K]:
    unique = list(dict.fromkeys(nodes))
    try:
        return sorted(unique)  # type: ignore[type-var]
    except TypeError:
        return unique


def _named(cycle: list[K], names: Mapping[K, str] | None) -> list[str]:
    if names is None:
        return [str(node) for node in cycle]
    return [names.get(node, str(node)) for node in cycle]
