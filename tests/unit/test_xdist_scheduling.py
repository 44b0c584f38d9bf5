"""PlanScheduling driven through xdist's `Scheduling` protocol, with stand-in workers.

The workers behave as xdist's do: a worker runs an item only once it holds the next one or
has been told to shut down, and reports each item when it ends.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from harness.plugin.xdist_scheduling import AHEAD, PlanScheduling


class Node:
    """A worker as the scheduler sees it: it is sent item indices and told to shut down."""

    def __init__(self, name: str):
        self.name = name
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: Sequence[int]) -> None:
        assert not self.shutting_down, "an item sent after shutdown is never run"
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True

    def __repr__(self) -> str:
        return self.name


def started(expected: dict[str, float], workers: int) -> tuple[PlanScheduling, list[Node]]:
    """`expected`: each item's end in the plan, in plan order."""
    scheduler = PlanScheduling(expected_end=lambda nodeid: expected[nodeid], workers=workers)
    nodes = [Node(f"w{i}") for i in range(workers)]
    for node in nodes:
        scheduler.add_node(node)
        assert not scheduler.collection_is_completed
        scheduler.add_node_collection(node, list(expected))
    assert scheduler.collection_is_completed
    scheduler.schedule()
    return scheduler, nodes


def outstanding(scheduler: PlanScheduling, node: Node, done: set[int]) -> list[int]:
    return [i for i in node.sent if i not in done]


def test_items_go_out_in_plan_order_two_per_worker_the_second_by_expected_end():
    expected = {"a": 30.0, "b": 20.0, "c": 10.0, "d": 5.0, "e": 1.0}
    scheduler, (first, second) = started(expected, 2)
    assert first.sent == [0, 3] and second.sent == [1, 2]  # w0's first ends last: it gets the shorter second
    assert scheduler.has_pending and not scheduler.tests_finished
    scheduler.mark_test_complete(second, 1)
    assert second.sent == [1, 2, 4] and not first.shutting_down
    scheduler.mark_test_complete(first, 0)
    assert first.shutting_down  # nothing left to hand out: its last item runs on the shutdown signal
    scheduler.mark_test_complete(first, 3)
    scheduler.mark_test_complete(second, 2)
    assert second.shutting_down and scheduler.tests_finished
    scheduler.mark_test_complete(second, 4)
    assert not scheduler.has_pending


def test_a_first_item_that_waits_for_devices_gets_its_second_item_last():
    # The plan: "wide" holds every device until 6 s; "waits" (3 s long) starts after it and ends at 9 s,
    # later than "two" (ends 8 s) though shorter. The next items go to the workers whose first ends soonest.
    ends = {"wide": 6.0, "two": 8.0, "waits": 9.0, "next1": 9.0, "next2": 11.0, "next3": 12.0}
    scheduler, (wide, two, waits) = started(ends, 3)
    assert [wide.sent, two.sent, waits.sent] == [[0, 3], [1, 4], [2, 5]]


def test_a_simulated_run_starts_every_item_once_in_plan_order_never_more_than_two_per_worker():
    seconds = [7.0, 1.0, 3.0, 2.0, 5.0, 1.0, 1.0, 4.0, 2.0, 6.0, 1.0, 3.0]
    expected = {f"s{i}": s for i, s in enumerate(seconds)}
    scheduler, nodes = started(expected, 3)
    done: set[int] = set()
    starts: list[int] = []
    running: list[tuple[float, str, int]] = []
    now = 0.0

    def start_what_may(node: Node) -> None:
        # xdist: a worker runs its first outstanding item once it holds a second, or was told to shut down.
        waiting = outstanding(scheduler, node, done)
        busy = any(n == node.name for _, n, _ in running)
        if waiting and not busy and (len(waiting) >= 2 or node.shutting_down):
            starts.append(waiting[0])
            heapq.heappush(running, (now + seconds[waiting[0]], node.name, waiting[0]))

    for node in nodes:
        start_what_may(node)
    while running:
        assert all(len(outstanding(scheduler, n, done)) <= AHEAD for n in nodes)
        now, name, index = heapq.heappop(running)
        node = next(n for n in nodes if n.name == name)
        done.add(index)
        scheduler.mark_test_complete(node, index, seconds[index])
        for each in nodes:
            start_what_may(each)
    assert sorted(starts) == list(range(len(seconds)))
    # Each worker starts its items in the order they were handed out, and hand-out is plan order.
    for node in nodes:
        assert [i for i in starts if i in node.sent] == node.sent
    assert sorted(i for n in nodes for i in n.sent) == list(range(len(seconds)))
    assert all(n.shutting_down for n in nodes) and scheduler.tests_finished and not scheduler.has_pending


def test_fewer_items_than_workers_shuts_the_idle_ones_down_at_once():
    scheduler, nodes = started({"only": 3.0}, 3)
    assert [n.sent for n in nodes] == [[0], [], []]
    assert all(n.shutting_down for n in nodes)


def test_a_crashed_worker_returns_its_running_item_and_its_next_goes_to_the_others_first():
    expected = {"a": 9.0, "b": 8.0, "c": 7.0, "d": 6.0, "e": 5.0}
    scheduler, (first, second) = started(expected, 2)
    assert first.sent == [0, 3] and second.sent == [1, 2]
    assert scheduler.remove_node(first) == "a"
    assert first not in scheduler.nodes
    scheduler.mark_test_complete(second, 1)
    assert second.sent == [1, 2, 3]  # the crashed worker's unstarted item, before e
    scheduler.mark_test_complete(second, 2)
    assert second.sent == [1, 2, 3, 4]
    scheduler.mark_test_complete(second, 3)
    assert second.shutting_down


def test_a_replacement_worker_joins_the_hand_out_and_a_worker_done_with_everything_leaves_quietly():
    names = ["a", "b", "c", "d", "e", "f"]
    scheduler, (first, second) = started(dict.fromkeys(names, 1.0), 2)
    assert first.sent == [0, 2] and second.sent == [1, 3]
    assert scheduler.remove_node(first) == "a"
    replacement = Node("w2")
    scheduler.add_node(replacement)
    scheduler.add_node_collection(replacement, names)
    scheduler.schedule()
    assert replacement.sent == [2, 4]
    scheduler.mark_test_complete(second, 1)
    assert second.sent == [1, 3, 5] and not scheduler.pending
    for node in (second, replacement):
        for index in list(scheduler.assigned[node]):
            scheduler.mark_test_complete(node, index)
        assert node.shutting_down and scheduler.remove_node(node) is None
    assert scheduler.tests_finished and not scheduler.has_pending


def test_items_given_back_by_a_worker_go_out_again_before_later_ones():
    scheduler, (first, second) = started({"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0, "e": 1.0}, 2)
    given_back = first.sent[1]
    scheduler.remove_pending_tests_from_node(first, [given_back])
    assert first.sent[-1] == given_back and given_back not in scheduler.pending
    assert scheduler.pending == [4]


def test_a_replacement_worker_that_collected_other_specs_gets_nothing():
    scheduler, (first, _) = started({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 1.0}, 2)
    scheduler.remove_node(first)
    stranger = Node("w9")
    scheduler.add_node(stranger)
    scheduler.add_node_collection(stranger, ["x"])
    assert stranger not in scheduler.collections


def test_workers_whose_collections_differ_get_nothing():
    scheduler = PlanScheduling(workers=2)
    first, second = Node("w0"), Node("w1")
    for node, collection in ((first, ["a", "b"]), (second, ["a"])):
        scheduler.add_node(node)
        scheduler.add_node_collection(node, collection)
    scheduler.schedule()
    assert first.sent == second.sent == []
