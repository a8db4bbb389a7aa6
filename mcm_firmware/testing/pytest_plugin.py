"""pytest plugin: one test suite against an emulated node, a node over MQTT or serial, or a bench.

Installed with the package (entry point ``pytest11``: ``mcm_emu``). It adds:

``--mcm-target URL``
    ``emulated`` (the default): an emulated node started in the test process, on real time;
    ``mqtt://HOST[:PORT]/NODE[?fleet=F]``: a running node reached through a broker;
    ``serial://PORT[?node=N&fleet=F&baud=B&mtu=M]``: a node (or a rig-backed node, or real
    controller firmware) on a serial port: a device path, a pty path, ``socket://HOST:PORT`` ...
``mcm_target`` fixture
    the :class:`Target` (URL, node id, fleet; for ``emulated``, the running fleet);
``mcm_host`` fixture
    a connected :class:`~mcm_firmware.host.client.HostClient` for the target;
``hil`` marker
    tests that need a real target: skipped unless ``--mcm-target`` names one.

The same test file runs in CI against emulation and on a bench against hardware.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pytest-asyncio absent: the options and marker still work
    async_fixture = pytest.fixture

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
    if parts.scheme in ("mqtt", "tcp"):
        node_text = parts.path.strip("/")
        if not node_text.isdigit():
            raise ValueError(f"--mcm-target {url!r}: give the node id as the path, mqtt://HOST:PORT/NODE")
        query = dict(parse_qsl(parts.query))
        base = f"mqtt://{parts.netloc}"
        from ..transport.mqtt import parse_broker_url

        parse_broker_url(base)
        return Target(url, base, int(node_text), query.get("fleet", "default"))
    if parts.scheme == "serial":
        port = url[len("serial://"):]
        base, _, query = port.partition("?")
        keep, node, fleet = [], 0, "default"
        for key, value in parse_qsl(query):
            if key == "node":
                if not value.isdigit():
                    raise ValueError(f"--mcm-target {url!r}: node={value!r} is not a node id")
                node = int(value)
            elif key == "fleet":
                fleet = value
            else:
                keep.append((key, value))
        port = base + ("?" + urlencode(keep) if keep else "")
        from ..transport.serial import parse_port_url

        parse_port_url(port)
        return Target(url, f"serial://{port}", node, fleet)
    raise ValueError(f"--mcm-target {url!r}: expected emulated, mqtt://HOST:PORT/NODE or serial://PORT")


@contextlib.asynccontextmanager
async def emulated_target(link: Literal["loopback", "mqtt", "serial"] = "loopback", *,
                          broker: str | None = None, port: str = "pty", node: int = 0,
                          profile: str = "colossus-mcm", seed: int = 0,
                          fleet: str = "default") -> AsyncIterator[Target]:
    """One emulated node on real time, reachable over ``link``; stopped on exit. Over serial the
    node gets a new pty (``port``, e.g. ``pty?baud=921600``); the host end uses the same options."""
    from ..clock import RealClock
    from ..profile import load_profile
    from ..runtime.fleet import Fleet
    from ..transport import transport_factory

    serial_link = None
    node_transports = None
    if link == "loopback":
        url = f"loopback://mcm-target-{uuid.uuid4().hex[:8]}"
        factory = transport_factory(url)
    elif link == "mqtt":
        if broker is None:
            raise ValueError("an emulated target over MQTT needs a broker URL")
        url = broker
        factory = transport_factory(url)
    else:
        from ..transport.serial import SerialLink, plan_node_links

        plan = plan_node_links([port], [node])
        serial_link = plan[0].link
        await serial_link.open()
        options = port.partition("?")[2]
        url = f"serial://{serial_link.path}" + (f"?{options}" if options else "")
        factory = None
        node_transports = {node: plan[0].factory(fleet)}
    fl = Fleet.uniform(nodes=1, profile=load_profile(profile), first_id=node, fleet=fleet,
                       transport_factory=factory, clock=RealClock(), seed=seed,
                       node_transports=node_transports)
    await fl.start()
    try:
        await fl.wait_connected(10)
        yield Target(EMULATED if link == "loopback" else url, url, node, fleet, fl)
    finally:
        await fl.stop()
        if serial_link is not None:
            await serial_link.close()


@contextlib.asynccontextmanager
async def host_client(target: Target, *, timeout: float = 2.0) -> AsyncIterator[Any]:
    from ..host.client import HostClient
    from ..transport import transport_factory

    tr = transport_factory(target.transport_url)(f"mcm-pytest-{uuid.uuid4().hex[:8]}")
    async with HostClient(tr, fleet=target.fleet, timeout=timeout) as host:
        yield host


# --- pytest hooks and fixtures ------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mcm-emu")
    group.addoption("--mcm-target", default=EMULATED, metavar="URL",
                    help="node under test: emulated (default), mqtt://HOST:PORT/NODE, serial://PORT?node=N")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: needs a real target (--mcm-target); skipped on emulation")
    url = config.getoption("--mcm-target")
    if url != EMULATED:
        try:
            parse_target(url)
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--mcm-target") != EMULATED:
        return
    skip = pytest.mark.skip(reason="hil: needs --mcm-target (a node over MQTT or serial, or a rig)")
    for item in items:
        if "hil" in item.keywords:
            item.add_marker(skip)


@async_fixture
async def mcm_target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    url = request.config.getoption("--mcm-target")
    if url == EMULATED:
        async with emulated_target() as target:
            yield target
    else:
        yield parse_target(url)


@async_fixture
async def mcm_host(mcm_target: Target) -> AsyncIterator[Any]:
    async with host_client(mcm_target) as host:
        yield host
