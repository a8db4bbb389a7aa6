"""Transports, chosen by URL scheme and imported only when used.

``mqtt://HOST[:PORT]`` (aiomqtt) and ``loopback://NAME`` (in-process) are built in. Other packages
add schemes through the entry-point group ``mcm_emu.transports``; an entry point names a callable
``factory(url: str) -> Callable[[str], Transport]`` (the inner callable takes a client id).
"""

from __future__ import annotations

import importlib
import ipaddress
import uuid
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from .base import (
    Address,
    BlockSink,
    Channel,
    Delivery,
    LinkFrameBuilder,
    LinkFrames,
    NodeLinks,
    Subscription,
    Transport,
    TransportError,
    TransportFactory,
    Will,
)

ENTRY_POINT_GROUP = "mcm_emu.transports"


def _mqtt(url: str) -> TransportFactory:
    mod = importlib.import_module(".mqtt", __name__)
    host, port = mod.parse_broker_url(url)
    security = importlib.import_module(".security", __name__).security_of(url)
    return lambda client_id: mod.MqttTransport(host=host, port=port, client_id=client_id, security=security)


def _loopback(url: str) -> TransportFactory:
    mod = importlib.import_module(".loopback", __name__)
    name = urlsplit(url).netloc or "default"
    bus = mod.LoopbackBus.named(name)
    return lambda client_id: mod.LoopbackTransport(bus, client_id=client_id)


def _serial(url: str) -> TransportFactory:
    """``serial://PORT``: a host endpoint on its own link to PORT (``serial:///dev/ttyUSB0``,
    ``serial://socket://HOST:PORT``, ...)."""
    mod = importlib.import_module(".serial", __name__)
    port = url[len("serial://") :]
    mod.parse_port_url(port)
    return lambda client_id: mod.SerialTransport.host(port)


class PerNodeLinks(NodeLinks):
    """Every node with a connection of its own to one transport URL (a broker, an in-process bus),
    as real modules have; opening checks that a client can connect (from every source address),
    so that an unreachable broker is one clear error before any node starts. Over MQTT the
    connections may come from several local ``sources`` (node ``i`` from ``sources[i % k]``): one
    source address reaches one broker port through at most its ephemeral port range."""

    def __init__(self, url: str, sources: list[str] | None = None) -> None:
        self.url = url
        self.sources = sources or []
        self._factory = transport_factory(url)
        if self.sources:
            mod = importlib.import_module(".mqtt", __name__)
            host, port = mod.parse_broker_url(url)
            security = importlib.import_module(".security", __name__).security_of(url)
            self._by_source = [
                (
                    lambda cid, src=src: mod.MqttTransport(
                        host=host, port=port, client_id=cid, bind_address=src, security=security
                    )
                )
                for src in self.sources
            ]

    async def open(self) -> None:
        for factory in self._by_source if self.sources else [self._factory]:
            probe = factory(f"mcm-probe-h{uuid.uuid4().hex[:8]}")
            await probe.connect()
            await probe.close()

    def factory(self, node: int) -> TransportFactory:
        return self._by_source[node % len(self._by_source)] if self.sources else self._factory

    def describe(self) -> list[str]:
        if not self.sources:
            return []
        return [f"connections from {len(self.sources)} source addresses ({self.sources[0]} .. {self.sources[-1]})"]

    def host_url(self, node: int) -> str:
        return self.url


