"""A TLS client certificate per node: ``broker-config --tls-ca-cert/--tls-ca-key`` makes the fleet's
CA and a certificate for each node (its client id as common name) and the host user; Mosquitto
requires them, and on the node listener takes a certificate's name as the user name
(``use_identity_as_username``), so the ACL's per-node rules hold for whoever holds a node's key.
``run --cert 'DIR/{client_id}.crt' --key 'DIR/{client_id}.key'`` gives each connection its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from mcm_firmware.cli import certs
from mcm_firmware.protocol import Birth, decode
from mcm_firmware.transport import Address, Channel, Subscription, TransportError
from mcm_firmware.transport.mqtt import MqttTransport
from mcm_firmware.transport.security import (
    BrokerSecurity,
    check_client_certificates,
    node_password,
    read_secret,
    security_of,
    with_security,
)

from ..conftest import free_port, mosquitto_binary, run_cli, wait_port

NODE_CERT = "{client_id}"


class CertBroker:
    """A Mosquitto set up by broker-config with a fleet CA: 5 nodes (0..4) of fleet ``sec``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port, self.host_port = free_port(), free_port()
        (tmp / "host.pw").write_text("correct horse\n")
        self.ca = tmp / "ca.pem"
        r = run_cli(
            *("broker-config", "--fleet", "sec", "--nodes", "5", "--node-secret", str(tmp / "node.secret")),
            *("--host-password-file", str(tmp / "host.pw"), "--out", str(tmp / "broker")),
            *("--port", str(self.port), "--host-port", str(self.host_port)),
            *("--tls-ca-cert", str(self.ca), "--tls-ca-key", str(tmp / "ca.key")),
            *("--broker-user", "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name),
        )
        assert r.returncode == 0, r.stderr
        assert "new fleet CA" in r.stdout and (tmp / "ca.key").stat().st_mode & 0o077 == 0
        self.certs = tmp / "broker" / "certs"
        assert (self.certs / "mcm-sec-4.crt").exists() and (self.certs / "fleet-host.key").stat().st_mode & 0o077 == 0
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(tmp / "broker" / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        wait_port(self.host_port)

    def options(self, certs_dir: Path | None = None) -> tuple[str, ...]:
        d = certs_dir or self.certs
        return (
            *("--cafile", str(self.ca), "--cert", f"{d}/{NODE_CERT}.crt", "--key", f"{d}/{NODE_CERT}.key"),
            *("--username", "fleet-host", "--password-file", str(self.tmp / "host.pw")),
        )

    def client(self, cert: str, client_id: str, *, port: int | None = None, key: str | None = None) -> MqttTransport:
        return MqttTransport(
            port=port or self.port,
            client_id=client_id,
            security=BrokerSecurity(
                tls=True,
                cafile=str(self.ca),
                cert=str(self.certs / f"{cert}.crt"),
                key=str(self.certs / f"{key or cert}.key"),
                username="fleet-host",
                password_file=str(self.tmp / "host.pw"),
            ),
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def cert_broker(tmp_path):
    broker = CertBroker(tmp_path)
    yield broker
    broker.stop()


async def _drain(tr: MqttTransport, seconds: float) -> list[bytes]:
    got: list[bytes] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                got.append((await tr.receive()).payload)
    return got


async def test_each_node_presents_its_own_certificate_and_holds_only_its_topics(cert_broker, cli_process):
    b = cert_broker
    node_url = f"mqtts://127.0.0.1:{b.port}"
    host_url = f"mqtts://127.0.0.1:{b.host_port}"
    run = cli_process("run", "--broker", node_url, "--nodes", "5", "--fleet", "sec", *b.options())
    run.wait_line("up: 5 nodes", timeout=30)
    # node 3, on its own certificate, reads its commands and publishes its answers
    ok = await asyncio.to_thread(run_cli, "ctl", "--broker", host_url, "--fleet", "sec", *b.options(), "3", "ping")
    assert ok.returncode == 0 and "node 3" in ok.stdout, ok.stderr
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    # a client holding node 3's certificate is node 3 to the broker, whatever it calls itself
    watcher = b.client("fleet-host", "mcm-test-watcher", port=b.host_port)
    impostor = b.client("mcm-sec-3", "anyone")
    await watcher.connect()
    await impostor.connect()
    try:
        await watcher.subscribe(Subscription("sec", None, Channel.TLM))
        for n in (3, 4):
            with contextlib.suppress(TransportError):  # a refused subscription may also fail
                await impostor.subscribe(Subscription("sec", n, Channel.CMD))
        await asyncio.sleep(0.3)
        await impostor.publish(Address("sec", 4, Channel.TLM), b"forged telemetry of 4", reliable=True)
        await impostor.publish(Address("sec", 3, Channel.TLM), b"telemetry of 3", reliable=True)
        await watcher.publish(Address("sec", 4, Channel.CMD), b"command for 4", reliable=True)
        await watcher.publish(Address("sec", 3, Channel.CMD), b"command for 3", reliable=True)
        seen, taken = await asyncio.gather(_drain(watcher, 1.5), _drain(impostor, 1.5))
        assert seen == [b"telemetry of 3"], seen  # node 4's telemetry not forged
        assert taken == [b"command for 3"], taken  # node 4's commands not read
    finally:
        await impostor.close()
        await watcher.close()


async def test_a_node_certificate_does_not_pass_the_host_listener(cert_broker, cli_process):
    """A node's certificate is of the fleet's CA, so it passes the host listener's handshake; the
    host listener's password file holds the host user only, so node 1's certificate with node 1's
    user and password is refused there under node 0's client id (which the host listener does not
    tie to a user), and node 0 stays connected: no new BIRTH, its bdseq unchanged."""
    b = cert_broker
    node_url, host_url = f"mqtts://127.0.0.1:{b.port}", f"mqtts://127.0.0.1:{b.host_port}"
    run = cli_process("run", "--broker", node_url, "--nodes", "2", "--fleet", "sec", *b.options())
    run.wait_line("up: 2 nodes", timeout=30)

    async def birth_of_node_0() -> Birth:
        reader = b.client("fleet-host", "mcm-test-reader", port=b.host_port)
        await reader.connect()
        try:
            await reader.subscribe(Subscription("sec", 0, Channel.STATE))
            d = await asyncio.wait_for(reader.receive(), 10)
        finally:
            await reader.close()
        msg = decode(d.payload)
        assert d.retained and isinstance(msg, Birth), msg
        return msg

    before = await birth_of_node_0()
    (b.tmp / "node1.pw").write_text(node_password(read_secret(str(b.tmp / "node.secret")), "mcm-sec-1") + "\n")
    # node 1's certificate and key; with node 1's user and password as node 0, then without a user
    for client_id, user in (("mcm-sec-0", "mcm-sec-1"), ("mcm-sec-1", None)):
        sec = BrokerSecurity(
            tls=True,
            cafile=str(b.ca),
            cert=str(b.certs / "mcm-sec-1.crt"),
            key=str(b.certs / "mcm-sec-1.key"),
            username=user,
            password_file=str(b.tmp / "node1.pw") if user else None,
        )
        tr = MqttTransport(port=b.host_port, client_id=client_id, security=sec)
        try:
            with pytest.raises(TransportError, match=r"[Nn]ot authori"):
                await tr.connect()
        finally:
            await tr.close()
    ok = await asyncio.to_thread(run_cli, "ctl", "--broker", host_url, "--fleet", "sec", *b.options(), "0", "ping")
    assert ok.returncode == 0 and "node 0" in ok.stdout, ok.stderr
    # answered on node 0's first connection: one knocked off would have connected again and, before
    # it answered anything, published a new BIRTH (bdseq 2) in place of this one
    after = await birth_of_node_0()
    assert after == before and after.bdseq == 1, (before, after)
    run.signal(signal.SIGTERM)
    assert run.wait() == 0


async def test_a_node_without_a_valid_certificate_is_refused_with_its_name(cert_broker, tmp_path):
    b = cert_broker
    node_url = f"mqtts://127.0.0.1:{b.port}"
    # node 5 has none: the run refuses to start, naming it
    r = await asyncio.to_thread(
        run_cli, "run", "--broker", node_url, "--nodes", "6", "--fleet", "sec", "--duration", "1", *b.options()
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().endswith(f"client certificate of mcm-sec-5: {b.certs}/mcm-sec-5.crt: no such file")
    # node 2's key is node 1's
    mixed = tmp_path / "mixed"
    shutil.copytree(b.certs, mixed)
    shutil.copy(mixed / "mcm-sec-1.key", mixed / "mcm-sec-2.key")
    r = await asyncio.to_thread(
        run_cli, "run", "--broker", node_url, "--nodes", "5", "--fleet", "sec", "--duration", "1", *b.options(mixed)
    )
    assert r.returncode == 2 and "of mcm-sec-2" in r.stderr and "the key is not the certificate's" in r.stderr
    # {client_id} in the certificate needs a host user for the run's own checks
    r = await asyncio.to_thread(run_cli, "run", "--broker", node_url, "--nodes", "1", *b.options()[:6])
    assert r.returncode == 2 and "needs --username" in r.stderr, r.stderr
    # a certificate named mcm-sec-3 from another CA, and none at all: the broker refuses the handshake
    other = certs.load_or_create_ca(tmp_path / "other.pem", tmp_path / "other.key", "someone else")
    certs.issue(other, "mcm-sec-3", b.certs / "forged.crt", b.certs / "forged.key")
    for cert, why in (("forged", "unknown ca"), (None, "certificate required")):
        tr = (
            b.client(cert, "mcm-sec-3")
            if cert
            else MqttTransport(port=b.port, client_id="mcm-sec-3", security=BrokerSecurity(tls=True, cafile=str(b.ca)))
        )
        tr.connect_timeout = 1.0  # the alert comes at once; aiomqtt reports it when its wait ends
        # In TLS 1.3 the client's handshake ends before the broker checks its certificate, and the
        # client sends its CONNECT at once: when that CONNECT reaches the broker before it closes,
        # the close is a reset that can overtake the alert, and the client sees the link cut short
        with pytest.raises(TransportError, match=f"{why}|EOF occurred in violation of protocol"):
            await tr.connect()
        await tr.close()


def test_client_certificate_parameters(tmp_path):
    url = with_security("mqtts://h:1", cert="c/{client_id}.crt", key="c/{client_id}.key", username="fleet-host")
    sec = security_of(url)
    assert sec.per_client
    assert sec.for_client("mcm-f-3").cert == "c/mcm-f-3.crt"  # a node
    assert sec.for_client("mcm-f-link-0-9-tlm").key == "c/mcm-f-link-0-9-tlm.key"  # a carrier's connection
    assert sec.for_client("mcm-ctl-ab12").cert == "c/fleet-host.crt"  # a host tool: its user's
    assert BrokerSecurity(tls=True, cert="one.crt", key="one.key").for_client("mcm-f-3").cert == "one.crt"
    for bad, says in (
        (with_security("mqtts://h:1", cert="{node}.crt", key="{node}.key"), "the only placeholder is {client_id}"),
        (with_security("mqtts://h:1", cert="{client_id}.crt", key="k.key"), "both name {client_id}, or neither"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            security_of(bad)
    with pytest.raises(ValueError, match="no client id was given"):
        sec.ssl_context()
    ca = certs.load_or_create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", "test CA")
    certs.issue(ca, "mcm-f-0", tmp_path / "mcm-f-0.crt", tmp_path / "mcm-f-0.key")
    (tmp_path / "mcm-f-1.crt").write_text("not a certificate\n")
    (tmp_path / "mcm-f-1.key").write_text("nor a key\n")
    url = with_security("mqtts://h:1", cert=f"{tmp_path}/{NODE_CERT}.crt", key=f"{tmp_path}/{NODE_CERT}.key")
    check_client_certificates(url, ["mcm-f-0"])
    with pytest.raises(ValueError, match=r"of mcm-f-1 .*not a PEM certificate and its private key"):
        check_client_certificates(url, ["mcm-f-0", "mcm-f-1"])
    assert security_of(url).ssl_context("mcm-f-0") is not None
    check_client_certificates("mqtt://h:1", ["mcm-f-9"])  # nothing to check without TLS


def test_broker_config_refuses_a_ca_it_cannot_use(tmp_path):
    (tmp_path / "pw").write_text("pw\n")
    base = ("broker-config", "--nodes", "1", "--node-secret", str(tmp_path / "s"), "--host-password-file")
    base = (*base, str(tmp_path / "pw"), "--out", str(tmp_path / "out"))
    ca = certs.load_or_create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", "test CA")
    assert ca.created and not certs.load_or_create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", "x").created
    certs.issue(ca, "x", tmp_path / "x.crt", tmp_path / "x.key")
    for extra, says in (
        (("--tls-ca-cert", str(tmp_path / "ca.pem")), "--tls-ca-cert and --tls-ca-key go together"),
        (("--tls-ca-cert", str(tmp_path / "ca.pem"), "--tls-ca-key", str(tmp_path / "nokey")), "nokey does not"),
        (("--tls-ca-cert", str(tmp_path / "ca.pem"), "--tls-ca-key", str(tmp_path / "x.key")), "is not the key of"),
        (("--tls-ca-cert", str(tmp_path / "pw"), "--tls-ca-key", str(tmp_path / "ca.key")), "not a PEM certificate"),
        (("--tls-ca-cert", str(tmp_path / "ca.pem"), "--tls-ca-key", str(tmp_path / "pw")), "not an unencrypted"),
        (
            ("--tls-ca-cert", str(tmp_path / "ca.pem"), "--tls-ca-key", str(tmp_path / "ca.key"), "--tls-cafile", "c"),
            "does not go with --tls-cafile",
        ),
    ):
        r = run_cli(*base, *extra)
        assert r.returncode == 2 and says in r.stderr, (extra, r.stderr)


def test_the_redfish_service_serves_a_fleet_on_a_secured_broker_over_https_with_the_fleet_ca(cert_broker, cli_process):
    """``mcm-emu redfish`` on the host listener of the broker broker-config secured (TLS, the host
    user's certificate and password) serves the fleet's modules over HTTPS with the certificate the
    fleet's CA issued it (``certs/redfish.crt``), and its power-limit PATCH reaches the node; without
    the host's password the broker refuses it."""
    import requests

    b = cert_broker
    node_url, host_url = f"mqtts://127.0.0.1:{b.port}", f"mqtts://127.0.0.1:{b.host_port}"
    run = cli_process("run", "--broker", node_url, "--nodes", "2", "--fleet", "sec", *b.options())
    run.wait_line("up: 2 nodes", timeout=30)
    host_tls = (
        "--cafile",
        str(b.ca),
        "--cert",
        str(b.certs / "fleet-host.crt"),
        "--key",
        str(b.certs / "fleet-host.key"),
    )
    refused = run_cli("redfish", "--broker", host_url, "--fleet", "sec", *host_tls, "--username", "fleet-host",
                      "--port", "0", "--duration", "1")  # fmt: skip
    assert refused.returncode != 0 and "cannot reach the broker" in refused.stderr, (refused.stdout, refused.stderr)
    gw = cli_process(
        "redfish", "--broker", host_url, "--fleet", "sec", *host_tls,
        "--username", "fleet-host", "--password-file", str(b.tmp / "host.pw"), "--port", "0",
        "--https-cert", str(b.certs / "redfish.crt"), "--https-key", str(b.certs / "redfish.key"),
    )  # fmt: skip
    password = gw.wait_line("account operator").rsplit(" ", 1)[1]
    line = gw.wait_line("redfish: https://")
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    auth, ca = ("operator", password), str(b.ca)
    url = f"https://localhost:{port}/redfish/v1/Chassis/1/Controls/PowerLimit"
    import time

    until = time.monotonic() + 20
    while "AllowableMax" not in (r := requests.get(url, auth=auth, verify=ca, timeout=10)).text:
        assert time.monotonic() < until, r.text
        time.sleep(0.2)
    r = requests.patch(url, json={"SetPoint": 760}, auth=auth, verify=ca, timeout=10)
    assert r.status_code == 200 and r.json()["SetPoint"] == 760.0, r.text
    status = run_cli("ctl", "--broker", host_url, "--fleet", "sec", *b.options(), "1", "status", "--json")
    assert status.returncode == 0 and '"power_cap_w": 760.0' in status.stdout, status.stderr
    gw.signal(signal.SIGTERM)
    assert gw.wait() == 0
    assert re.search(r"redfish: \d+ frames of 2 nodes taken in .* 0 rejected", "\n".join(gw.lines)), gw.lines[-3:]
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
