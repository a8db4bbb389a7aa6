"""A fleet: shards of modules, their schedulers and their nodes, on one clock.

Per shard, two named tasks run on absolute deadlines:

``shard-<profile>-tick``
    calls :meth:`Shard.tick` every ``1 / tick_hz`` and hands the resulting events to the nodes;
``shard-<profile>-tlm``
    publishes telemetry at ``telemetry_hz``. The period is cut into slots and each node is given
    one, so a fleet's telemetry is spread over the period instead of leaving in one burst; the
    records of a slot are filled in one vectorised pass.

Each node adds its own two tasks (link, tx); see :mod:`.node`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..clock import Clock, Deadlines
from ..kernel import stream
from ..keyring import KeyRing
from ..plant.workload import Workload
from ..profile import Profile
from ..protocol import DeathReason, Link, LinkCondition, NodeRange, Op, encode
from ..protocol.auth import FRESHNESS_S, FrameAuth
from ..protocol.codec import frame_block
from ..tasks import cancel_and_wait
from ..transport import LinkFrames, NodeLinks, TransportFactory
from ..transport.topics import topic
from .handlers import HANDLERS
from .meter import DROPPED, DUE, SENT, RunMeter, telemetry_counters
from .node import U32, Handler, Node
from .shard import Shard

log = logging.getLogger(__name__)
MAX_TELEMETRY_SLOTS = 10
MAX_SHARD = 2048
"""Modules of one profile beyond this many are cut into shards of equal size whose ticks are
spread over the tick period: a tick of a few milliseconds at a time keeps the loop responsive."""


START_BATCH = 32
"""Nodes started between two turns of the event loop: a thousand first steps in one turn would hold
the control ticks back for tens of milliseconds."""


class Fleet:
    def __init__(
        self,
        *,
        members: Sequence[tuple[int, Profile]],
        fleet: str,
        transport_factory: TransportFactory | None,
        clock: Clock,
        seed: int = 0,
        links: NodeLinks | None = None,
        handlers: Mapping[Op, Handler] = HANDLERS,
        frame_keys: KeyRing | None = None,
    ) -> None:
        """Each node's transport comes from ``links`` (:func:`mcm_firmware.transport.node_links`)
        when given, else from ``transport_factory``; ``handlers`` is the command set the nodes'
        firmware runs (all of them by default); ``frame_keys``: the fleet authenticates its frames
        with these keys (docs/protocol.md, "Frame authentication")."""
        ids = [nid for nid, _ in members]
        if len(set(ids)) != len(ids):
            raise ValueError("node ids must be unique")
        self.name = fleet
        self.clock = clock
        self.seed = seed
        self.shards: dict[str, Shard] = {}
        self.nodes: dict[int, Node] = {}
        self._rows: dict[str, list[Node]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._skipped: dict[str, int] = {}  # telemetry slots skipped so far, per shard
        self.failure: BaseException | None = None  # a scheduler that died: the fleet is not simulating
        self.failed = asyncio.Event()
        self.meter = RunMeter(tick_period_s=min((1.0 / p.rates.tick_hz for _, p in members), default=0.05))
        self.tlm: dict[str, np.ndarray] = {}  # telemetry counters per shard, [4, rows] (meter.DUE ...)
        groups: dict[str, list[tuple[int, Profile]]] = {}
        for nid, prof in members:
            groups.setdefault(prof.name, []).append((nid, prof))
        now = clock.now()
        shards: list[tuple[str, list[tuple[int, Profile]], float]] = []  # name, members, phase (share of a period)
        for pname, group in sorted(groups.items()):
            parts = -(-len(group) // MAX_SHARD)
            size = -(-len(group) // parts)
            for j in range(parts):
                shards.append((pname if parts == 1 else f"{pname}/{j}", group[j * size : (j + 1) * size], j / parts))
        self._phase: dict[str, float] = {}
        for k, (name, group, phase) in enumerate(shards):
            shard = Shard(group[0][1], len(group), seed=(seed * 1_000_003 + k) & U32, start_t=now)
            shard.name = name
            self.shards[name] = shard
            self._phase[name] = phase
            counters = self.tlm[name] = telemetry_counters(len(group))
            self._skipped[name] = 0
            self.meter.tlm.append(counters)
            rows = []
            for row, (nid, _) in enumerate(group):
                factory = links.factory(nid) if links is not None else transport_factory
                if factory is None:
                    raise ValueError(f"node {nid} has no transport")
                node = Node(
                    node_id=nid,
                    fleet=fleet,
                    shard=shard,
                    row=row,
                    transport_factory=factory,
                    clock=clock,
                    handlers=handlers,
                    seed=(seed * 7_919 + nid) & U32,
                    meter=self.meter,
                    tlm=counters[:, row],
                    auth=None
                    if frame_keys is None
                    else FrameAuth(
                        fleet,
                        frame_keys.secret,
                        frame_keys.current,
                        freshness_s=FRESHNESS_S if not clock.virtual and clock.speed == 1 else None,
                    ),
                )
                self.nodes[nid] = node
                rows.append(node)
            self._rows[name] = rows
        # the batched telemetry path writes frames without a node's hands: not for sealed frames
        self._sink = links.telemetry_sink() if links is not None and frame_keys is None else None
        # the block's CRCs through the compiled loop when the shards run compiled kernels
        self._crc_rows = (
            stream.compiled_crc_rows()
            if self._sink is not None and any(s.kernels is not None for s in self.shards.values())
            else None
        )
        # a sealed fleet seals its carriers' LINK frames too (with the key of the link's first node)
        self._link_auth = None if frame_keys is None else FrameAuth(fleet, frame_keys.secret, frame_keys.current)
        if links is not None:
            links.set_link_frames(self._link_frames)

    def _link_frames(self, name: str, runs: Sequence[tuple[int, int]], bdseq: int) -> LinkFrames:
        """The state frames of a carrier link that carries ``runs`` of this fleet's nodes: one
        connection's, sealed in a sealed fleet by a sender of their own (LOST 0, ONLINE 1,
        SHUTDOWN 2: a live subscriber gets ONLINE, then LOST or SHUTDOWN, each once)."""
        sender = int.from_bytes(os.urandom(4), "little")
        seqs = {LinkCondition.LOST: 0, LinkCondition.ONLINE: 1, LinkCondition.SHUTDOWN: 2}

        def frame(condition: LinkCondition) -> bytes:
            f = encode(
                Link(
                    node_id=runs[0][0],
                    seq=seqs[condition],
                    timestamp_ns=self.clock.now_ns(),
                    link=name,
                    bdseq=bdseq,
                    condition=condition,
                    ranges=tuple(NodeRange(first=a, last=b) for a, b in runs),
                )
            )
            return f if self._link_auth is None else self._link_auth.seal(f, sender)

        return LinkFrames(frame(LinkCondition.ONLINE), frame(LinkCondition.LOST), frame(LinkCondition.SHUTDOWN))

    @classmethod
    def uniform(cls, *, nodes: int, profile: Profile, first_id: int = 0, **kw: Any) -> Fleet:
        return cls(members=[(first_id + i, profile) for i in range(nodes)], **kw)

    def set_workload(self, name: str) -> None:
        """``idle``, ``steady``, ``training``, ``inference`` for every node, or ``mixed``: the four
        in turn by node id."""
        kinds = list(Workload)
        for i, nid in enumerate(sorted(self.nodes)):
            kind = kinds[i % len(kinds)] if name == "mixed" else Workload[name.upper()]
            shard, row = self.shard_of(nid)
            shard.set_workload(row, kind)

    def members(self, shard: str) -> list[Node]:
        """The nodes of a shard, by row."""
        return self._rows[shard]

    def shard_of(self, node_id: int) -> tuple[Shard, int]:
        node = self.nodes[node_id]
        return node.shard, node.row

    async def start(self) -> None:
        self.meter.start(probe=not self.clock.virtual)
        for name, shard in self.shards.items():
            for task in (
                asyncio.create_task(self._tick_loop(name, shard), name=f"shard-{name}-tick"),
                asyncio.create_task(self._telemetry_loop(name, shard), name=f"shard-{name}-tlm"),
            ):
                task.add_done_callback(self._watch)
                self._tasks.append(task)
        for k, node in enumerate(self.nodes.values(), 1):
            node.start()
            if k % START_BATCH == 0:
                await asyncio.sleep(0)  # the ticks' timers run between batches of first steps

    def _watch(self, task: asyncio.Task[None]) -> None:
        """A scheduler must never end on its own: record why it did, loudly."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.failure is None:
            self.failure = exc
            self.failed.set()
            log.error("fleet %s: %s died: %r", self.name, task.get_name(), exc, exc_info=exc)

    async def stop(self, *, reason: DeathReason = DeathReason.SHUTDOWN) -> None:
        """Telemetry stops (nothing more is due), every node publishes its DEATH, then the control
        ticks stop."""
        await cancel_and_wait([t for t in self._tasks if t.get_name().endswith("-tlm")])
        await asyncio.gather(*(n.stop(reason=reason) for n in self.nodes.values()))
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self.meter.stop()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.gather(*(n.connected_once.wait() for n in self.nodes.values())), timeout)

    async def _tick_loop(self, name: str, shard: Shard) -> None:
        """On absolute deadlines; a tick that wakes a period or more late integrates every period
        that passed (the modules keep the clock's time) and the lateness is measured."""
        nodes = self._rows[name]
        clock, period = self.clock, shard.dt
        deadlines = Deadlines(clock, period, phase=self._phase[name] * period, skip_after=math.inf)
        while True:
            due = await deadlines.wait()
            late = clock.now() - due
            periods = 1 + int(late // period) if late >= period else 1
            deadlines.k += periods - 1
            shard.tick(periods)
            self.meter.tick(name, late / clock.speed, periods)
            for ev in shard.take_events():
                nodes[ev.row].emit_event(ev.severity, ev.code, subject=ev.subject, value=ev.value, text=ev.text)

    async def _telemetry_loop(self, name: str, shard: Shard) -> None:
        nodes = self._rows[name]
        period = 1.0 / shard.profile.rates.telemetry_hz
        slots = max(1, min(len(nodes), MAX_TELEMETRY_SLOTS))
        # each slot a run of adjacent rows: its records gather from neighbouring memory
        members = np.array_split(np.arange(len(nodes)), slots)
        slot = period / slots
        deadlines = Deadlines(self.clock, slot, phase=slot * (0.5 + self._phase[name]) % slot)
        counters = self.tlm[name]
        ids = np.array([n.node_id for n in nodes], np.uint32)
        prepared = None  # the topics of this shard's nodes, for the sink
        k = 0
        while True:
            await deadlines.wait()
            skipped, self._skipped[name] = deadlines.overruns - self._skipped[name], deadlines.overruns
            for j in range(k, k + skipped):  # slots the process was too late for: due, not sent
                late = members[j % slots]
                late = late[shard.reporting[late]]
                counters[DUE, late] += 1
                counters[DROPPED, late] += 1
            k += skipped
            rows = members[k % slots]
            k += 1
            rows = rows[shard.reporting[rows]]  # owing telemetry now
            counters[DUE, rows] += 1
            up = shard.linked[rows]
            counters[DROPPED, rows[~up]] += 1
            live = rows[up]
            if not len(live):
                continue
            mtype, rec = shard.telemetry_records(live)
            sink = self._sink
            if sink is None:
                for i, r in enumerate(live):
                    nodes[r].offer_telemetry(rec[i].tobytes(), mtype)
                continue
            # the whole slot in one write; a node with link faults in force sends its own (they act there)
            faulty = shard.link_faulty[live]
            if faulty.any():
                for f in np.nonzero(faulty)[0]:
                    nodes[live[f]].offer_telemetry(rec[f].tobytes(), mtype)
                keep = ~faulty
                live, rec = live[keep], rec[keep]
            seqs = shard.seq[live]
            shard.seq[live] = seqs + np.uint32(1)  # wraps at 2^32 like every sequence number
            block = frame_block(mtype, ids[live], seqs, self.clock.now_ns(), rec, self._crc_rows)
            if prepared is None:
                # telemetry that waited a period for the link is stale: slots behind it are refused
                prepared = sink.prepare(
                    [topic(n.tlm_address) for n in nodes], block.shape[1], max_age=period / self.clock.speed
                )
            ok = sink.send_prepared(prepared, live, block)
            counters[SENT if ok else DROPPED, live] += 1

    def summary(self, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """One line of figures per node (the first ``limit`` by id), for the live display."""
        for nid in sorted(self.nodes)[:limit]:
            node = self.nodes[nid]
            shard, row = node.shard, node.row
            temps = shard.s_die.value[row]
            cool = shard.cool
            names = [pp.name for pp in shard.profile.cooling.pumps]
            pumps = " ".join(
                name
                + ("*" if int(cool.lead[row]) == k else "")
                + ("!" if cool.pump_fault[row, k] else "" if cool.pump_on[row, k] else "-")
                for k, name in enumerate(names)
            )
            state = node.state.name if node.state.name != "RUNNING" else shard.node_state(row).name
            if not node.up and not node.rebooting:  # crashed for good, or stopped: not coming back
                state = "DOWN"
            yield {
                "node": nid,
                "profile": shard.profile.name,
                "state": state,
                "link": "up" if node.link_up else "down",
                "temp_c": float(np.nanmax(temps)) if np.isfinite(temps).any() else float("nan"),
                "power_w": float(shard.plant.p_total[row]),
                "cap_w": float(shard.dvfs.cap_w[row]),
                "clock_mhz": float(shard.dvfs.mhz[row].mean()),
                "mode": shard.cooling_mode(np.array([row]))[0],
                "pumps": pumps,
                "faults": [str(f) for f in node.faults.values()],
            }

    def totals(self) -> dict[str, Any]:
        """The whole fleet in a few figures: nodes, links up, hottest die (sensed), total power."""
        hot = [np.nanmax(s.s_die.value) for s in self.shards.values() if np.isfinite(s.s_die.value).any()]
        return {
            "nodes": len(self.nodes),
            "up": sum(n.link_up for n in self.nodes.values()),
            "temp_c": float(max(hot)) if hot else float("nan"),
            "power_w": float(sum(s.plant.p_total.sum() for s in self.shards.values())),
        }
