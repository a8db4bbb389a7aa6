"""The loopback bus: retained frames, wills, and its fault hook."""

from __future__ import annotations

import asyncio

import pytest

from mcm_firmware.clock import LoopClock, run_virtual
from mcm_firmware.transport import Address, Channel, Subscription, TransportError, Will
from mcm_firmware.transport.link_faults import LinkFaults
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport

A = Address("f", 1, Channel.TLM)


async def pair(bus):
    tx, rx = LoopbackTransport(bus, client_id="tx"), LoopbackTransport(bus, client_id="rx")
    await tx.connect()
    await rx.connect()
    await rx.subscribe(Subscription("f"))
    return tx, rx


async def drain(rx, wait=1.0):
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(rx.receive(), wait))
        except TimeoutError:
            return got


def test_frames_reach_matching_subscribers_only():
    async def main():
        bus = LoopbackBus()
        tx, rx = await pair(bus)
        other = LoopbackTransport(bus)
        await other.connect()
        await other.subscribe(Subscription("f", 2, Channel.CMD))
        await tx.publish(A, b"x")
        got, none = await drain(rx), await drain(other)
        for t in (tx, rx, other):
            await t.close()
        return got, none

    got, none = run_virtual(main)
    assert [d.payload for d in got] == [b"x"] and none == []


def test_retained_frames_reach_late_subscribers_and_empty_clears():
    async def main():
        bus = LoopbackBus()
        tx = LoopbackTransport(bus)
        await tx.connect()
        s = Address("f", 1, Channel.STATE)
        await tx.publish(s, b"birth", retain=True)
        late = LoopbackTransport(bus)
        await late.connect()
        await late.subscribe(Subscription("f", None, Channel.STATE))
        first = await drain(late)
        await tx.publish(s, b"", retain=True)
        cleared = bus.retained()
        await tx.close()
        await late.close()
        return first, cleared

    first, cleared = run_virtual(main)
    assert [(d.payload, d.retained) for d in first] == [(b"birth", True)]
    assert cleared == {}


def test_will_fires_on_crash_not_on_close():
    async def main():
        bus = LoopbackBus()
        will = Will(Address("f", 1, Channel.STATE), b"dead")
        a, b = LoopbackTransport(bus), LoopbackTransport(bus)
        await a.connect(will=will)
        await b.connect(will=will)
        await a.close()
        after_close = bus.retained()
        b.crash()
        with pytest.raises(TransportError):
            await b.receive()
        with pytest.raises(TransportError):
            await b.publish(A, b"x")
        return after_close, bus.retained()

    after_close, after_crash = run_virtual(main)
    assert after_close == {}
    assert after_crash == {Address("f", 1, Channel.STATE): b"dead"}


@pytest.mark.parametrize(
    "faults, expect",
    [
        (dict(drop=1.0), 0),
        (dict(duplicate=1.0), 200),
        (dict(), 100),
    ],
)
def test_fault_hook_drops_and_duplicates(faults, expect):
    async def main():
        hook = LinkFaults(seed=3, **faults)
        bus = LoopbackBus(hook=hook)
        tx, rx = await pair(bus)
        for i in range(100):
            await tx.publish(A, bytes([i]))
        got = await drain(rx)
        await tx.close()
        await rx.close()
        return got, hook.counts

    got, counts = run_virtual(main)
    assert len(got) == expect
    assert counts["seen"] == 100


def test_fault_hook_corrupts_exactly_one_bit():
    async def main():
        bus = LoopbackBus(hook=LinkFaults(corrupt=1.0, seed=5))
        tx, rx = await pair(bus)
        sent = bytes(range(64))
        await tx.publish(A, sent)
        (d,) = await drain(rx)
        await tx.close()
        await rx.close()
        return sent, d.payload

    sent, got = run_virtual(main)
    diff = int.from_bytes(sent, "big") ^ int.from_bytes(got, "big")
    assert bin(diff).count("1") == 1


def test_fault_hook_delays_and_reorders_in_virtual_time():
    async def main():
        clock = LoopClock()
        bus = LoopbackBus(hook=LinkFaults(delay=0.5, jitter=0.4, seed=11))
        tx, rx = await pair(bus)
        t0 = clock.now()
        for i in range(50):
            await tx.publish(A, bytes([i]))
        got = []
        arrival = []
        for _ in range(50):
            got.append((await rx.receive()).payload[0])
            arrival.append(clock.now() - t0)
        await tx.close()
        await rx.close()
        return got, arrival

    got, arrival = run_virtual(main)
    assert sorted(got) == list(range(50))
    assert got != list(range(50))  # jitter let frames overtake each other
    assert min(arrival) >= 0.5 and max(arrival) < 0.9 + 1e-9


def test_fault_hook_limited_to_channels():
    async def main():
        bus = LoopbackBus(hook=LinkFaults(drop=1.0, channels=frozenset({Channel.CMD})))
        tx, rx = await pair(bus)
        await tx.publish(A, b"tlm passes")
        await tx.publish(Address("f", 1, Channel.CMD), b"cmd dropped")
        got = await drain(rx)
        await tx.close()
        await rx.close()
        return [d.payload for d in got]

    assert run_virtual(main) == [b"tlm passes"]


def test_fault_probabilities_are_validated():
    with pytest.raises(ValueError, match="drop"):
        LinkFaults(drop=1.5)
    with pytest.raises(ValueError):
        LinkFaults(delay=-1)
