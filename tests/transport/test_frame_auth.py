"""Frame authentication end to end: a fleet run with ``--frame-keys`` on a real Mosquitto and on a
pseudo-terminal, hosts with and without the keys, a replayed and a forged command, a key rotated
under the running fleet."""

from __future__ import annotations

import asyncio
import json
import signal
import time

from mcm_firmware.protocol import PowerCapArgs, decode
from mcm_firmware.protocol.auth import trailer
from mcm_firmware.transport import Address, Channel, Subscription, transport_factory

from ..conftest import run_cli


def ctl(url: str, *argv: str, keys: str | None = None, timeout: str = "2") -> tuple[int, dict]:
    extra = ["--frame-keys", keys] if keys else []
    r = run_cli("ctl", "--broker", url, "--json", "--timeout", timeout, *extra, *argv)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {"stderr": r.stderr})


async def test_a_sealed_fleet_refuses_unsealed_replayed_and_forged_commands(mosquitto, cli_process, tmp_path):
    keys = tmp_path / "fleet.keys"
    assert run_cli("frame-keys", "new", str(keys)).returncode == 0
    run = cli_process("run", "--nodes", "2", "--broker", mosquitto.url, "--frame-keys", str(keys), "--fleet", "sec")
    run.wait_line("running 2 nodes")
    url = mosquitto.url

    rc, out = await asyncio.to_thread(ctl, url, "--fleet", "sec", "0", "ping", keys=str(keys))
    assert rc == 0 and out["ok"], out
    # a host without the keys: no answer, and the diagnosis says why
    r = await asyncio.to_thread(run_cli, "ctl", "--broker", url, "--fleet", "sec", "--timeout", "1", "0", "ping")
    assert r.returncode == 1 and "authenticates its frames" in r.stderr and "--frame-keys" in r.stderr, r.stderr

    # capture a sealed command as it crosses the broker, then replay it after a newer one ran
    spy = transport_factory(url)("mcm-spy")
    await spy.connect()
    await spy.subscribe(Subscription("sec", 0, Channel.CMD))
    rc, _ = await asyncio.to_thread(ctl, url, "--fleet", "sec", "0", "set-power-cap", "900", keys=str(keys))
    assert rc == 0
    captured = (await asyncio.wait_for(spy.receive(), 5)).payload
    assert trailer(captured) is not None and decode(captured).args == PowerCapArgs(watts=900.0)
    rc, _ = await asyncio.to_thread(ctl, url, "--fleet", "sec", "0", "set-power-cap", "1000", keys=str(keys))
    assert rc == 0
    cmd = Address("sec", 0, Channel.CMD)
    await spy.publish(cmd, captured, reliable=True)  # replayed
    forged = bytearray(captured)
    forged[-20] ^= 1  # the sender field: the tag no longer verifies
    await spy.publish(cmd, bytes(forged), reliable=True)
    await spy.publish(cmd, captured[:-21], reliable=True)  # the frame without its trailer (AUTH flag still set)
    await asyncio.sleep(0.5)
    await spy.close()

    rc, st = await asyncio.to_thread(ctl, url, "--fleet", "sec", "0", "status", keys=str(keys))
    assert rc == 0 and st["power_cap_w"] == 1000.0, st  # the replay changed nothing
    rc, stats = await asyncio.to_thread(ctl, url, "--fleet", "sec", "0", "stats", keys=str(keys))
    # the keyless pings (3 attempts), the replay, the forgery, the frame without its trailer
    assert rc == 0 and stats["auth_refused"] == 6, stats

    # every frame a monitor sees verifies; a monitor without keys sees them as they came
    r = await asyncio.to_thread(
        run_cli, "monitor", "--broker", url, "--fleet", "sec", "--json", "--count", "6", "--frame-keys", str(keys)
    )
    frames = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(frames) == 6 and all(f.get("auth", {}).get("verified") for f in frames), frames
    assert all("error" not in f for f in frames)
    r = await asyncio.to_thread(run_cli, "monitor", "--broker", url, "--fleet", "sec", "--json", "--count", "2")
    assert all(json.loads(x)["auth"]["verified"] is False for x in r.stdout.splitlines())

    # rotation without restart: a new key everyone accepts, then seals with
    assert run_cli("frame-keys", "new", str(keys), "--next").returncode == 0
    keys.write_text(keys.read_text().replace(" next", ""))
    t0 = time.monotonic()
    while True:
        r = await asyncio.to_thread(
            run_cli, "monitor", "--broker", url, "--fleet", "sec", "--node", "1", "--json", "--count", "3"
        )
        key_ids = {json.loads(x)["auth"]["key_id"] for x in r.stdout.splitlines() if not json.loads(x)["retained"]}
        if key_ids == {2}:
            break
        assert time.monotonic() - t0 < 10, f"nodes still seal with {key_ids}"
    rc, out = await asyncio.to_thread(ctl, url, "--fleet", "sec", "1", "ping", keys=str(keys))
    assert rc == 0, out
    run.signal(signal.SIGTERM)
    assert run.wait() == 0


