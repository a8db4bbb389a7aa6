"""A host's timeout bounds its connect too: a broker that takes the TCP connection and never
answers CONNECT (a listening socket of the test's own) is given up on within the timeout by ``ctl``
(a real subprocess), with the error form the README promises (one error line, and the hint line
of a broker that cannot be reached: where ctl looked, what starts one), and by :class:`HostClient`."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from mcm_firmware.host.client import HostClient
from mcm_firmware.transport import TransportError
from mcm_firmware.transport.mqtt import MqttTransport

from ..conftest import ROOT, cli_env


class SilentBroker:
    """Accepts TCP connections, reads nothing, answers nothing; records when each was accepted."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-broker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.sock.accept()
                self.accepted.append(time.monotonic())
                self.conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in (*self.conns, self.sock):
            s.close()


@pytest.fixture
def silent() -> Iterator[SilentBroker]:
    b = SilentBroker()
    yield b
    b.close()


@pytest.mark.parametrize("node", ["1", "all"])
def test_ctl_timeout_bounds_the_connect_to_a_broker_that_never_answers(silent, node):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcm_firmware", "ctl", "--broker", f"mqtt://127.0.0.1:{silent.port}"]
        + ["--timeout", "1", node, "ping"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    ended = time.monotonic()
    assert silent.accepted, "ctl never connected"
    took = ended - silent.accepted[0]  # from the TCP connection taken: the process's start-up is not counted
    print(f"ctl --timeout 1 {node} ping: gave up {took:.2f} s after its connection was taken")
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("mcm-emu: error: cannot connect to broker "), err
    assert f"mqtt://127.0.0.1:{silent.port}" in lines[0] and "no answer within 1 s" in lines[0], err
    assert f"is a broker running at mqtt://127.0.0.1:{silent.port}?" in lines[1], err  # the hint
    assert took < 1.0 + 0.8, took  # the transport's own 5 s before


async def test_host_client_gives_up_its_connect_within_its_timeout(silent):
    tr = MqttTransport(port=silent.port, client_id="mcm-host-connect")
    t0 = time.monotonic()
    with pytest.raises(TransportError, match=r"no answer within 0.5 s"):
        async with HostClient(tr, timeout=0.5):
            pass
    assert time.monotonic() - t0 < 0.5 + 0.8
    assert tr.connect_timeout == 0.5  # the transport's own bound lowered to the host's
