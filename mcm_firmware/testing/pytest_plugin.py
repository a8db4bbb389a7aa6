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

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ..target import EMULATED, Target, emulated_target, host_client, parse_target

async_fixture: Callable[..., Any]  # pytest-asyncio's decorator, else pytest's (their signatures differ)
try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pytest-asyncio absent: the options and marker still work
    async_fixture = pytest.fixture

__all__ = ["EMULATED", "Target", "emulated_target", "host_client", "parse_target"]  # re-exported


# --- pytest hooks and fixtures ------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mcm-emu")
    group.addoption(
        "--mcm-target",
        default=EMULATED,
        metavar="URL",
        help="node under test: emulated (default), mqtt://HOST:PORT/NODE, serial://PORT?node=N",
    )


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
