"""A lost broker noticed within one keep-alive on an MQTT connection that sends nothing.

paho pings the broker a keep-alive period after the last packet it *sent*; a client that only
listens (``monitor``) therefore finds a half-open link (packets stop, nothing closes) only after
that ping has gone unanswered: within 1.5 keep-alives with :mod:`.mqtt`'s watchdog. A
:class:`BrokerProbe` pings as soon as nothing has come from the broker for half a keep-alive and
shuts the connection down when that ping is still unanswered half a keep-alive later, so the link
is known lost within one keep-alive of the last packet (plus the probe's period): the client sees
the connection lost (its receive raises :class:`.base.TransportError`) and may connect again.

On a live link the cost is one PINGREQ each half keep-alive of silence from the broker; a link
that brings frames needs none. paho has no public hook for this: the probe reads its keep-alive
state (``_ping_t``, ``_last_bytes_received``) and sends with ``_send_pingreq``, as of paho 2.x
(``tests/transport/test_mqtt_probe.py`` fails if they change).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .mqtt import MqttTransport

PERIOD_S = 0.25
"""How often the probe looks at the connection."""


class BrokerProbe:
    """Watches one connected :class:`MqttTransport` (run :meth:`run` as a task while it lives)."""

    def __init__(self, transport: MqttTransport, *, period: float = PERIOD_S) -> None:
        self.transport = transport
        self.period = period
        self.pings = 0  # PINGREQs sent by the probe
        self.lost = False  # the probe shut the connection down

    def _paho(self) -> Any:
        client: Any = self.transport._client
        return None if client is None else client._client

    def check(self, now: float) -> bool:
        """Ping or give up as the time since the broker's last packet says; False once the
        connection is gone (shut by the probe, or closed)."""
        paho = self._paho()
        if paho is None:
            return False
        half = self.transport.keepalive / 2
        pinged = paho._ping_t  # set by a PINGREQ (ours or paho's), 0 once answered
        if pinged and now - pinged >= half:
            self.lost = True
            self.transport._shut_socket()
            return False
        if not pinged and now - paho._last_bytes_received >= half:
            paho._send_pingreq()
            self.pings += 1
        return True

    def unanswered(self) -> bool:
        """The link was given up on (by the probe, or by :mod:`.mqtt`'s watchdog or paho, which
        may see the same unanswered ping first) with a ping unanswered."""
        paho = self._paho()
        return self.lost or (paho is not None and bool(paho._ping_t))

    async def run(self) -> None:
        """Until the connection is lost or closed."""
        while self.check(time.monotonic()):  # noqa: ASYNC110 - polls paho's clocks: no event to wait on
            await asyncio.sleep(self.period)


def probe_of(transport: object) -> BrokerProbe | None:
    """A probe for ``transport`` when it is a connected MQTT transport, else None (a serial line
    or an in-process bus has no broker to lose)."""
    if isinstance(transport, MqttTransport) and transport._client is not None:
        return BrokerProbe(transport)
    return None


__all__ = ["PERIOD_S", "BrokerProbe", "probe_of"]
