"""Transports, chosen by URL scheme and imported only when used.

``mqtt://HOST[:PORT]`` (aiomqtt) and ``loopback://NAME`` (in-process) are built in. Other packages
add schemes through the entry-point group ``mcm_emu.transports``; an entry point names a callable
``factory(url: str) -> Callable[[str], Transport]`` (the inner callable takes a client id).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from .base import (
    Address,
    Channel,
    Delivery,
    Subscription,
    Transport,
    TransportError,
    Will,
)

TransportFactory = Callable[[str], Transport]
"""Makes a fresh, unconnected transport for one client id."""

ENTRY_POINT_GROUP = "mcm_emu.transports"


def _mqtt(url: str) -> TransportFactory:
    mod = importlib.import_module(".mqtt", __name__)
    host, port = mod.parse_broker_url(url)
    return lambda client_id: mod.MqttTransport(host=host, port=port, client_id=client_id)


def _loopback(url: str) -> TransportFactory:
    mod = importlib.import_module(".loopback", __name__)
    name = urlsplit(url).netloc or "default"
    bus = mod.LoopbackBus.named(name)
    return lambda client_id: mod.LoopbackTransport(bus, client_id=client_id)


def _serial(url: str) -> TransportFactory:
    """``serial://PORT``: a host endpoint on its own link to PORT (``serial:///dev/ttyUSB0``,
    ``serial://socket://HOST:PORT``, ...)."""
    mod = importlib.import_module(".serial", __name__)
    port = url[len("serial://"):]
    mod.parse_port_url(port)
    return lambda client_id: mod.SerialTransport.host(port)


BACKENDS: dict[str, Callable[[str], TransportFactory]] = {
    "mqtt": _mqtt,
    "tcp": _mqtt,
    "loopback": _loopback,
    "serial": _serial,
}


def transport_factory(url: str) -> TransportFactory:
    """The factory for a transport URL; ValueError names what is wrong with the URL."""
    scheme = urlsplit(url).scheme
    backend = BACKENDS.get(scheme)
    if backend is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == scheme:
                backend = ep.load()
                break
    if backend is None:
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"transport URL {url!r}: unknown scheme {scheme!r} (known: {known})")
    return backend(url)


def check_fleet_name(fleet: str) -> str:
    """Fleet names become one MQTT topic level: no '/', '+', '#', not empty."""
    if not fleet or any(ch in fleet for ch in "/+#\0") or len(fleet) > 64:
        raise ValueError(f"fleet name {fleet!r} must be 1-64 characters without '/', '+' or '#'")
    return fleet


__all__ = [
    "Address", "BACKENDS", "Channel", "Delivery", "Subscription", "Transport", "TransportError",
    "TransportFactory", "Will", "check_fleet_name", "transport_factory",
]