def test_a_sealed_fleet_on_a_serial_line(cli_process, tmp_path):
    keys = tmp_path / "fleet.keys"
    assert run_cli("frame-keys", "new", str(keys)).returncode == 0
    run = cli_process("run", "--nodes", "1", "--serial", "pty", "--frame-keys", str(keys))
    line = run.wait_line("serial: node 0 at ")
    path = line.split(" at ")[1].split(" ")[0]
    run.wait_line("node=0 state=RUNNING")
    ok = run_cli("ctl", "--serial", path, "--json", "--frame-keys", str(keys), "0", "status")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["state"] == "RUNNING"
    refused = run_cli("ctl", "--serial", path, "--timeout", "1", "0", "ping")
    assert refused.returncode == 1
    stats = run_cli("ctl", "--serial", path, "--json", "--frame-keys", str(keys), "0", "stats")
    assert json.loads(stats.stdout)["auth_refused"] == 3  # the keyless ping, sent three times
    run.signal(signal.SIGTERM)
    assert run.wait() == 0


def test_bad_key_files_are_refused_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.keys"
    bad.write_text("1 0011\n")
    r = run_cli("run", "--frame-keys", str(bad), "--duration", "1")
    assert r.returncode == 2 and f"{bad}:1" in r.stderr and "at least 16" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("ctl", "--frame-keys", str(tmp_path / "missing.keys"), "0", "ping")
    assert r.returncode == 2 and "missing.keys" in r.stderr, r.stderr
    r = run_cli("frame-keys", "new", str(bad / "x.keys"))  # under a file, not a directory
    assert r.returncode == 2 and "x.keys" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("frame-keys", "new", str(bad))  # a file that does not parse is not appended to
    assert r.returncode == 2 and "at least 16" in r.stderr and bad.read_text() == "1 0011\n"


async def test_a_forged_link_frame_takes_no_carried_node_online_or_offline(mosquitto, cli_process, tmp_path):
    """A carrier of a sealed fleet seals its LINK frames (its will included); a reader with the keys
    (``read_state(auth=)``) verifies them, so a forged LINK frame neither revives the nodes of a
    carrier that is gone nor takes those of a live one offline as a LOST: it is refused and counted.
    A reader without the keys is fooled both ways (which is what the seal is for)."""
    import dataclasses

    from mcm_firmware.host.discovery import read_state
    from mcm_firmware.keyring import KeyRing
    from mcm_firmware.protocol import Link, LinkCondition, encode
    from mcm_firmware.protocol.auth import FrameAuth

    keys = tmp_path / "fleet.keys"
    assert run_cli("frame-keys", "new", str(keys)).returncode == 0
    other = tmp_path / "other.keys"  # a fleet secret of the attacker's own
    assert run_cli("frame-keys", "new", str(other)).returncode == 0
    ring, theirs = KeyRing(keys), KeyRing(other)
    auth = FrameAuth("lk", ring.secret, ring.current)
    forger = FrameAuth("lk", theirs.secret, theirs.current)
    factory = transport_factory(mosquitto.url)
    run = cli_process(
        *("run", "--nodes", "3", "--broker", mosquitto.url, "--frame-keys", str(keys), "--fleet", "lk"),
        *("--connection", "carrier"),
    )
    run.wait_line("up: 3 nodes")

    async def publish(frame: bytes) -> None:
        tr = factory("mcm-forger")
        await tr.connect()
        await tr.publish(Address("lk", 0, Channel.LINK), frame, retain=True, reliable=True)
        await tr.close()

    def online(st) -> list[int]:
        return [n for n in range(3) if st.online(n)]

    genuine = await read_state(factory, "lk", auth=auth)
    assert online(genuine) == [0, 1, 2] and genuine.refused == 0, genuine
    link = genuine.links[0]
    assert link.condition is LinkCondition.ONLINE
    # a LOST for the live carrier, unsealed and sealed with another secret: refused, not believed
    lost = dataclasses.replace(link, condition=LinkCondition.LOST, flags=0)
    for forged in (encode(lost), forger.seal(encode(lost), 0x0BAD)):
        await publish(forged)
        fooled = await read_state(factory, "lk")
        assert online(fooled) == [] and fooled.links[0].condition is LinkCondition.LOST  # the attack, unverified
        st = await read_state(factory, "lk", auth=auth)
        assert st.refused == 1 and 0 not in st.links, st  # the forgery left out, never taken as LOST
        assert online(st) == []  # (it replaced the genuine frame at the broker: no LINK, nothing online)

    # the carrier dies: its sealed will (LOST) verifies; a forged ONLINE does not revive its nodes
    run.signal(signal.SIGKILL)
    run.wait()
    t0 = time.monotonic()
    while True:
        st = await read_state(factory, "lk", auth=auth)
        if 0 in st.links and st.links[0].condition is LinkCondition.LOST:
            break
        assert time.monotonic() - t0 < 10, st  # the broker publishes the will at once
        await asyncio.sleep(0.2)
    will = st.links[0]
    assert isinstance(will, Link) and st.refused == 0 and online(st) == []
    revived = dataclasses.replace(will, condition=LinkCondition.ONLINE, flags=0)
    await publish(encode(revived))
    fooled = await read_state(factory, "lk")
    assert online(fooled) == [0, 1, 2]  # a reader without the keys believes the forgery
    st = await read_state(factory, "lk", auth=auth)
    assert online(st) == [] and st.refused == 1, st
