"""Targets: a node under test, emulated in this process or reached over MQTT or serial.

``emulated`` starts one emulated node on real time (over the in-process bus, MQTT or a pty);
``mqtt://HOST[:PORT]/NODE[?fleet=F]`` (``mqtts://`` for TLS; the security parameters of a broker URL,
``username``, ``password_file``, ``cafile``, ``cert``, ``key``, may follow ``fleet``) and ``serial://PORT[?node=N&fleet=F&baud=B&mtu=M]`` name a
running node (an emulated one, a rig-backed one, or real controller firmware). Used by the pytest
plugin (``--mcm-target``) and by ``mcm-emu fuzz --target``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

EMULATED = "emulated"


@dataclass
class Target:
    url: str
    """What ``--mcm-target`` said."""
    transport_url: str
    """Where the host client connects: ``loopback://``, ``mqtt://``, ``serial://``."""
    node: int
    fleet: str = "default"
    fleet_obj: Any = None
    """The in-process fleet of an emulated target (None for a real one)."""

    @property
    def emulated(self) -> bool:
        return self.fleet_obj is not None


def parse_target(url: str) -> Target:
    """A non-emulated ``--mcm-target``; ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme in ("mqtt", "tcp", "mqtts"):
        node_text = parts.path.strip("/")
        if not node_text.isdigit():
            raise ValueError(f"--mcm-target {url!r}: give the node id as the path, mqtt://HOST:PORT/NODE")
        query = dict(parse_qsl(parts.query))
        fleet = query.pop("fleet", "default")
        # the rest secures the connection (username, password_file, cafile, cert, key), as on a broker URL
        base = f"{'mqtts' if parts.scheme == 'mqtts' else 'mqtt'}://{parts.netloc}" + (
            f"?{urlencode(query)}" if query else ""
        )
        from .transport.mqtt import parse_broker_url

        try:
            parse_broker_url(base)
        except ValueError as e:
            raise ValueError(f"--mcm-target {url!r}: {e}") from None
        return Target(url, base, int(node_text), fleet)
    if parts.scheme == "serial":
        port = url[len("serial://") :]
        base, _, options = port.partition("?")
        keep, node, fleet = [], 0, "default"
        for key, value in parse_qsl(options):
            if key == "node":
                if not value.isdigit():
                    raise ValueError(f"--mcm-target {url!r}: node={value!r} is not a node id")
                node = int(value)
            elif key == "fleet":
                fleet = value
            else:
                keep.append((key, value))
        port = base + ("?" + urlencode(keep) if keep else "")
        from .transport.serial import parse_port_url

        parse_port_url(port)
        return Target(url, f"serial://{port}", node, fleet)
    raise ValueError(f"--mcm-target {url!r}: expected emulated, mqtt://HOST:PORT/NODE or serial://PORT")


@contextlib.asynccontextmanager
async def emulated_target(
    link: Literal["loopback", "mqtt", "serial"] = "loopback",
    *,
    broker: str | None = None,
    port: str = "pty",
    node: int = 0,
    profile: str = "colossus-mcm",
    seed: int = 0,
    fleet: str = "default",
    frame_keys: Any = None,
) -> AsyncIterator[Target]:
    """One emulated node on real time, reachable over ``link``; stopped on exit. Over serial the
    node gets a new pty (``port``, e.g. ``pty?baud=921600``); the host end uses the same options.
    ``frame_keys``: a :class:`~mcm_firmware.keyring.KeyRing` the node seals its frames with."""
    from .clock import RealClock
    from .profile import load_profile
    from .runtime.fleet import Fleet
    from .transport import node_links

    if link == "mqtt" and broker is None:
        raise ValueError("an emulated target over MQTT needs a broker URL")
    url = {"loopback": f"loopback://mcm-target-{uuid.uuid4().hex[:8]}", "mqtt": broker, "serial": f"serial://{port}"}[
        link
    ]
    assert url is not None
    links = node_links([url], [node], fleet=fleet)
    fl = Fleet.uniform(
        nodes=1,
        profile=load_profile(profile),
        first_id=node,
        fleet=fleet,
        transport_factory=None,
        clock=RealClock(),
        seed=seed,
        links=links,
        frame_keys=frame_keys,
    )
    await links.open()
    try:
        await fl.start()
        try:
            await fl.wait_connected(10)
            host = links.host_url(node)
            yield Target(EMULATED if link == "loopback" else host, host, node, fleet, fl)
        finally:
            await fl.stop()
    finally:
        await links.close()


@contextlib.asynccontextmanager
async def host_client(target: Target, *, timeout: float = 2.0) -> AsyncIterator[Any]:
    from .host.client import HostClient
    from .transport import transport_factory

    tr = transport_factory(target.transport_url)(f"mcm-pytest-h{uuid.uuid4().hex[:8]}")
    async with HostClient(tr, fleet=target.fleet, timeout=timeout) as host:
        yield host
