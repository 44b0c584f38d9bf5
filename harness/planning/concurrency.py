"""How many runs go at once (xdist workers from the devices, the specs and the backend), the run's one
plan made with exactly that many, and the line `plan` prints about it."""

from __future__ import annotations

from harness.backends import Backend
from harness.backends.local import SIMULATED_CEILING, cpu_threads, usable_cores
from harness.context import RunContext
from harness.devices.visible import Inventory
from harness.planning import selection
from harness.planning.plan import Plan, make_plan
from harness.spec.compared import with_partners
from harness.spec.model import Spec


def worker_count(given: int | None, backend: Backend, inventory: Inventory, at_once: int, runs: int) -> int:
    """xdist workers for `runs` specs of which the plan can place `at_once` together (specs packed on
    one device count one each): --workers (`given`, never more than the specs), else what the backend asks."""
    if given is not None:
        return min(given, runs)
    # A scheduler places every run itself: each waits in its queue, so all may go out at once.
    asked = backend.workers(runs if inventory.scheduled else min(at_once, runs), inventory)
    return asked if asked is not None else (inventory.count if inventory.count > 1 else 0)


def plan_run(specs: list[Spec], context: RunContext) -> Plan:
    """The run's one plan, made once (by the CLI, or the plugin's controller when pytest is called
    directly) and sent to workers as plain data: with --changed-since only the specs whose
    dependencies changed, simulated with exactly the workers the run starts (`Plan.workers`)."""
    if context.values.get("changed_since"):
        chosen = selection.decisions(specs, context.repo, context.values["changed_since"])
        # A comparison needs both sides in one run: a changed spec brings its partners along.
        running = with_partners(specs, {spec.id for spec in specs if chosen[spec.id].run})
        specs = [spec for spec in specs if spec.id in running]
    given = context.values.get("workers")
    plan = make_plan(
        specs,
        context.inventory,
        context.durations.load(),
        context.tier,
        context.recorded_peaks,
        context.headroom,
        lambda at_once, runs: worker_count(given, context.backend, context.inventory, at_once, runs),
    )
    context.planned(plan.workers)
    return plan


def describe_concurrency(plan: Plan, given: int | None = None) -> str:
    """How many runs go at once and what bounds them, e.g. '4 devices, 4 workers' or
    '100000 devices, 64 workers: the ceiling for simulated devices'."""
    inventory = plan.inventory
    runs = max(plan.workers, 1)
    noun = "device" if inventory.kind != "cpu" else "CPU slot"
    text = f"{inventory.count} {noun}{'s' if inventory.count != 1 else ''}, {runs} worker{'s' if runs != 1 else ''}"
    placeable = min(plan.at_once, len(plan.runs))
    if given is not None and given < placeable:
        text += f": --workers {given}"
    elif runs < placeable and runs == SIMULATED_CEILING and inventory.kind == "fake":
        text += f": the ceiling of {SIMULATED_CEILING} runs at once on simulated devices"
    elif runs < inventory.count and not inventory.scheduled:
        text += ": the specs to run"
    if not inventory.scheduled:
        text += (
            f"; each run's processes get OMP_NUM_THREADS={cpu_threads(1, inventory)} per device held"
            f" ({usable_cores()} cores; torchrun's ranks share their run's)"
        )
    return text