def ephemeral_ports() -> int:
    """How many local ports one source address has for outgoing connections (Linux's
    ``ip_local_port_range``; 28,232 by default)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 28_232
    return high - low + 1


def source_addresses(spec: str, nodes: int, broker_host: str) -> list[str]:
    """Local addresses to spread per-node connections over: ``auto`` (none while one address has
    ports enough for ``nodes`` connections, else as many loopback addresses 127.0.0.2, 127.0.0.3
    ... as they need, for a loopback broker), a range ``A-B`` or a comma-separated list of IPv4
    addresses. ValueError names what is wrong."""
    if spec == "auto":
        per_source = int(ephemeral_ports() * 0.9)  # leave the rest to everything else on the box
        if nodes <= per_source:
            return []
        loopback = broker_host == "localhost" or (_is_ip(broker_host) and ipaddress.ip_address(broker_host).is_loopback)
        if not loopback:  # other addresses of this machine are for the operator to name
            raise ValueError(
                f"{nodes} connections from one address exceed its {ephemeral_ports():,} ephemeral ports; give "
                "--source-addresses (addresses of this machine) or use --connection carrier"
            )
        need = -(-nodes // per_source)
        return [f"127.0.0.{2 + i}" for i in range(need)]
    try:
        if "-" in spec:
            first_text, last_text = spec.split("-", 1)
            first, last = ipaddress.IPv4Address(first_text.strip()), ipaddress.IPv4Address(last_text.strip())
            if last < first or int(last) - int(first) >= 1024:
                raise ValueError(f"range {spec!r} must run upwards over at most 1024 addresses")
            return [str(ipaddress.IPv4Address(a)) for a in range(int(first), int(last) + 1)]
        return [str(ipaddress.IPv4Address(a.strip())) for a in spec.split(",") if a.strip()] or _no_sources(spec)
    except ipaddress.AddressValueError as e:
        raise ValueError(f"source addresses {spec!r}: {e}") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _no_sources(spec: str) -> list[str]:
    raise ValueError(f"source addresses {spec!r}: no address given")


PER_NODE_LIMIT = 100
"""With ``connection="auto"``, up to this many nodes get a connection each; more share a carrier."""
CONNECTIONS = ("auto", "node", "carrier")


def node_links(
    urls: list[str],
    nodes: list[int],
    *,
    fleet: str,
    mux: bool = False,
    connection: str = "auto",
    sources: str = "auto",
) -> NodeLinks:
    """The links of ``nodes``: one broker or bus URL for all, or ``serial://PORT`` URLs (once for
    all nodes, or once per node; ``serial://pty``: a new pseudo-terminal per node, or with ``mux``
    one shared by all). On a broker, ``connection`` is ``node`` (a connection per node, as real
    modules have), ``carrier`` (one connection carrying them all, and over MQTT a second one for
    telemetry: :mod:`.carrier`) or ``auto`` (per node up to :data:`PER_NODE_LIMIT` nodes); per-node
    connections come from the ``sources`` addresses (:func:`source_addresses`). ValueError names
    what is wrong."""
    if not urls:
        raise ValueError("no link given")
    if connection not in CONNECTIONS:
        raise ValueError(f"connection {connection!r} is not one of {', '.join(CONNECTIONS)}")
    if all(urlsplit(u).scheme == "serial" for u in urls):
        if connection == "carrier":
            raise ValueError("serial nodes share a link by EID (--serial-mux), not through a carrier")
        mod = importlib.import_module(".serial", __name__)
        return mod.SerialNodeLinks.plan([u[len("serial://") :] for u in urls], nodes, fleet=fleet, mux=mux)
    if len(urls) > 1 or mux:
        raise ValueError("one link per node and shared links are for serial ports only")
    url = urls[0]
    if connection == "node" or (connection == "auto" and len(nodes) <= PER_NODE_LIMIT):
        if urlsplit(url).scheme in ("mqtt", "tcp", "mqtts"):
            host, _ = importlib.import_module(".mqtt", __name__).parse_broker_url(url)
            return PerNodeLinks(url, source_addresses(sources, len(nodes), host))
        if sources != "auto":
            raise ValueError("source addresses are for connections to an MQTT broker")
        return PerNodeLinks(url)
    from .carrier import Carrier, CarrierLinks

    client_id = f"mcm-{fleet}-link-{min(nodes)}-{max(nodes)}"
    if urlsplit(url).scheme in ("mqtt", "tcp", "mqtts"):
        # over MQTT a carrier talks on the packets of mqtt_wire (commands in, answers out: no client
        # library's cost per message), and telemetry leaves on a second, publish-only connection
        mqtt = importlib.import_module(".mqtt", __name__)
        fast = importlib.import_module(".mqtt_fast", __name__)
        raw = importlib.import_module(".mqtt_raw", __name__)
        host, port = mqtt.parse_broker_url(url)
        security = importlib.import_module(".security", __name__).security_of(url)

        def control(cid: str) -> Transport:
            return cast(Transport, raw.RawMqttTransport(host=host, port=port, client_id=cid, security=security))

        carrier = Carrier(control, client_id=client_id, fleet=fleet, nodes=nodes)
        sink = fast.FastPublisher(
            host=host,
            port=port,
            client_id=f"{client_id}-tlm",
            security=security,
            yield_to=lambda: carrier.backed_up,  # telemetry is shed before answers and events
        )
        return CarrierLinks(url, carrier, sink)
    return CarrierLinks(url, Carrier(transport_factory(url), client_id=client_id, fleet=fleet, nodes=nodes))


BACKENDS: dict[str, Callable[[str], TransportFactory]] = {
    "mqtt": _mqtt,
    "mqtts": _mqtt,
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
    "BACKENDS",
    "Address",
    "BlockSink",
    "Channel",
    "Delivery",
    "LinkFrameBuilder",
    "LinkFrames",
    "NodeLinks",
    "PerNodeLinks",
    "Subscription",
    "Transport",
    "TransportError",
    "TransportFactory",
    "Will",
    "check_fleet_name",
    "node_links",
    "transport_factory",
]
