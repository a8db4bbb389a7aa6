"""Running a scenario: build the fleet, play the faults and commands on its clock, record every
frame, then check the expectations on the trace.

In virtual time (the default) the fleet runs on the loopback bus of a :class:`VirtualTimeLoop`,
as fast as the CPU allows, and the same file and seed give the same frames, bit for bit (the
digest). ``realtime`` runs the same scenario on real time over an MQTT broker, so that fleet
software can watch it unfold.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clock import Clock, LoopClock, ScaledClock, run_virtual
from ..faults import SPECS, ClearSpec, Fault, FaultError, parse_fault
from ..host.commands import COMMANDS
from ..host.record import RecordWriter
from ..plant.workload import Workload
from ..profile import Profile, ProfileError, load_profile
from ..profile.schema import RatesSpec
from ..protocol import Command, FrameFlags, Status
from ..runtime.fleet import Fleet
from ..runtime.injection import apply_fault, canonical_target, clear_faults
from ..tasks import cancel_and_wait
from ..transport import Subscription, Transport, TransportError, TransportFactory, transport_factory
from ..transport.loopback import LoopbackBus, LoopbackTransport
from .expect import Outcome, evaluate, parse_expectations
from .schema import Scenario, ScenarioError, parse_selector, read_scenario, scenario_and_problems
from .trace import Trace

VIRTUAL_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: virtual runs start here


@dataclass(order=True)
class Action:
    t: float
    order: int
    kind: str = field(compare=False)  # "fault", "clear", "command"
    node: int = field(compare=False)
    item: Any = field(compare=False)
    source: str = field(compare=False)  # where it comes from, for messages


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    digest: str
    frames: int
    sim_s: float
    wall_s: float
    outcomes: list[Outcome]
    trace: Trace
    profiles: dict[int, Profile]
    log: list[tuple[float, int, str]]  # (t, node, what happened) for faults and commands
    path: str = ""

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def speedup(self) -> float:
        return self.sim_s / self.wall_s if self.wall_s > 0 else math.inf


def _profiles(sc: Scenario, path: str) -> tuple[dict[int, Profile], dict[int, tuple[str, float]]]:
    """Each node's profile and workload; a ScenarioError standing for every problem found."""
    fl = sc.fleet
    ids = [fl.first_id + i for i in range(fl.nodes)]
    names = dict.fromkeys(ids, fl.profile)
    work: dict[int, tuple[str, float]] = dict.fromkeys(ids, (fl.workload, fl.load))
    group_of: dict[int, int] = {}  # the group that named a node's profile
    problems: list[ScenarioError] = []
    for gi, g in enumerate(fl.group):
        try:
            chosen = parse_selector(g.nodes, ids)
        except ValueError as e:
            problems.append(sc.error(str(e), "fleet", "group", gi, "nodes"))
            continue
        for n in chosen:
            if g.profile:
                names[n] = g.profile
                group_of[n] = gi
            w, load = work[n]
            work[n] = (g.workload or w, g.load or load)
    cache: dict[str, Profile | None] = {}  # None: refused, said once
    profiles = {}
    for n, name in names.items():
        if name not in cache:
            cache[name] = None
            try:
                prof = load_profile(name)
            except ProfileError as e:
                problems.append(
                    sc.error(str(e), "fleet", "group", group_of[n], "profile")
                    if n in group_of
                    else sc.error(str(e), "fleet", "profile")
                )
                continue
            if sc.rates is not None:
                rates = {**prof.rates.model_dump(), **sc.rates.model_dump(exclude_none=True)}
                try:
                    prof = prof.model_copy(update={"rates": RatesSpec(**rates)})
                except ValueError as e:
                    problems.append(sc.error(f"rates do not fit {name}: {e}", "rates"))
                    continue
            cache[name] = prof
        found = cache[name]
        if found is not None:
            profiles[n] = found
    if problems:
        raise ScenarioError.of(problems)
    return profiles, work


