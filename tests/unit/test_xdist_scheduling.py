"""PlanScheduling against xdist's own LoadScheduling: the parts of its contract we build on.

The strategy subclasses `LoadScheduling` and uses members that are not xdist's public API
(`_send_tests`, `node2pending`, `pending`, `collection`); pyproject.toml pins the xdist
range these tests passed on, and these tests fail when a new xdist changes that contract.
"""

from __future__ import annotations

import inspect

from xdist.scheduler import LoadScheduling

from harness.plugin.xdist_scheduling import AHEAD, PlanScheduling


class Config:
    """What LoadScheduling reads of pytest's config."""

    def __init__(self, workers: int):
        self.options = {
            "tx": [f"{workers}*popen"],
            "numprocesses": workers,
            "maxschedchunk": None,
            "dist": "load",
            "px": None,
        }

    def getvalue(self, name: str) -> object:
        return self.options.get(name)

    def getoption(self, name: str, default: object = None) -> object:
        return self.options.get(name, default)


class Node:
    """A worker as the scheduler sees it: it is sent item indices and told to shut down."""

    def __init__(self, name: str):
        self.name = name
        self.gateway = type("Gateway", (), {"id": name})()
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def send_runtest_all(self) -> None:
        raise AssertionError("PlanScheduling never sends everything at once")

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_private_members_it_uses_are_still_there():
    assert list(inspect.signature(LoadScheduling._send_tests).parameters) == ["self", "node", "num"]
    assert list(inspect.signature(LoadScheduling.__init__).parameters)[:3] == ["self", "config", "log"]
    scheduler = LoadScheduling(Config(2))  # type: ignore[arg-type]  # a stand-in for pytest's config
    for name in ("node2pending", "node2collection", "pending", "collection"):
        assert hasattr(scheduler, name), name


def test_items_go_out_in_plan_order_at_most_two_per_worker():
    expected = {"a": 30.0, "b": 20.0, "c": 10.0, "d": 5.0, "e": 1.0}
    scheduler = PlanScheduling(Config(2), expected=lambda nodeid: expected[nodeid])  # type: ignore[arg-type]  # stand-in config
    first, second = Node("w0"), Node("w1")
    for node in (first, second):
        scheduler.add_node(node)  # type: ignore[arg-type]  # stand-in worker
        scheduler.add_node_collection(node, list(expected))  # type: ignore[arg-type]
    assert scheduler.collection_is_completed
    scheduler.schedule()
    assert sorted(first.sent + second.sent) == [0, 1, 2, 3]
    assert len(first.sent) == len(second.sent) == AHEAD
    # The worker whose first item ends soonest gets the next-longest item.
    assert first.sent == [0, 3] and second.sent == [1, 2]
    scheduler.mark_test_complete(first, 0)  # type: ignore[arg-type]
    assert first.sent == [0, 3, 4] and not scheduler.pending
    scheduler.mark_test_complete(second, 1)  # type: ignore[arg-type]
    assert second.shutting_down
