"""Who is compared with whom: a spec's parity partners and its repeats form a group that the plan
keeps in one run (and side by side); a cycle of parity declarations is a bad spec."""

from __future__ import annotations

from collections.abc import Iterable

from harness.spec.model import Spec
from harness.spec.parity import repeat_id


def repeat_ids(spec: Spec) -> list[str]:
    """The ids of a spec's runs: its own, then one per further repeat."""
    return [repeat_id(spec.id, n) for n in range(1, spec.repeat + 1)]


def partners(spec: Spec) -> list[str]:
    """The ids this spec is compared with: its parity partners and its own repeats."""
    return [p.spec for p in spec.parities] + repeat_ids(spec)[1:]


def groups(specs: Iterable[Spec]) -> dict[str, set[str]]:
    """Each spec id -> the ids of every spec compared with it, directly or through others (itself included)."""
    linked: dict[str, set[str]] = {}
    for spec in specs:
        for other in partners(spec):
            linked.setdefault(spec.id, {spec.id}).add(other)
            linked.setdefault(other, {other}).add(spec.id)
    group_of: dict[str, set[str]] = {}
    for start in linked:
        if start in group_of:
            continue
        group, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node not in group:
                group.add(node)
                todo += linked.get(node, ())
        for node in group:
            group_of[node] = group
    return group_of


def cycles(specs: Iterable[Spec]) -> list[list[str]]:
    """Each cycle of parity declarations (a -> b -> a), once, from the spec where it was first reached."""
    edges = {spec.id: [p.spec for p in spec.parities] for spec in specs}
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    return found


def with_partners(specs: Iterable[Spec], chosen: set[str]) -> set[str]:
    """`chosen` and every spec compared with one of them: a selection never drops one side of a comparison."""
    group_of = groups(specs)
    return chosen | {other for spec_id in chosen for other in group_of.get(spec_id, ())}
