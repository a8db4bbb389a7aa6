"""A node's contract, in virtual time over the loopback bus: lifecycle, telemetry, commands,
rejected frames, duplicates, reconnects."""

from __future__ import annotations

import asyncio
import itertools
import struct
import zlib

import pytest

from mcm_firmware.clock import LoopClock, run_virtual
from mcm_firmware.host.client import HostClient, NodeError
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import (
    Birth,
    Command,
    Death,
    DeathReason,
    Event,
    EventCode,
    FrameError,
    FrameFlags,
    MsgType,
    Op,
    Reason,
    Response,
    Status,
    Telemetry,
    decode,
    encode,
)
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.runtime.handlers import HANDLERS
from mcm_firmware.testing.golden import GOLDEN
from mcm_firmware.transport import Address, Channel, Subscription
from mcm_firmware.transport.link_faults import LinkFaults
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport

from ..helpers import Recorder, loopback_fleet


async def raw_host(bus):
    tr = LoopbackTransport(bus, client_id="raw-host")
    await tr.connect()
    await tr.subscribe(Subscription("t", None, Channel.RSP))
    return tr


def cmd(node=0, request_id=1, op=Op.PING, flags=FrameFlags.HOST, seq=0):
    return encode(Command(node_id=node, seq=seq, flags=int(flags), request_id=request_id, op=op))


def test_birth_comes_after_the_command_subscription():
    calls = []

    class Spy(LoopbackTransport):
        async def subscribe(self, sub):
            calls.append(("subscribe", sub.channel))
            await super().subscribe(sub)

        async def publish(self, address, payload, **kw):
            calls.append(("publish", address.channel))
            await super().publish(address, payload, **kw)

    async def main():
        bus = LoopbackBus()
        fleet = Fleet.uniform(
            nodes=1,
            profile=load_profile("colossus-mcm"),
            fleet="t",
            transport_factory=lambda cid: Spy(bus, client_id=cid),
            clock=LoopClock(),
        )
        await fleet.start()
        await asyncio.sleep(1)
        await fleet.stop()

    run_virtual(main)
    assert calls[:2] == [("subscribe", Channel.CMD), ("publish", Channel.STATE)]


