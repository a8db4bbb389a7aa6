"""Who may connect and what they may do: per-node credentials derived from a fleet secret, a host
role, Mosquitto's password file and ACL written by ``mcm-emu broker-config``, TLS with a CA made by
the test. A real Mosquitto in every case."""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from mcm_firmware.protocol import Birth, Command, FrameFlags, Op, decode, encode
from mcm_firmware.transport import Address, Channel, Subscription, TransportError
from mcm_firmware.transport.mqtt import MqttTransport, parse_broker_url
from mcm_firmware.transport.security import (
    BrokerSecurity,
    is_node_client_id,
    mosquitto_hash,
    node_password,
    read_secret,
    security_of,
    with_security,
)

from ..conftest import free_port, mosquitto_binary, run_cli, wait_port

# --- the pieces ------------------------------------------------------------------------------------


def test_a_password_is_hashed_as_mosquitto_passwd_does():
    # written by `mosquitto_passwd -b pw alice s3cret` (Mosquitto 2.0.11)
    known = "$7$101$ctjytcjEKWfc6GZ2$9tAv/9zRvUO5nNXfG0bObDlkMKz7inAa9m1AU62gvCllBlKbSmOonTRAqH6x/wEO2LbGHzeOX1MBuCH26CjD9g=="
    assert mosquitto_hash("s3cret", salt=base64.b64decode("ctjytcjEKWfc6GZ2")) == known


def test_node_passwords_are_derived_per_client_id():
    a, b = node_password(b"k", "mcm-f-1"), node_password(b"k", "mcm-f-2")
    assert a != b and len(a) == 43 and a == node_password(b"k", "mcm-f-1") and a != node_password(b"j", "mcm-f-1")
    assert is_node_client_id("mcm-f-1") and is_node_client_id("mcm-my-fleet-20")
    assert not is_node_client_id("mcm-f-link-0-99") and not is_node_client_id("mcm-ctl-abc")


def test_no_host_tool_can_draw_a_node_client_id():
    # a random part of hex digits may be all decimal ("mcm-probe-12345678"): read as a node's client
    # id, the connection would present a node's password and be refused; every random client id
    # in the package puts a letter before its random part
    import re
    from pathlib import Path

    import mcm_firmware

    made = []
    for path in Path(mcm_firmware.__file__).parent.rglob("*.py"):
        for m in re.finditer(r'f"(mcm-[^"]*?)\{(uuid\.uuid4\(\)\.hex[^}]*|tag|seed)\}', path.read_text()):
            made.append((path.name, m.group(1)))
    assert len(made) >= 15, made
    for name, prefix in made:
        assert not is_node_client_id(prefix + "12345678"), (name, prefix)
    assert is_node_client_id("mcm-f-12345678") and not is_node_client_id("mcm-probe-h12345678")


def test_credentials_follow_the_client(tmp_path):
    (tmp_path / "s").write_text("secret\n")
    (tmp_path / "p").write_text("hostpw\n")
    sec = BrokerSecurity(username="fleet-host", password_file=str(tmp_path / "p"), node_secret=str(tmp_path / "s"))
    assert sec.credentials("mcm-f-3") == ("mcm-f-3", node_password(b"secret", "mcm-f-3"))
    assert sec.credentials("mcm-f-link-0-9") == ("fleet-host", "hostpw")  # carriers and checks: the host role
    assert BrokerSecurity().credentials("mcm-f-3") == (None, None)
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "e").write_text("")
        BrokerSecurity(username="u", password_file=str(tmp_path / "e")).credentials("x")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mqtt://h?user=x", "unknown parameter"),
        ("mqtt://h?cafile=ca.pem", "are for mqtts"),
        ("mqtts://h?cert=c.pem", "cert and key go together"),
        ("mqtt://h?password_file=p", "needs a username"),
        ("mqtt://h?username=a&username=b", "given once"),
    ],
)
def test_bad_security_parameters_are_refused(url, says):
    with pytest.raises(ValueError, match=says):
        parse_broker_url(url)


def test_options_become_url_parameters():
    url = with_security("mqtts://broker:8883", username="h", password_file="/p", cafile="/ca.pem", cert=None)
    assert parse_broker_url(url) == ("broker", 8883)
    sec = security_of(url)
    assert sec.tls and sec.username == "h" and sec.cafile == "/ca.pem" and sec.cert is None
    assert parse_broker_url("mqtts://broker") == ("broker", 8883)


