"""An xdist scheduling strategy that hands specs out in plan order, one at a time.

xdist's `load` strategy sends each worker a batch up front, so a long spec can sit queued
behind another on one worker while a second worker idles. Here each worker holds at most
the item it runs plus the one it must already know to start it (an xdist worker runs an
item only once it has the next one, or is told to shut down), and every further item
goes to whichever worker frees up, in the plan's order. Which devices a spec gets is not
decided here but by the device pool (`devices/leases.py`) at run time.

`PlanScheduling` implements xdist's public `Scheduling` protocol (`xdist.scheduler.protocol`)
itself; it builds on no xdist class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from xdist.workermanage import parse_tx_spec_config

AHEAD = 2


class Worker(Protocol):
    """What the scheduler uses of xdist's `WorkerController`."""

    shutting_down: bool

    def send_runtest_some(self, indices: Sequence[int]) -> None: ...

    def shutdown(self) -> None: ...


class PlanScheduling:
    """Items in collection order (the plan's: the workers sorted them by it), at most `AHEAD` per worker.

    `expected_end` (nodeid -> when the plan's simulation ends it, in seconds from the start) decides
    which worker gets which second item at the start;
    `workers` is how many workers must have collected before scheduling starts.
    """

    def __init__(
        self,
        config: Any = None,
        log: Any = None,
        expected_end: Callable[[str], float] = lambda nodeid: 0.0,
        workers: int | None = None,
    ):
        self.expected_end = expected_end
        self.workers = workers if workers is not None else len(parse_tx_spec_config(config))
        self.log = log.plan_scheduling if log is not None else (lambda *args: None)
        self.collections: dict[Any, list[str]] = {}
        self.assigned: dict[Any, list[int]] = {}
        self.pending: list[int] = []  # not yet sent to any worker, in plan order
        self.collection: list[str] | None = None  # set once every worker has collected the same items

    @property
    def nodes(self) -> list[Any]:
        return list(self.assigned)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.collections) >= self.workers

    @property
    def tests_finished(self) -> bool:
        # A worker's last item runs once it is told to shut down, so one outstanding item is finishing.
        return (
            self.collection_is_completed
            and not self.pending
            and all(len(items) < AHEAD for items in self.assigned.values())
        )

    @property
    def has_pending(self) -> bool:
        return bool(self.pending) or any(self.assigned.values())

    def add_node(self, node: Worker) -> None:
        assert node not in self.assigned
        self.assigned[node] = []

    def add_node_collection(self, node: Worker, collection: Sequence[str]) -> None:
        assert node in self.assigned
        if self.collection is not None and list(collection) != self.collection:
            # A worker started later (after a crash) that sees other specs gets nothing.
            self.log(f"worker {node} collected different specs; it gets none")
            return
        self.collections[node] = list(collection)

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            # Workers added after the start (a crashed one replaced) join the hand-out.
            self._fill_all()
            return
        collections = list(self.collections.values())
        if any(c != collections[0] for c in collections[1:]):
            self.log("**Different specs collected, aborting run**")
            return
        self.collection = collections[0]
        self.pending = list(range(len(self.collection)))
        for node in self.nodes:
            self._send(node, 1)
        # The second item of a worker starts when its first ends: give the next items to the workers
        # whose first item the plan ends soonest. By its end, not its length: a first item that waits
        # for devices (behind a spec holding them all) would hold the next item back for its wait too.
        first_end = {
            node: self.expected_end(self.collection[items[0]]) for node, items in self.assigned.items() if items
        }
        for node in sorted(first_end, key=lambda n: first_end[n]):
            self._send(node, 1)
        self._fill_all()

    def mark_test_complete(self, node: Worker, item_index: int, duration: float = 0) -> None:
        self.assigned[node].remove(item_index)
        self._fill(node)

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        self.pending.insert(0, self.collection.index(item))
        self._fill_all()

    def remove_pending_tests_from_node(self, node: Worker, indices: Sequence[int]) -> None:
        """Items a worker gave back unrun go first again, in their plan order."""
        given_back = set(indices)
        returned = [i for i in self.assigned[node] if i in given_back]
        self.assigned[node] = [i for i in self.assigned[node] if i not in given_back]
        self.pending[:0] = sorted(returned)
        self._fill_all()

    def remove_node(self, node: Worker) -> str | None:
        """A worker gone: at its shutdown with nothing left, or crashed, when its running item
        is what crashed (returned) and the one it held next goes to the others first."""
        items = self.assigned.pop(node)
        if not items:
            return None
        assert self.collection is not None
        crashed, *unstarted = items
        self.pending[:0] = unstarted
        self._fill_all()
        return self.collection[crashed]

    def _fill_all(self) -> None:
        for node in self.nodes:
            self._fill(node)

    def _fill(self, node: Worker) -> None:
        if node.shutting_down:
            return
        if not self.pending:
            node.shutdown()
            return
        self._send(node, AHEAD - len(self.assigned[node]))

    def _send(self, node: Worker, count: int) -> None:
        items = self.pending[: max(0, count)]
        if items:
            del self.pending[: len(items)]
            self.assigned[node].extend(items)
            node.send_runtest_some(items)