def _actions(sc: Scenario, fleet: Fleet, seed: int, path: str) -> list[Action]:
    ids = sorted(fleet.nodes)
    actions: list[Action] = []
    order = 0

    problems: list[ScenarioError] = []

    def add(t: float, kind: str, node: int, item: Any, source: str) -> None:
        nonlocal order
        actions.append(Action(t, order, kind, node, item, source))
        order += 1

    for i, step in enumerate(sc.fault):
        try:
            chosen = parse_selector(step.nodes, ids)
        except ValueError as e:
            problems.append(sc.error(str(e), "fault", i, "nodes"))
            continue
        fault = parse_fault(step.fault.split())
        if step.clear_at is not None and not SPECS[fault.kind].clearable:
            problems.append(sc.error(f"{fault.kind.label} cannot be cleared", "fault", i, "clear_at"))
            continue
        for n in chosen:
            try:
                canonical_target(fleet.nodes[n], fault)
            except FaultError as e:
                problems.append(sc.error(f"node {n}: {e}", "fault", i, "fault"))
                break
            add(step.at, "fault", n, fault, f"fault.{i}")
            if step.clear_at is not None:
                add(step.clear_at, "clear", n, ClearSpec(fault.kind, fault.target), f"fault.{i}")
    for i, cstep in enumerate(sc.command):
        try:
            chosen = parse_selector(cstep.nodes, ids)
        except ValueError as e:
            problems.append(sc.error(str(e), "command", i, "nodes"))
            continue
        words = cstep.command.split()
        spec = COMMANDS[words[0]]
        for n in chosen:
            add(cstep.at, "command", n, (spec, spec.parse(words[1:])), f"command.{i}")
    rf = sc.random_faults
    if rf is not None and rf.per_node_per_hour > 0:
        rng = random.Random(seed * 7_777_777 + 1)
        faults = [parse_fault(text.split()) for text in rf.faults]
        rate = rf.per_node_per_hour / 3600.0
        refused = set()
        for n in ids:
            for f in faults:
                try:
                    canonical_target(fleet.nodes[n], f)
                except FaultError as e:
                    if str(e) not in refused:
                        refused.add(str(e))
                        problems.append(sc.error(f"node {n}: {e}", "random_faults", "faults"))
            t = rf.start_s
            while True:
                t += rng.expovariate(rate)
                if t >= sc.duration_s:
                    break
                f = rng.choice(faults)
                add(t, "fault", n, f, "random_faults")
                hold = rng.uniform(*rf.hold_s)
                if SPECS[f.kind].clearable and t + hold < sc.duration_s:
                    add(t + hold, "clear", n, ClearSpec(f.kind, f.target), "random_faults")
    if problems:
        raise ScenarioError.of(problems)
    return sorted(actions)


def validate_scenario(path: str | Path, *, seed: int | None = None) -> tuple[Scenario, int]:
    """A scenario file checked as far as it can be without running it: the scenario and how many
    timed actions it would play, or a ScenarioError standing for every problem found (all of the
    schema's; else all of timing, expectations, profiles, faults and node selectors)."""
    scenario, problems = scenario_and_problems(read_scenario(path), str(path))
    actions = 0
    if scenario is not None:
        try:
            actions = check_scenario(scenario, seed=seed, path=str(path))
        except ScenarioError as e:
            problems = [*problems, *e.problems]
    if problems or scenario is None:
        raise ScenarioError.of(problems)
    return scenario, actions


def check_scenario(sc: Scenario, *, seed: int | None = None, path: str = "<scenario>") -> int:
    """Everything a run would check before it starts, against the profiles (a pump C on a two-pump
    module, a node selector beyond the fleet, a profile that does not exist), without running it.
    Returns how many timed actions (faults, clears, commands) the run would play."""
    seed = sc.seed if seed is None else seed
    profiles, _ = _profiles(sc, path)

    async def build() -> int:
        bus = LoopbackBus()
        fleet = Fleet(
            members=sorted(profiles.items()),
            fleet=sc.fleet.name,
            transport_factory=lambda cid: LoopbackTransport(bus, client_id=cid),
            clock=LoopClock(epoch=VIRTUAL_EPOCH),
            seed=seed,
        )
        return len(_actions(sc, fleet, seed, path))

    return run_virtual(build)


async def _apply(fleet: Fleet, a: Action, t_rel: float, log: list[tuple[float, int, str]]) -> None:
    node = fleet.nodes[a.node]
    try:
        if a.kind == "fault":
            fault: Fault = a.item
            applied = apply_fault(node, fault)
            log.append((t_rel, a.node, f"inject {applied}"))
        elif a.kind == "clear":
            cleared = clear_faults(node, a.item)
            log.append((t_rel, a.node, "clear " + (", ".join(str(f) for f in cleared) or "(nothing in force)")))
        else:
            spec, args = a.item
            resp = node.execute(
                Command(node_id=a.node, flags=int(FrameFlags.HOST), request_id=0, op=spec.op, args=args)
            )
            what = f"{spec.name}" + ("" if resp.status is Status.OK else f": {resp.status.name} {resp.message}")
            log.append((t_rel, a.node, what))
    except (FaultError, ValueError) as e:
        log.append((t_rel, a.node, f"{a.kind} refused: {e}"))
    except Exception as e:  # noqa: BLE001 - e.g. a crash while one is under way
        log.append((t_rel, a.node, f"{a.kind} failed: {type(e).__name__}: {e}"))


