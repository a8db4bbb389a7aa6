"""A host's request is bounded by its timeout as a whole, publish and answer: on a link that stops
forwarding once the command is sent (half-open: nothing closes), ``ctl --timeout 2`` gives up
within about its timeout, not after the keep-alive watchdog's 15 s, and says that the broker
acknowledged nothing, which is told apart from a node that did not answer; both are counted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time

from mcm_firmware.host.client import BrokerTimeout, HostClient, RequestTimeout
from mcm_firmware.protocol import Op, encode
from mcm_firmware.testing.golden import GOLDEN
from mcm_firmware.transport import Address, Channel
from mcm_firmware.transport.mqtt import MqttTransport

from ..conftest import ROOT, cli_env

PUBLISH = 0x30


class StallOnPublishProxy:
    """A TCP proxy in front of the broker that forwards a client's CONNECT and SUBSCRIBE, and stops
    forwarding either way, without closing anything, from the client's first PUBLISH on: the link
    goes half-open just as a command is sent."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.stalled_at: float | None = None
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    async def _upstream(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = bytearray()
        try:
            while data := await r.read(65536):
                if self.stalled_at is not None:
                    continue
                buf += data
                forward = bytearray()
                while len(buf) >= 2:  # whole packets: fixed header, remaining length, body
                    length, shift, j = 0, 0, 1
                    while j < len(buf):
                        length |= (buf[j] & 0x7F) << shift
                        j += 1
                        if buf[j - 1] < 0x80:
                            break
                        shift += 7
                    else:
                        break
                    if len(buf) < j + length:
                        break
                    if buf[0] & 0xF0 == PUBLISH:
                        self.stalled_at = time.monotonic()
                        buf.clear()
                        break
                    forward += buf[: j + length]
                    del buf[: j + length]
                if forward:
                    w.write(bytes(forward))
                    await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _downstream(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                if self.stalled_at is None:
                    w.write(data)
                    await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        br, bw = await asyncio.open_connection("127.0.0.1", self.broker_port)
        try:
            await asyncio.gather(self._upstream(r, bw), self._downstream(br, w))
        finally:
            w.close()
            bw.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def ctl(*argv: str) -> tuple[int, str, str, float]:
    """``mcm-emu ctl ARGV`` as a real subprocess: exit code, stdout, stderr, when it exited."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcm_firmware",
        "ctl",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic()


async def born(port: int, fleet: str, nodes: list[int]) -> None:
    """Retained BIRTHs of ``nodes`` on the broker (straight to it, not through a proxy): a fleet
    whose nodes are online by its retained state, so that ctl sends (it refuses a node not in the
    fleet before sending)."""
    tr = MqttTransport(port=port, client_id="dl-births")
    await tr.connect()
    try:
        for n in nodes:
            birth = dataclasses.replace(GOLDEN["birth"], node_id=n, timestamp_ns=time.time_ns())
            await tr.publish(Address(fleet, n, Channel.STATE), encode(birth), reliable=True, retain=True)
    finally:
        await tr.close()


async def test_ctl_on_a_link_that_stalls_at_the_command_gives_up_within_its_timeout(mosquitto):
    await born(mosquitto.port, "dl", [3, 4])
    proxy = StallOnPublishProxy(mosquitto.port)
    port = await proxy.start()
    try:
        url = f"mqtt://127.0.0.1:{port}"
        code, out, err, ended = await ctl("--broker", url, "--fleet", "dl", "--timeout", "2", "--json", "3", "ping")
        assert proxy.stalled_at is not None, err  # the command was sent into the stalled link
        took = ended - proxy.stalled_at
        assert code == 1, (code, out, err)
        answer = json.loads(out)
        assert answer["ok"] is False
        assert "no acknowledgement from the broker within 2 s" in answer["error"], answer
        print(f"ctl --timeout 2: gave up {took:.2f} s after its command went into the stalled link")
        assert took <= 2 + 1.0, took  # its own timeout, not the watchdog's 1.5 keep-alives (15 s)
        assert "Traceback" not in err

        # a selection: each node's result says the broker acknowledged nothing, and is counted
        proxy.stalled_at = None
        code, out, err, ended = await ctl("--broker", url, "--fleet", "dl", "--timeout", "2", "--json", "3,4", "ping")
        assert proxy.stalled_at is not None
        assert code == 1 and ended - proxy.stalled_at <= 2 + 1.0, (code, ended - proxy.stalled_at, err)
        result = json.loads(out)
        assert result["failed"] == 2 and {r["status"] for r in result["results"]} == {"NO_ACK"}, result
    finally:
        await proxy.stop()


async def test_no_acknowledgement_and_no_reply_are_told_apart_and_counted(mosquitto):
    # a healthy link and no node 7: the broker acknowledges, nobody answers
    async with HostClient(MqttTransport(port=mosquitto.port), fleet="dl", timeout=1.0, retries=2) as host:
        t0 = time.monotonic()
        try:
            await host.request(7, Op.PING)
            raise AssertionError("a request to nobody was answered")
        except RequestTimeout as e:
            assert str(e) == "no reply from node 7 to ping within 1 s"
        assert time.monotonic() - t0 <= 1.0 + 0.5
        assert (host.unanswered, host.unacknowledged) == (1, 0)

    proxy = StallOnPublishProxy(mosquitto.port)
    port = await proxy.start()
    try:
        async with HostClient(MqttTransport(port=port), fleet="dl", timeout=1.0, retries=2) as host:
            t0 = time.monotonic()
            try:
                await host.request(7, Op.PING)
                raise AssertionError("a request on a stalled link was answered")
            except BrokerTimeout as e:
                assert str(e).startswith("no acknowledgement from the broker within 1 s (sending ping to node 7)")
            assert time.monotonic() - t0 <= 1.0 + 0.5
            assert (host.unanswered, host.unacknowledged) == (0, 1)
            closing = time.monotonic()
        assert time.monotonic() - closing <= 1.0  # closing does not wait on the stalled link either
    finally:
        await proxy.stop()
