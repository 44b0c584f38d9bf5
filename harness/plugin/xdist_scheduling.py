"""An xdist scheduling strategy that hands specs out in plan order, one at a time.

xdist's `load` strategy sends each worker a batch up front, so a long spec can sit queued
behind another on one worker while a second worker idles. Here each worker holds at most
the item it runs plus the one it must already know to start it (an xdist worker runs an
item only once it has the next one, or is told to shut down), and every further item
goes to whichever worker frees up, in the plan's order (the best of several simulated orders). Which devices a
spec gets is not decided here but by the device pool (`leases.py`) at run time.
"""

from __future__ import annotations

from collections.abc import Callable

from xdist.scheduler import LoadScheduling

AHEAD = 2


class PlanScheduling(LoadScheduling):
    """`load` scheduling without batches: collection order is the plan, `expected` breaks ties."""

    collection: list[str] | None  # LoadScheduling's: None until every worker has collected

    def __init__(self, config, log=None, expected: Callable[[str], float] = lambda nodeid: 0.0):
        super().__init__(config, log)
        self.expected = expected

    def check_schedule(self, node, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if not self.pending:
            node.shutdown()
            return
        if len(self.node2pending[node]) < AHEAD:
            self._send_tests(node, AHEAD - len(self.node2pending[node]))

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self.check_schedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        collection: list[str] = next(iter(self.node2collection.values()))
        self.collection = collection
        self.pending[:] = range(len(collection))
        for node in self.nodes:
            self._send_tests(node, 1)
        # The second item of a worker starts when its first ends: give the next-longest
        # items to the workers whose first item is expected to end soonest.
        first_end = {
            node: self.expected(collection[self.node2pending[node][0]])
            for node in self.nodes
            if self.node2pending[node]
        }
        for node in sorted(first_end, key=lambda n: first_end[n]):
            self._send_tests(node, 1)
        if not self.pending:
            for node in self.nodes:
                node.shutdown()
