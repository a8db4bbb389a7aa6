"""No command the broker acknowledged is lost across a broker that was killed, none runs twice:
the host waits for a node that is reconnecting to be born again and sends then (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mcm_firmware.backoff import Backoff
from mcm_firmware.host.client import HostClient
from mcm_firmware.host.commands import COMMANDS
from mcm_firmware.protocol import Event, EventCode, Op, Status, decode
from mcm_firmware.transport import Channel, Subscription
from mcm_firmware.transport.mqtt import MqttTransport


@pytest.mark.slow
def test_commands_sent_right_after_a_killed_broker_returns_each_run_once(mosquitto, cli_process):
    """12 nodes on connections of their own; Mosquitto SIGKILLed (no will published, nothing kept:
    no persistence), down 3 s, started again on the same port. Right after its return a
    ``HostClient`` (deadline: the backoff cap + 4 s, one retry) sends every node a power cap of
    its own while the nodes still wait out their backoff: every command is answered OK, and each
    node reports running it exactly once (one POWER_CAP_SET event with that value)."""
    n, fleet = 12, "bk"
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", str(n), "--fleet", fleet, "--connection", "node")
    run.wait_line(f"up: {n} nodes")
    assert mosquitto.proc is not None
    mosquitto.proc.kill()
    mosquitto.proc.wait(5)
    time.sleep(3.0)
    mosquitto.start()
    spec = COMMANDS["set-power-cap"]
    watts = {node: 800.0 + node for node in range(n)}
    deadline = Backoff().maximum + 4.0

    async def main() -> tuple[dict[int, Status], dict[int, list[float]], HostClient, float]:
        t_back = time.monotonic()
        events: dict[int, list[float]] = {node: [] for node in range(n)}
        watcher = MqttTransport(port=mosquitto.port, client_id="bk-events")
        await watcher.connect()
        await watcher.subscribe(Subscription(fleet, None, Channel.EVT))

        async def collect() -> None:
            while True:
                d = await watcher.receive()
                msg = decode(d.payload)
                if isinstance(msg, Event) and msg.code == EventCode.POWER_CAP_SET:
                    events[msg.node_id].append(msg.value)

        collector = asyncio.create_task(collect())
        host = HostClient(
            MqttTransport(port=mosquitto.port, client_id="bk-host"), fleet=fleet, timeout=deadline, retries=1
        )
        try:
            async with host:
                answers = await asyncio.gather(
                    *(host.request(node, spec.op, spec.parse([f"{watts[node]:g}"])) for node in range(n))
                )
            took = time.monotonic() - t_back
            # the events of the caps, and any second one
            await asyncio.sleep(2.0)
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            await watcher.close()
        return {a.node_id: a.status for a in answers}, events, host, took

    statuses, events, host, took = asyncio.run(main())
    print(
        f"{n} commands sent right after the broker's return: {sum(s == Status.OK for s in statuses.values())} "
        f"answered OK, the last {took:.1f} s after it; sent again on a node's BIRTH {host.resent_on_birth}, "
        f"unanswered {host.unanswered}, node away {host.away}; events {sum(len(v) for v in events.values())}"
    )
    assert statuses == dict.fromkeys(range(n), Status.OK), statuses
    assert {node: [w for w in got if w == watts[node]] for node, got in events.items()} == {
        node: [watts[node]] for node in range(n)
    }, events
    assert host.unanswered == 0 and host.away == 0


def test_a_request_to_a_node_that_is_away_says_so_within_its_deadline(mosquitto):
    """A node whose retained state is its Last Will (DEATH CONNECTION_LOST) and that does not come
    back: the request is sent once, not retried blindly, and fails at its deadline naming the
    node's state (``NodeAway``), counted ``away``."""
    from mcm_firmware.host.client import NodeAway
    from mcm_firmware.protocol import Death, DeathReason, encode
    from mcm_firmware.transport import Address

    async def main() -> tuple[NodeAway | None, HostClient, int, float]:
        pub = MqttTransport(port=mosquitto.port, client_id="aw-node")
        await pub.connect()
        death = Death(
            node_id=5, seq=0, timestamp_ns=time.time_ns(), boot_count=1, bdseq=1, reason=DeathReason.CONNECTION_LOST
        )
        await pub.publish(Address("aw", 5, Channel.STATE), encode(death), retain=True, reliable=True)
        await pub.subscribe(Subscription("aw", 5, Channel.CMD))
        host = HostClient(MqttTransport(port=mosquitto.port, client_id="aw-host"), fleet="aw", timeout=3.0, retries=5)
        err: NodeAway | None = None
        t0 = time.monotonic()
        async with host:
            try:
                await host.request(5, Op.PING)
            except NodeAway as e:
                err = e
        took = time.monotonic() - t0
        sent = 0
        while True:
            try:
                await asyncio.wait_for(pub.receive(), 0.3)
                sent += 1
            except TimeoutError:
                break
        await pub.close()
        return err, host, sent, took

    err, host, sent, took = asyncio.run(main())
    print(f"away: {err} ({sent} sends, {took:.2f} s)")
    assert err is not None and "DEATH CONNECTION_LOST" in str(err), err
    # sends within the first second only (0, 0.5 and 1 s), before the node's state is read; 6 blind
    assert 1 <= sent <= 3 and host.away == 1 and host.unanswered == 0, (sent, host.away)
    assert took >= 3.0
