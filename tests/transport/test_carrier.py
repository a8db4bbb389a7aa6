"""Carrier links: one connection carries many nodes, each with its own topics, BIRTH, DEATH and
commands; the carrier's LINK frame says when all of them went offline at once."""

from __future__ import annotations

import asyncio

import pytest

from mcm_firmware.clock import LoopClock, run_virtual
from mcm_firmware.host.client import HostClient
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import Birth, Death, DeathReason, Link, LinkCondition, Op, decode
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.transport import Channel, TransportError, node_links
from mcm_firmware.transport.carrier import CARRIED, CarriedTransport, CarrierLinks, ranges
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport

from ..helpers import Recorder

NODES = [3, 4, 5, 9]


def _carried_fleet(bus: LoopbackBus) -> tuple[Fleet, CarrierLinks]:
    links = node_links([f"loopback://{id(bus)}"], NODES, fleet="t", connection="carrier")
    assert isinstance(links, CarrierLinks)
    links.carrier.factory = lambda cid: LoopbackTransport(bus, client_id=cid)
    fleet = Fleet(
        members=[(n, load_profile("colossus-mcm")) for n in NODES],
        fleet="t",
        transport_factory=None,
        clock=LoopClock(),
        links=links,
    )
    return fleet, links


def test_ranges_are_runs_of_node_ids():
    assert ranges([9, 3, 4, 5]) == [(3, 5), (9, 9)]
    assert ranges([7]) == [(7, 7)]


def test_auto_picks_a_carrier_above_the_per_node_limit():
    assert not isinstance(node_links(["mqtt://127.0.0.1:1"], list(range(100)), fleet="f"), CarrierLinks)
    big = node_links(["mqtt://127.0.0.1:1"], list(range(101)), fleet="f")
    assert isinstance(big, CarrierLinks) and big.carrier.client_id == "mcm-f-link-0-100"
    assert big.telemetry_sink() is not None
    with pytest.raises(ValueError, match="connection 'many'"):
        node_links(["mqtt://127.0.0.1:1"], [1], fleet="f", connection="many")


def test_carried_nodes_share_one_connection_and_keep_their_own_state():
    async def main():
        bus = LoopbackBus()
        rec = await Recorder(bus).start()
        fleet, links = _carried_fleet(bus)
        await links.open()
        await fleet.start()
        await fleet.wait_connected(5)
        await asyncio.sleep(2)
        clients = {ep.client_id for ep in bus.endpoints()} - {"recorder"}
        async with HostClient(LoopbackTransport(bus), fleet="t") as host:
            pings = [await host.request(n, Op.PING) for n in NODES]
        fleet.nodes[4].crash()  # the carrier, still alive, publishes node 4's will
        await asyncio.sleep(1)
        await fleet.stop()
        await links.close()
        await asyncio.sleep(0.1)
        await rec.stop()
        return clients, pings, rec, links.carrier

    clients, pings, rec, carrier = run_virtual(main)
    assert clients == {"mcm-t-link-3-9"}  # one connection for all four nodes
    assert all(p.request_id for p in pings)
    links_seen = [m for m in rec.of(3, Channel.LINK) if isinstance(m, Link)]
    assert [m.condition for m in links_seen] == [LinkCondition.ONLINE, LinkCondition.SHUTDOWN]
    assert links_seen[0].ranges[0].first == 3 and links_seen[0].carries(9) and not links_seen[0].carries(6)
    for n in NODES:
        births = [m for m in rec.of(n, Channel.STATE) if isinstance(m, Birth)]
        assert births and births[0].bdseq == links_seen[0].bdseq == carrier.bdseq  # the carrier's bdseq
        assert rec.of(n, Channel.TLM)  # telemetry went out for every node
    deaths = {n: [m.reason for m in rec.of(n, Channel.STATE) if isinstance(m, Death)] for n in NODES}
    assert deaths[4] == [DeathReason.CONNECTION_LOST]  # its will, published by the carrier
    assert all(deaths[n] == [DeathReason.SHUTDOWN] for n in (3, 5, 9))


def test_a_lost_carrier_leaves_its_link_will_and_comes_back():
    async def main():
        bus = LoopbackBus()
        rec = await Recorder(bus).start()
        fleet, links = _carried_fleet(bus)
        await links.open()
        await fleet.start()
        await fleet.wait_connected(5)
        await asyncio.sleep(1)
        carrier_ep = next(ep for ep in bus.endpoints() if ep.client_id == "mcm-t-link-3-9")
        bus.sever(carrier_ep)  # the network drops the carrier's connection
        await asyncio.sleep(15)  # backoff, then the carrier and its nodes come back
        up = all(n.link_up for n in fleet.nodes.values())
        retained = decode(bus.retained()[links.carrier.address])
        await fleet.stop()
        await links.close()
        await rec.stop()
        return retained, up, rec, links.carrier

    retained, up, rec, carrier = run_virtual(main)
    # the will marked the carried nodes lost (retained until the new connection said ONLINE); the
    # first retry may come at once (full jitter), so the order is what is checked, not a moment
    link = [(m.condition, m.bdseq) for m in rec.of(3, Channel.LINK) if isinstance(m, Link)]
    assert link[:3] == [
        (LinkCondition.ONLINE, CARRIED | 1),
        (LinkCondition.LOST, CARRIED | 1),
        (LinkCondition.ONLINE, CARRIED | 2),
    ]
    assert isinstance(retained, Link) and retained.condition is LinkCondition.ONLINE and retained.bdseq == CARRIED | 2
    assert up and carrier.connects == 2 and carrier.bdseq == CARRIED | 2
    births = [m for m in rec.of(5, Channel.STATE) if isinstance(m, Birth)]
    assert [b.bdseq for b in births] == [CARRIED | 1, CARRIED | 2]  # every node re-born on the new connection


def test_a_carried_endpoint_takes_its_own_commands_only():
    async def main():
        bus = LoopbackBus()
        _, links = _carried_fleet(bus)
        await links.open()
        ep = CarriedTransport(links.carrier, 3)
        await ep.connect()
        from mcm_firmware.transport import Subscription

        with pytest.raises(TransportError, match="its own commands only"):
            await ep.subscribe(Subscription("t", None, Channel.CMD))
        await ep.close()
        with pytest.raises(ValueError, match="not carried"):
            CarriedTransport(links.carrier, 42)
        await links.close()

    run_virtual(main)