# --- a secured Mosquitto ---------------------------------------------------------------------------


class SecuredBroker:
    def __init__(self, tmp: Path, *, tls: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port, self.host_port = free_port(), free_port()
        self.secret = tmp / "node.secret"
        self.host_pw = tmp / "host.pw"
        self.host_pw.write_text("correct horse\n")
        extra = []
        for opt, path in (tls or {}).items():
            extra += [f"--{opt}", path]
        r = run_cli(
            "broker-config",
            *("--fleet", "sec", "--nodes", "4", "--node-secret", str(self.secret)),
            *("--host-password-file", str(self.host_pw), "--out", str(tmp / "broker")),
            *("--port", str(self.port), "--host-port", str(self.host_port), *extra),
            *("--broker-user", "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name),
        )
        assert r.returncode == 0, r.stderr
        assert "new node secret" in r.stdout and self.secret.stat().st_mode & 0o077 == 0
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(tmp / "broker" / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_port(self.port)
        wait_port(self.host_port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def secured(tmp_path):
    broker = SecuredBroker(tmp_path)
    yield broker
    broker.stop()


def _host(
    broker: SecuredBroker, port: int | None = None, *, password: str | None = None, client_id: str = "mcm-test-host"
) -> MqttTransport:
    pw = broker.tmp / "other.pw"
    if password is not None:
        pw.write_text(password + "\n")
    return MqttTransport(
        port=port or broker.host_port,
        client_id=client_id,
        security=BrokerSecurity(username="fleet-host", password_file=str(pw if password else broker.host_pw)),
    )


def _as_node(broker: SecuredBroker, user: int, client_id: str | None = None) -> MqttTransport:
    return MqttTransport(
        port=broker.port,
        client_id=client_id or f"mcm-sec-{user}",
        security=BrokerSecurity(node_secret=str(broker.secret)),
    )


def _ping(node: int) -> bytes:
    return encode(Command(node_id=node, seq=1, timestamp_ns=0, flags=int(FrameFlags.HOST), request_id=77, op=Op.PING))


def test_a_secured_fleet_answers_its_hosts_and_nobody_else(secured, cli_process):
    url = f"mqtt://127.0.0.1:{secured.port}"
    host_url = f"mqtt://127.0.0.1:{secured.host_port}"
    creds = ("--username", "fleet-host", "--password-file", str(secured.host_pw))
    run = cli_process(
        "run", "--broker", url, "--nodes", "4", "--fleet", "sec", "--node-secret", str(secured.secret), *creds
    )
    run.wait_line("up: 4 nodes", timeout=30)

    ok = run_cli("ctl", "--broker", host_url, "--fleet", "sec", *creds, "--json", "2", "ping")
    assert ok.returncode == 0 and '"ok": true' in ok.stdout, ok.stderr
    anon = run_cli("ctl", "--broker", host_url, "--fleet", "sec", "--timeout", "3", "2", "ping")
    assert anon.returncode == 1 and "not authori" in anon.stderr.lower(), anon.stderr
    bad = run_cli("ctl", "--broker", url, "--fleet", "sec", "--username", "fleet-host", "2", "ping")
    assert bad.returncode == 1 and "not authori" in bad.stderr.lower()

    async def birth_of_node_0() -> Birth:
        reader = _host(secured, client_id="mcm-test-reader")
        await reader.connect()
        try:
            await reader.subscribe(Subscription("sec", 0, Channel.STATE))
            d = await asyncio.wait_for(reader.receive(), 10)
        finally:
            await reader.close()
        msg = decode(d.payload)
        assert d.retained and isinstance(msg, Birth), msg
        return msg

    # node 1's user and password, as a client that calls itself node 0
    (secured.tmp / "node1.pw").write_text(node_password(read_secret(str(secured.secret)), "mcm-sec-1") + "\n")
    n1 = BrokerSecurity(username="mcm-sec-1", password_file=str(secured.tmp / "node1.pw"))

    async def probe() -> dict[str, object]:
        seen: list[tuple[int, Channel]] = []
        out: dict[str, object] = {"birth before": await birth_of_node_0()}
        watcher = _host(secured)
        await watcher.connect()
        for n in range(4):
            for ch in (Channel.CMD, Channel.EVT, Channel.STATE):
                await watcher.subscribe(Subscription("sec", n, ch))

        async def watch() -> None:
            while True:
                d = await watcher.receive()
                if not d.retained:
                    seen.append((d.address.node, d.address.channel))

        task = asyncio.create_task(watch())
        node1 = _as_node(secured, 1)
        await node1.connect()
        # node 1 may speak on its own topics, and only there: a command to node 2 is dropped
        await node1.publish(Address("sec", 1, Channel.EVT), b"mine", reliable=True)
        await node1.publish(Address("sec", 2, Channel.CMD), _ping(2), reliable=True)
        await node1.publish(Address("sec", 2, Channel.STATE), b"forged", reliable=True)
        await node1.close()
        big = _host(secured, client_id="mcm-test-big")  # a payload above the largest frame: the broker drops its sender
        await big.connect()
        oversize = "delivered"
        try:
            await big.publish(Address("sec", 2, Channel.CMD), bytes(1_000_000), reliable=True)
            await asyncio.wait_for(big.receive(), 3)
        except (TransportError, TimeoutError) as e:
            oversize = f"refused: {type(e).__name__}"
        await big.close()
        for name, tr in (
            # the host listener knows the host user only: a node's credentials are refused there,
            # under another node's client id as under its own. First: Mosquitto 2.0.11 forgets a
            # connected client's id once a connection under that id has been refused (the next
            # taker of the id no longer knocks it off), which would hide a hole here
            ("node 1 as node 0, host port", MqttTransport(port=secured.host_port, client_id="mcm-sec-0", security=n1)),
            ("node 1 on the host port", MqttTransport(port=secured.host_port, client_id="mcm-sec-1", security=n1)),
            ("anonymous", MqttTransport(port=secured.port, client_id="mcm-sec-0")),
            ("wrong password", _host(secured, secured.port, password="guess")),
            ("impostor", MqttTransport(port=secured.port, client_id="mcm-sec-0", security=BrokerSecurity())),
        ):
            try:
                await tr.connect()
                out[name] = "connected"
                await tr.close()
            except TransportError as e:
                out[name] = str(e)
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watcher.close()
        out["seen"] = seen
        out["oversize"] = oversize
        return out

    out = asyncio.run(probe())
    seen = out.pop("seen")
    before = out.pop("birth before")
    assert out.pop("oversize") == "refused: TransportError", "an oversize command reached the broker's subscribers"
    assert (1, Channel.EVT) in seen  # what node 1 may say arrives ...
    assert (2, Channel.CMD) not in seen and (2, Channel.STATE) not in seen  # ... what it may not does not
    assert (0, Channel.STATE) not in seen  # nobody knocked node 0 off: no DEATH
    for name, result in out.items():
        assert "not authori" in str(result).lower(), (name, result)
    status = run_cli("ctl", "--broker", host_url, "--fleet", "sec", *creds, "--json", "0", "ping")
    assert status.returncode == 0  # node 0 still answers ...
    # ... on its first connection: a node knocked off would have connected again and, before it
    # answered anything, published a new BIRTH (bdseq 2) in place of this one
    after = asyncio.run(birth_of_node_0())
    assert after == before and after.bdseq == 1, (before, after)


def test_run_refuses_security_options_that_do_not_fit(tmp_path):
    r = run_cli("run", "--nodes", "1", "--username", "x", "--duration", "1")
    assert r.returncode == 2 and "external broker" in r.stderr
    r = run_cli("run", "--broker", "mqtt://127.0.0.1:1", "--node-secret", str(tmp_path / "s"), "--duration", "1")
    assert r.returncode == 2 and "--node-secret needs --username" in r.stderr
    r = run_cli("ctl", "--broker", "mqtt://127.0.0.1:1", "--cafile", "ca.pem", "0", "ping")
    assert r.returncode == 2 and "mqtts" in r.stderr
    r = run_cli(
        *("broker-config", "--nodes", "2", "--node-secret", str(tmp_path / "s")),
        *("--host-password-file", str(tmp_path / "missing.pw"), "--out", str(tmp_path / "o")),
    )
    assert r.returncode == 2 and "missing.pw" in r.stderr and not (tmp_path / "o").exists()
    r = run_cli(
        *("broker-config", "--nodes", "2", "--node-secret", str(tmp_path / "s"), "--port", "1883"),
        *("--host-port", "1883", "--host-password-file", str(tmp_path / "s"), "--out", str(tmp_path / "o")),
    )
    assert r.returncode == 2 and "must differ" in r.stderr
    # on the node listener a user name is the client id: a host user named as a node would be that node
    (tmp_path / "h.pw").write_text("pw\n")
    r = run_cli(
        *("broker-config", "--nodes", "2", "--node-secret", str(tmp_path / "s"), "--host-user", "mcm-default-1"),
        *("--host-password-file", str(tmp_path / "h.pw"), "--out", str(tmp_path / "o")),
    )
    assert r.returncode == 2 and "'mcm-default-1' is named as a node's client id" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_tls_with_a_ca_of_the_test(tmp_path, cli_process):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    broker = SecuredBroker(
        tmp_path, tls={"tls-cert": str(tmp_path / "server.pem"), "tls-key": str(tmp_path / "server.key")}
    )
    try:
        creds = ("--username", "fleet-host", "--password-file", str(broker.host_pw))
        tls = ("--cafile", str(tmp_path / "ca.pem"))
        run = cli_process(
            "run",
            *("--broker", f"mqtts://127.0.0.1:{broker.port}", "--nodes", "2", "--fleet", "sec"),
            *("--node-secret", str(broker.secret), *creds, *tls),
        )
        run.wait_line("up: 2 nodes", timeout=30)
        host_url = f"mqtts://127.0.0.1:{broker.host_port}"
        ok = run_cli("ctl", "--broker", host_url, "--fleet", "sec", *creds, *tls, "--json", "1", "status")
        assert ok.returncode == 0 and '"node": 1' in ok.stdout, ok.stderr
        assert decode is not None
        other = trustme.CA()
        other.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
        wrong = run_cli(
            "ctl",
            "--broker",
            host_url,
            "--fleet",
            "sec",
            *creds,
            "--cafile",
            str(tmp_path / "other-ca.pem"),
            "1",
            "ping",
        )
        assert wrong.returncode == 1 and "certificate" in wrong.stderr.lower(), wrong.stderr
        plain = run_cli(
            "ctl", "--broker", f"mqtt://127.0.0.1:{broker.host_port}", "--fleet", "sec", *creds, "1", "ping"
        )
        assert plain.returncode == 1
    finally:
        broker.stop()


def test_tls_with_client_certificates_required(tmp_path, cli_process):
    """``broker-config --tls-cafile``: the broker requires a client certificate issued by that CA.
    A fleet and a host that present one (made by the test's CA) work; a host without one, or with
    one of another CA, is refused (exit 1, one line)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    for name, issuer in (("fleet", ca), ("host", ca), ("stranger", trustme.CA())):
        cert = issuer.issue_cert(f"{name}.sec.example")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    broker = SecuredBroker(
        tmp_path,
        tls={
            "tls-cert": str(tmp_path / "server.pem"),
            "tls-key": str(tmp_path / "server.key"),
            "tls-cafile": str(tmp_path / "ca.pem"),
        },
    )
    try:
        creds = (
            "--username",
            "fleet-host",
            "--password-file",
            str(broker.host_pw),
            "--cafile",
            str(tmp_path / "ca.pem"),
        )

        def client(name: str) -> tuple[str, ...]:
            return ("--cert", str(tmp_path / f"{name}.pem"), "--key", str(tmp_path / f"{name}.key"))

        run = cli_process(
            *("run", "--broker", f"mqtts://127.0.0.1:{broker.port}", "--nodes", "2", "--fleet", "sec"),
            *("--node-secret", str(broker.secret), *creds, *client("fleet")),
        )
        run.wait_line("up: 2 nodes", timeout=30)
        host_url = f"mqtts://127.0.0.1:{broker.host_port}"
        ok = run_cli("ctl", "--broker", host_url, "--fleet", "sec", *creds, *client("host"), "--json", "1", "status")
        assert ok.returncode == 0 and '"node": 1' in ok.stdout, ok.stderr
        for who, why in (((), "certificate required"), (client("stranger"), "unknown ca")):
            refused = run_cli("ctl", "--broker", host_url, "--fleet", "sec", *creds, *who, "1", "ping")
            assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
            last = refused.stderr.strip().splitlines()[-1]  # the error, naming the broker's TLS alert
            assert last.startswith("mcm-emu: error: cannot connect to broker") and why in last, refused.stderr
    finally:
        broker.stop()


def test_fuzz_reaches_a_secured_fleet_with_the_security_of_its_target_url(secured, cli_process):
    """``fuzz --target`` takes a broker URL's security parameters after ``fleet``: with the host's
    credentials it fuzzes node 1 of a secured fleet; without them the broker refuses it (exit 1), and
    an unknown parameter is a usage error (exit 2)."""
    run = cli_process(
        *("run", "--broker", f"mqtt://127.0.0.1:{secured.port}", "--nodes", "2", "--fleet", "sec"),
        *("--node-secret", str(secured.secret), "--username", "fleet-host", "--password-file", str(secured.host_pw)),
    )
    run.wait_line("up: 2 nodes", timeout=30)
    base = f"mqtt://127.0.0.1:{secured.host_port}/1?fleet=sec"
    ok = run_cli(
        *("fuzz", "--target", f"{base}&username=fleet-host&password_file={secured.host_pw}"),
        *("--batches", "2", "--json"),
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    refused = run_cli("fuzz", "--target", base, "--batches", "1", timeout=60)
    assert refused.returncode == 1 and "not authori" in refused.stderr.lower(), refused.stderr
    bad = run_cli("fuzz", "--target", f"{base}&pasword_file=x", "--batches", "1")
    assert bad.returncode == 2 and "unknown parameter(s) pasword_file" in bad.stderr, bad.stderr


# --- a consumer that falls behind ------------------------------------------------------------------


def _host_socket(port: int, client_id: str, password: bytes, rcvbuf: int | None = None):
    import socket

    from mcm_firmware.transport import mqtt_wire as w

    s = socket.socket()
    if rcvbuf is not None:  # before connecting: the window it offers stays that small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(w.connect(client_id, keepalive=60, username="fleet-host", password=password))
    assert s.recv(4)[3] == 0  # CONNACK, accepted
    return s


def _publishes_held_for_a_stalled_consumer(tmp: Path, keep_queue_line: bool) -> int:
    """PUBLISH packets a host subscriber gets of 8,000 telemetry-sized messages (8 MB) sent while
    it read nothing, on a broker configured by broker-config for 1,000 nodes."""
    from mcm_firmware.transport import mqtt_wire as w

    port, host_port = free_port(), free_port()
    tmp.mkdir()
    pw = tmp / "host.pw"
    pw.write_text("correct horse\n")
    r = run_cli(
        "broker-config",
        *("--fleet", "q", "--nodes", "1000", "--node-secret", str(tmp / "node.secret")),
        *("--host-password-file", str(pw), "--out", str(tmp / "broker")),
        *("--port", str(port), "--host-port", str(host_port)),
        *("--broker-user", "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    conf = tmp / "broker" / "mosquitto.conf"
    assert "\nmax_queued_messages 10000\n" in conf.read_text()  # a second of 1,000 nodes at 10 Hz
    if not keep_queue_line:
        conf.write_text(conf.read_text().replace("\nmax_queued_messages 10000\n", "\n"))
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(host_port)
        sub = _host_socket(host_port, "mcm-test-consumer", b"correct horse", rcvbuf=4096)
        sub.sendall(w.subscribe(1, "mcm/v1/q/+/tlm"))
        assert sub.recv(5)[0] == w.SUBACK
        pub = _host_socket(host_port, "mcm-test-publisher", b"correct horse")
        payload = bytes(1000)
        pub.sendall(b"".join(w.publish(f"mcm/v1/q/{k % 1000}/tlm", payload) for k in range(8000)))
        pub.sendall(w.PINGREQ_PACKET)  # answered once the broker has taken every publish before it
        assert pub.recv(2)[0] == w.PINGRESP
        buf, got = bytearray(), 0
        sub.settimeout(1.0)
        while True:
            try:
                data = sub.recv(1 << 20)
            except TimeoutError:
                break
            if not data:
                break
            buf += data
            got += sum(first & 0xF0 == w.PUBLISH for first, _ in w.split_packets(buf))
        pub.close()
        sub.close()
        return got
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.slow
def test_a_consumer_that_stalls_loses_no_telemetry_the_broker_accepted(tmp_path):
    """broker-config holds a second of the fleet's telemetry for a consumer that is behind;
    Mosquitto's default (1,000 messages) drops the rest of a burst it cannot write."""
    assert _publishes_held_for_a_stalled_consumer(tmp_path / "sized", keep_queue_line=True) == 8000
    assert _publishes_held_for_a_stalled_consumer(tmp_path / "default", keep_queue_line=False) < 8000
