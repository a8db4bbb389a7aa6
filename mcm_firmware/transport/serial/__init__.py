"""Serial links: MCTP over DSP0253 framing on a serial port, paced to its baud rate.

pyserial is imported in :mod:`.port` and nowhere else. One :class:`SerialLink` (:mod:`.link`) is
one open port; endpoints (:class:`SerialTransport`, :mod:`.endpoint`: one per node, or one host)
attach to it, each with its own MCTP endpoint id (EID): several nodes can share one link, told
apart by EID; :mod:`.nodes` plans the links of a fleet's nodes.

Port URLs: a device path (``/dev/ttyUSB0``), ``pty`` (a new pseudo-terminal; its path is
:attr:`SerialLink.path`), ``loop://``, ``socket://HOST:PORT``, ``rfc2217://HOST:PORT``. Options
go in the query: ``?baud=921600`` (the line rate the link is paced to; ``0``, the default for
``pty``, ``loop://`` and ``socket://``, means unpaced), ``&mtu=64`` (message bytes per MCTP
packet, 1..251).

What MQTT gives and a serial line does not is done here, at the link level (no firmware logic):

* retained frames: a node endpoint keeps the last retained frame per channel and sends it again
  when a host attaches (HELLO); the host endpoint keeps what it heard for late subscribers;
* Last Will: a node endpoint sends its will (WILL) on connect and KEEPALIVE when it has sent
  nothing for ``keepalive`` seconds; the host endpoint publishes the will of a node it has not
  heard from for 3 × keepalive, and forgets it on BYE (a clean close);
* priorities: frames of the ``tlm`` channel are bulk. When the line is busy only the newest
  telemetry frame of each node waits (older ones are dropped and counted as decimated); every
  other frame (commands, responses, events, state) waits its turn and is never dropped.
"""

from __future__ import annotations

from .endpoint import DEFAULT_KEEPALIVE, FIRST_NODE_EID, HOST_EID, SerialTransport
from .link import LinkStats, SerialLink
from .nodes import NodeLink, SerialNodeLinks, plan_node_links
from .port import LinePort, PortSpec, open_port, parse_port_url

__all__ = [
    "DEFAULT_KEEPALIVE",
    "FIRST_NODE_EID",
    "HOST_EID",
    "LinePort",
    "LinkStats",
    "NodeLink",
    "PortSpec",
    "SerialLink",
    "SerialNodeLinks",
    "SerialTransport",
    "open_port",
    "parse_port_url",
    "plan_node_links",
]
