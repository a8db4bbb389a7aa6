"""An MQTT broker embedded in the process (amqtt), so that a fresh install runs with nothing else.

It carries tens of nodes comfortably (~2-5k msgs/s here); for larger fleets point ``--broker`` at
Eclipse Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from .base import TransportError

STOP_GRACE_S = 0.5
STOP_TIMEOUT_S = 2.0


class PortInUse(TransportError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is already in use")
        self.host = host
        self.port = port


def _quiet() -> None:
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


class EmbeddedBroker:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        _quiet()
        if not port_free(self.host, self.port):
            raise PortInUse(self.host, self.port)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except BrokerError as e:
            cause = e.__cause__
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise PortInUse(self.host, self.port) from None
            raise TransportError(f"embedded broker failed to start: {e}") from None
        self._broker = broker

    async def stop(self, *, grace: float = STOP_GRACE_S, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop after ``grace`` seconds in which what the nodes said last (their DEATH frames)
        reaches the subscribers still connected; amqtt's shutdown waits for its clients' sessions,
        which a connected monitor keeps open, so it gets ``timeout`` seconds and is then left to
        the loop's cancellation."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await asyncio.sleep(grace)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(broker.shutdown(), timeout)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
