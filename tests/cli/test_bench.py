"""mcm-emu bench: a run measured from outside (its own Mosquitto, an independent counter)."""

from __future__ import annotations

import asyncio
import json

import pytest

from ..conftest import run_cli


@pytest.mark.slow
def test_bench_measures_a_small_fleet_from_outside(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli(
        "bench",
        "--nodes",
        "20",
        "--seconds",
        "5",
        "--warmup",
        "1",
        "--ping-rate",
        "10",
        "--parts",
        "fleet,ceiling",
        "--out",
        str(out),
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    # the run reached the bench's Mosquitto over TLS (the default), the counter over plain TCP
    assert (
        "| nodes | profile (processes) | link | ticks/s |" in r.stdout and "| 20 | colossus-mcm (1) | tls |" in r.stdout
    )
    assert "Broker ceiling" in r.stdout and "over TLS" in r.stdout
    data = json.loads(out.read_text())
    (res,) = data["results"]
    ceiling = data["ceiling"]  # a flood publisher, counted by the same independent subscriber
    assert ceiling["received"] > 0 and ceiling["damaged"] == 0 and ceiling["received_per_s"] > 0
    assert ceiling["link"] == "tls" and res["link"] == "tls"
    assert res["ceiling_per_publish_core"] > 0 and "codec" not in data and "soak" not in data
    t = res["telemetry"]
    assert t["received"] > 0 and t["damaged"] == 0 and t["silent_nodes"] == 0
    # a frame due just before the window opened may be sent in it: at most one per node in flight
    assert t["due_by_run"] + 20 >= t["sent_by_run"] > 0 and t["dropped_by_run"] >= 0
    assert t["dropped_by_broker"] == 0 and "| 20 | colossus-mcm (1) | tls |" in r.stdout
    assert res["ping"]["sent"] >= 40 and res["ping"]["lost"] == 0
    assert res["ticks_per_s"] > 0 and res["tick_late_ms"]["n"] > 0
    assert res["run_stderr_tracebacks"] == 0 and res["rss_mb"] > 0


@pytest.mark.slow
def test_bench_measures_a_run_of_two_worker_processes_as_one(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli(
        "bench",
        *("--nodes", "20", "--seconds", "5", "--warmup", "1", "--ping-rate", "10"),
        *("--processes", "2", "--parts", "fleet", "--link", "tcp", "--out", str(out)),
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(out.read_text())["results"]
    assert res["processes"] == 2 and res["link"] == "tcp" and "| 20 | colossus-mcm (2) | tcp |" in r.stdout
    t = res["telemetry"]  # both workers' nodes reach the independent counter; both files are read
    assert t["silent_nodes"] == 0 and t["damaged"] == 0 and t["share"] > 0.9
    assert t["sent_by_run"] >= t["received"] * 0.9 and res["ping"]["lost"] == 0
    assert res["run_stderr_tracebacks"] == 0 and res["cpu_pct"]["run"] > 0


def test_marks_of_workers_merge_into_one_measurement():
    from mcm_firmware.cli.bench import merge_marks

    def mark(ticks, p99, sent):
        late = {"n": ticks, "p50": 0.1, "p99": p99, "max": p99 * 2}
        return {
            "seconds": 60.0,
            "ticks": ticks,
            "periods_late": 1,
            "gc_ms": 3.0,
            "gc_max_pause_ms": 1.0,
            "tick_late_ms": late,
            "loop_lag_ms": late,
            "telemetry": {"due": sent, "sent": sent},
        }

    merged = merge_marks([mark(1200, 2.0, 5000), mark(1199, 7.5, 4000)])
    assert merged["ticks"] == 2399 and merged["periods_late"] == 2 and merged["workers"] == 2
    assert merged["tick_late_ms"] == {"p50": 0.1, "p99": 7.5, "max": 15.0, "n": 2399}
    assert merged["telemetry"] == {"due": 9000, "sent": 9000}


def test_bench_refuses_bad_node_counts_and_parts():
    r = run_cli("bench", "--nodes", "ten")
    assert r.returncode == 2 and "--nodes 'ten'" in r.stderr
    r = run_cli("bench", "--parts", "fleet,warp")
    assert r.returncode == 2 and "unknown part(s) warp" in r.stderr
    r = run_cli("bench", "--link", "udp")
    assert r.returncode == 2 and "--link" in r.stderr and "'udp'" in r.stderr


def test_codec_costs_are_measured_against_the_struct_floor():
    from mcm_firmware.cli.bench_parts import codec_costs

    out = codec_costs(seconds=0.02)
    us = out["us_per_frame"]
    assert out["frame_bytes"] == 327 and all(v > 0 for v in us.values())
    assert out["encode_vs_floor"] == pytest.approx(
        us["codec: encode (typed message -> frame)"] / us["struct floor: build"], rel=0.01
    )


async def test_the_soak_speedup_comes_from_the_scenarios_own_measurement():
    from mcm_firmware.cli.bench_parts import soak_speedup

    short = await soak_speedup(duration_s=1800)  # its first half hour at the scenario's coarse rates
    assert short["simulated_s"] == 1800 and short["rates"] == "scenario"
    assert short["speedup"] == pytest.approx(1800 / short["wall_s"], rel=0.05) and short["frames"] > 0
    own = await soak_speedup(own_rates=True, duration_s=20)  # the profile's own rates: far more frames
    assert own["simulated_s"] == 20 and own["frames"] > 20 * 64 * 9


async def test_the_messages_a_broker_drops_are_read_from_its_sys_topic(tmp_path):
    """A subscriber that reads nothing while 8,000 messages of 1 KB go by: Mosquitto (its default
    queue of 1,000) drops some for it, and says how many in $SYS, which the bench reads."""
    import socket

    from mcm_firmware.cli.bench import BrokerDrops
    from mcm_firmware.transport import mqtt_wire as w

    from ..conftest import Mosquitto

    broker = Mosquitto(tmp_path)  # Mosquitto's default queue for a subscriber
    broker.conf.write_text(broker.conf.read_text() + "sys_interval 1\n")
    broker.start()
    port = broker.port
    try:
        drops = BrokerDrops(f"mqtt://127.0.0.1:{port}")
        await drops.start()
        assert drops.latest == 0  # none dropped yet: nothing published
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(w.connect("stalled", keepalive=60) + w.subscribe(1, "mcm/v1/f/+/tlm"))
        pub = socket.create_connection(("127.0.0.1", port))
        pub.sendall(w.connect("pub", keepalive=60))
        await asyncio.sleep(0.3)
        pub.sendall(b"".join(w.publish(f"mcm/v1/f/{k % 100}/tlm", bytes(1000)) for k in range(8000)))
        for _ in range(60):
            if drops.latest:
                break
            await asyncio.sleep(0.1)
        assert 0 < drops.latest < 8000
        drops.close()
        pub.close()
        stalled.close()
    finally:
        broker.stop()