async def _record(tr: Transport, trace: Trace, writer: RecordWriter | None, clock: Clock, stop: asyncio.Event) -> None:
    try:
        while True:
            d = await tr.receive()
            trace.add(d.address, d.payload)
            if writer is not None:
                writer.write(clock.now_ns(), d.address, d.payload, retain=d.retained)
    except TransportError:
        stop.set()


async def run_async(
    sc: Scenario,
    *,
    seed: int,
    path: str,
    factory: TransportFactory,
    clock: Clock,
    record: str | None = None,
    progress: Callable[[float], None] | None = None,
    realtime: bool = False,
) -> RunResult:
    profiles, work = _profiles(sc, path)
    exps = parse_expectations(sc.expect)
    fleet = Fleet(
        members=sorted(profiles.items()), fleet=sc.fleet.name, transport_factory=factory, clock=clock, seed=seed
    )
    for i, (n, (w, load)) in enumerate(sorted(work.items())):
        shard, row = fleet.shard_of(n)
        kind = list(Workload)[i % len(Workload)] if w == "mixed" else Workload[w.upper()]
        shard.set_workload(row, kind, load)
    actions = _actions(sc, fleet, seed, path)
    t0 = clock.now()
    trace = Trace(round(t0 * 1e9))
    writer = (
        RecordWriter(
            record,
            fleet=sc.fleet.name,
            clock="real" if realtime else "virtual",
            started_ns=trace.t0_ns,
            source="mcm-emu scenario run",
            scenario=sc.name,
            seed=seed,
        )
        if record
        else None
    )
    rec_tr = factory(f"mcm-scenario-recorder-s{seed}")
    await rec_tr.connect()
    await rec_tr.subscribe(Subscription(sc.fleet.name))
    lost = asyncio.Event()
    recorder = asyncio.create_task(_record(rec_tr, trace, writer, clock, lost), name="scenario-recorder")
    log: list[tuple[float, int, str]] = []
    wall0 = time.perf_counter()
    await fleet.start()
    try:
        step = max(sc.duration_s / 20, 1.0) if progress is not None else math.inf
        next_report = step
        queue = list(actions)
        while True:
            due = min(queue[0].t if queue else math.inf, next_report, sc.duration_s)
            await clock.sleep_until(t0 + due)
            while queue and queue[0].t <= due:
                a = queue.pop(0)
                await _apply(fleet, a, a.t, log)
            if progress is not None and due >= next_report:
                progress(due)
                next_report += step
            if due >= sc.duration_s or fleet.failure is not None:
                break
        if fleet.failure is not None:
            raise RuntimeError(f"the simulation stopped: {fleet.failure!r}") from fleet.failure
    finally:
        await fleet.stop()
        await asyncio.sleep(0.2 if realtime else 0)  # the last frames reach the recorder
        await cancel_and_wait([recorder])
        await rec_tr.close()
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - wall0
    for n, nt in trace.nodes.items():
        if n in profiles:
            nt.pump_names = tuple(p.name for p in profiles[n].cooling.pumps)
    ids = sorted(profiles)
    outcomes = evaluate(exps, trace, profiles, sc.duration_s, lambda sel: parse_selector(sel, ids))
    return RunResult(sc, seed, trace.digest, trace.frames, sc.duration_s, wall, outcomes, trace, profiles, log, path)


def run_scenario(
    sc: Scenario,
    *,
    seed: int | None = None,
    path: str = "<scenario>",
    record: str | None = None,
    realtime: bool = False,
    broker: str | None = None,
    speed: float = 1.0,
    progress: Callable[[float], None] | None = None,
) -> RunResult:
    """Run a scenario to the end: in virtual time on the loopback bus, or in real time (scaled by
    ``speed``) over the MQTT broker at ``broker``."""
    seed = sc.seed if seed is None else seed
    if not realtime:
        bus = LoopbackBus()

        async def main() -> RunResult:
            return await run_async(
                sc,
                seed=seed,
                path=path,
                record=record,
                progress=progress,
                factory=lambda cid: LoopbackTransport(bus, client_id=cid),
                clock=LoopClock(epoch=VIRTUAL_EPOCH),
            )

        return run_virtual(main)
    if broker is None:
        raise ScenarioError(path, "--realtime needs --broker URL")
    factory = transport_factory(broker)
    return asyncio.run(
        run_async(
            sc,
            seed=seed,
            path=path,
            record=record,
            progress=progress,
            factory=factory,
            clock=ScaledClock(speed),
            realtime=True,
        )
    )