def test_retained_birth_then_death_on_clean_stop(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(1)
        return bus.retained()

    retained_while_up = on_fleet(scenario)
    births = {a.node: decode(p) for a, p in retained_while_up.items()}
    assert set(births) == {0, 1} and all(isinstance(b, Birth) for b in births.values())
    assert births[0].profile == "colossus-mcm" and births[0].bdseq == 1


def test_stop_publishes_a_retained_shutdown_death():
    async def main():
        bus = LoopbackBus()
        fleet = loopback_fleet(bus, 2)
        await fleet.start()
        await asyncio.sleep(1)
        await fleet.stop()
        return {a.node: decode(p) for a, p in bus.retained().items()}

    deaths = run_virtual(main)
    assert {n: (type(m), m.reason) for n, m in deaths.items()} == {
        0: (Death, DeathReason.SHUTDOWN),
        1: (Death, DeathReason.SHUTDOWN),
    }


def test_a_crashed_node_leaves_its_will():
    async def main():
        bus = LoopbackBus()
        fleet = loopback_fleet(bus, 2)
        await fleet.start()
        await asyncio.sleep(1)
        fleet.nodes[1].crash()
        await asyncio.sleep(0.1)
        state = {a.node: decode(p) for a, p in bus.retained().items()}
        await fleet.stop()
        return state

    state = run_virtual(main)
    assert isinstance(state[0], Birth)
    assert isinstance(state[1], Death) and state[1].reason is DeathReason.CONNECTION_LOST


def test_telemetry_at_the_profile_rate_with_rising_sequence_numbers(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(10.0)
        return rec

    rec = on_fleet(scenario)
    for node in (0, 1):
        tlm = rec.of(node, Channel.TLM)
        assert 99 <= len(tlm) <= 101  # 10 Hz for 10 s
        assert all(isinstance(m, Telemetry) for m in tlm)
        seqs = [m.seq for m in rec.of(node)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        snap = tlm[-1].snapshot
        assert len(snap.dies) == 4 and len(snap.hbm) == 8 and len(snap.pumps) == 2 and len(snap.valves) == 4
        stamps = [m.timestamp_ns for m in tlm]
        gaps = {round((b - a) / 1e6) for a, b in itertools.pairwise(stamps)}
        assert gaps == {100}  # absolute deadlines: exactly 100 ms apart


def test_node_phases_are_staggered(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(2.0)
        return rec

    rec = on_fleet(scenario)
    t0 = rec.of(0, Channel.TLM)[-1].timestamp_ns % 100_000_000
    t1 = rec.of(1, Channel.TLM)[-1].timestamp_ns % 100_000_000
    assert t0 != t1


def test_ping_and_status_through_the_host_client(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(5)
        async with HostClient(LoopbackTransport(bus), fleet="t") as host:
            rtt = await host.ping(1)
            st = await host.status(1)
        return rtt, st

    rtt, st = on_fleet(scenario)
    assert rtt >= 0
    assert st.profile == "colossus-mcm" and st.pump_names == ("A", "B")
    assert st.snapshot.uptime_ns == pytest.approx(5e9, rel=0.05)
    assert len(st.snapshot.dies) == 4


def test_rejected_frames_are_counted_reported_and_answered_where_possible(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(1)
        host = await raw_host(bus)
        addr = Address("t", 0, Channel.CMD)
        good = cmd(request_id=7)
        bad_crc = good[:-1] + bytes([good[-1] ^ 1])
        body = bytearray(good[:-4])
        body[27:29] = struct.pack("<H", 0x7777)  # unknown operation, CRC fixed up
        unknown_op = bytes(body) + struct.pack("<I", zlib.crc32(body))
        for frame in (
            b"garbage",
            bad_crc,
            unknown_op,
            encode(GOLDEN["response-ping"]),
            cmd(node=1, request_id=8),
            cmd(request_id=9, flags=0),
        ):
            await host.publish(addr, frame)
        await host.publish(addr, cmd(request_id=10))  # the node still works
        await asyncio.sleep(0.5)
        answers = []
        while not host._queue.empty():
            d = await host.receive()
            answers.append(decode(d.payload))
        await host.close()
        return fleet.nodes[0].counters, answers, rec

    counters, answers, rec = on_fleet(scenario)
    assert counters.rx_rejected == 6
    by_id = {a.request_id: a for a in answers if isinstance(a, Response)}
    assert by_id[7].status is Status.UNKNOWN_OP and by_id[7].op == 0x7777
    assert by_id[9].status is Status.BAD_REQUEST and "HOST flag" in by_id[9].message
    assert by_id[10].status is Status.OK
    assert 8 not in by_id  # a command for node 1 is not node 0's to answer
    events = [e for e in rec.of(0, Channel.EVT) if e.code == EventCode.FRAME_REJECTED]
    reasons = sorted(Reason(e.subject).name for e in events)
    assert reasons == sorted(["TRUNCATED", "BAD_CRC", "BAD_FIELD", "BAD_FIELD", "BAD_FIELD", "BAD_FIELD"])


def test_rejection_events_are_rate_limited_but_all_counted(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(0.5)
        host = await raw_host(bus)
        for _ in range(200):
            await host.publish(Address("t", 0, Channel.CMD), b"junk")
        await asyncio.sleep(3)
        await host.publish(Address("t", 0, Channel.CMD), b"junk")
        await asyncio.sleep(0.5)
        await host.close()
        return fleet.nodes[0].counters, rec

    counters, rec = on_fleet(scenario)
    assert counters.rx_rejected == 201
    events = rec.of(0, Channel.EVT)
    rejected = [e for e in events if e.code == EventCode.FRAME_REJECTED]
    summary = [e for e in events if e.code == EventCode.EVENTS_SUPPRESSED]
    assert 20 <= len(rejected) < 60
    assert len(rejected) + sum(int(e.value) for e in summary) == 201


def test_a_repeated_request_id_is_executed_once_and_answered_again(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(1)
        host = await raw_host(bus)
        addr = Address("t", 0, Channel.CMD)
        await host.publish(addr, cmd(request_id=42, op=Op.REBIRTH, seq=1))
        await host.publish(addr, cmd(request_id=42, op=Op.REBIRTH, seq=2, flags=FrameFlags.HOST | FrameFlags.RETRY))
        await asyncio.sleep(0.5)
        await host.close()
        return fleet.nodes[0].counters, rec

    counters, rec = on_fleet(scenario)
    responses = [m for m in rec.of(0, Channel.RSP) if m.request_id == 42]
    assert len(responses) == 2 and all(r.status is Status.OK for r in responses)
    assert responses[0].seq < responses[1].seq
    births = [m for m in rec.of(0, Channel.STATE) if isinstance(m, Birth)]
    assert len(births) == 2  # the first at connect, one for the single executed REBIRTH
    assert counters.rx_duplicates == 1


def test_reconnect_with_backoff_publishes_birth_again(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(1)
        node = fleet.nodes[0]
        ep = next(e for e in bus.endpoints() if e.client_id == node.client_id)
        bus.sever(ep)
        await asyncio.sleep(0.05)
        during = node.link_up
        await asyncio.sleep(3)
        return during, node.link_up, node.counters.reconnects, rec

    during, after, reconnects, rec = on_fleet(scenario)
    assert not during and after and reconnects == 1
    states = rec.of(0, Channel.STATE)
    assert [type(m).__name__ for m in states] == ["Birth", "Death", "Birth", "Death"]
    assert states[1].reason is DeathReason.CONNECTION_LOST  # the will of the severed connection
    assert states[3].reason is DeathReason.SHUTDOWN  # the clean stop at the end
    assert [states[0].bdseq, states[2].bdseq] == [1, 2]


def test_commands_survive_a_lossy_link_thanks_to_retries():
    async def main():
        faults = LinkFaults(
            drop=0.15, corrupt=0.1, duplicate=0.2, jitter=0.02, seed=7, channels=frozenset({Channel.CMD, Channel.RSP})
        )
        bus = LoopbackBus(hook=faults)
        fleet = loopback_fleet(bus, 1)
        await fleet.start()
        await asyncio.sleep(1)
        async with HostClient(LoopbackTransport(bus), fleet="t", timeout=2.0, retries=5) as host:
            for _ in range(50):
                await host.ping(0)
            stats = (host.rejected, host.unmatched)
        counters = fleet.nodes[0].counters
        await fleet.stop()
        return faults.counts, counters, stats

    counts, counters, (rejected, unmatched) = run_virtual(main)
    assert counts["dropped"] > 0 and counts["corrupted"] > 0 and counts["duplicated"] > 0
    assert counters.rx_rejected > 0 and counters.rx_duplicates > 0
    assert rejected + unmatched > 0


def test_fleet_runs_are_deterministic():
    def digest(seed):
        async def main():
            import hashlib

            bus = LoopbackBus()
            rec = await Recorder(bus).start()
            fleet = loopback_fleet(bus, 3, seed=seed)
            await fleet.start()
            await asyncio.sleep(20)
            await fleet.stop()
            await rec.stop()
            h = hashlib.sha256()
            for addr, msg, _ in rec.frames:
                h.update(f"{addr}".encode())
                h.update(encode(msg) if not isinstance(msg, FrameError) else b"!")
            return h.hexdigest()

        return run_virtual(main)

    assert digest(1) == digest(1)
    assert digest(1) != digest(2)


def test_an_operation_the_firmware_does_not_run_is_answered_unknown_op():
    # firmware that parses every operation of the protocol but runs only some (an older release)
    async def main():
        bus = LoopbackBus()
        older = {op: h for op, h in HANDLERS.items() if op is not Op.REBIRTH}
        fleet = Fleet.uniform(
            nodes=1,
            profile=load_profile("colossus-mcm"),
            fleet="t",
            clock=LoopClock(),
            transport_factory=lambda cid: LoopbackTransport(bus, client_id=cid),
            handlers=older,
        )
        await fleet.start()
        try:
            await asyncio.sleep(0.5)
            async with HostClient(LoopbackTransport(bus), fleet="t", timeout=1.0) as host:
                with pytest.raises(NodeError, match="UNKNOWN_OP") as info:
                    await host.request(0, Op.REBIRTH)
                await host.request(0, Op.PING)
                return info.value.response.message
        finally:
            await fleet.stop()

    assert run_virtual(main) == "operation REBIRTH is not implemented"


def test_event_and_message_types_on_the_wire(on_fleet):
    async def scenario(bus, fleet, rec):
        await asyncio.sleep(3)
        return rec

    rec = on_fleet(scenario)
    kinds = {(a.channel, type(m).__name__) for a, m, _ in rec.frames}
    assert (Channel.STATE, "Birth") in kinds and (Channel.TLM, "Telemetry") in kinds
    boot = [m for m in rec.of(0, Channel.EVT) if isinstance(m, Event) and m.code == EventCode.BOOT]
    assert len(boot) == 1
    exits = [m for m in rec.of(0, Channel.EVT) if m.code == EventCode.FAILSAFE_EXIT]
    assert sorted(m.subject for m in exits) == [0, 1, 2, 3]  # zones start in failsafe and leave it
    assert all(m.TYPE is MsgType.EVENT for m in rec.of(0, Channel.EVT))


def test_a_command_flood_is_refused_above_the_node_rate_and_counted(on_fleet):
    from mcm_firmware.protocol import Op, Status
    from mcm_firmware.runtime.node import COMMAND_BURST, OUTBOX_LIMIT

    async def scenario(bus, fleet, rec, host):
        node = fleet.nodes[0]
        flood = [host.request(0, Op.PING, check=False) for _ in range(1000)]  # at once: 10x a second's worth
        answers = await asyncio.gather(*flood)
        faults = await host.request(0, Op.GET_FAULTS)  # the fault control plane is not limited
        peak = len(node._urgent)
        await asyncio.sleep(3.0)  # the bucket refills: commands run again
        after = await host.request(0, Op.PING, check=False)
        stats = await host.request(0, Op.STATS)
        from prometheus_client.parser import text_string_to_metric_families

        from mcm_firmware.runtime.metrics import FleetCollector, Renderer

        text = Renderer(FleetCollector(fleet)).render()
        families = {f.name: f for f in text_string_to_metric_families(text.decode())}
        metric = {s.labels["kind"]: s.value for s in families["mcm_run_frames_refused"].samples}
        return answers, faults, after, stats.data, node.counters.cmd_refused, peak, metric

    answers, faults, after, stats, refused, peak, metric = on_fleet(scenario, nodes=1, settle=2)
    assert metric["commands_refused"] == refused and metric["responses_dropped"] == 0  # and in the metrics
    statuses = [a.status for a in answers]
    ok, no = statuses.count(Status.OK), statuses.count(Status.REFUSED)
    assert ok + no == 1000 and COMMAND_BURST - 5 <= ok <= COMMAND_BURST + 20 and no == refused
    assert "command rate" in next(a.message for a in answers if a.status is Status.REFUSED)
    assert faults.status is Status.OK and after.status is Status.OK
    assert stats.cmd_refused == refused and peak <= OUTBOX_LIMIT  # counted where STATS shows it; memory bounded


def test_a_node_starts_its_sequence_numbers_as_the_protocol_says(on_fleet):
    """docs/protocol.md: the will registered on connecting carries seq 0, the BIRTH 1, the BOOT
    event 2, the first telemetry 3."""

    async def scenario(bus, fleet, rec):
        await asyncio.sleep(1)
        fleet.nodes[1].crash()  # the broker publishes its will: the DEATH registered on connecting
        await asyncio.sleep(0.1)
        return rec

    rec = on_fleet(scenario)
    for node in (0, 1):
        frames = rec.of(node)
        birth = next(m for m in frames if isinstance(m, Birth))
        boot = next(m for m in frames if isinstance(m, Event) and m.code == EventCode.BOOT)
        first_tlm = min(m.seq for m in frames if isinstance(m, Telemetry))
        assert (birth.seq, boot.seq, first_tlm) == (1, 2, 3), node
    will = next(m for m in rec.of(1) if isinstance(m, Death))
    assert will.reason is DeathReason.CONNECTION_LOST and will.seq == 0


def test_a_status_answers_tx_seq_is_its_own_seq(on_fleet):
    """docs/protocol.md: StatusData's tx_seq is the node's frame counter when the answer was made,
    the seq of the RESPONSE that carries it."""

    async def scenario(bus, fleet, rec):
        await asyncio.sleep(1.05)
        host = await raw_host(bus)
        answers = []
        for k in range(5):
            await host.publish(Address("t", 0, Channel.CMD), cmd(request_id=100 + k, op=Op.STATUS, seq=k))
            answers.append(decode((await asyncio.wait_for(host.receive(), 5)).payload))
            await asyncio.sleep(0.037)  # between telemetry frames, at different phases
        await host.close()
        return answers

    answers = on_fleet(scenario)
    assert all(isinstance(a, Response) and a.status is Status.OK for a in answers)
    assert [a.data.tx_seq for a in answers] == [a.seq for a in answers]
    assert len({a.seq for a in answers}) == 5
