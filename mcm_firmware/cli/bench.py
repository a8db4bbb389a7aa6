"""``mcm-emu bench``: how many modules one ``mcm-emu run`` keeps in real time, measured from outside.

For each node count: a Mosquitto of its own (or ``--broker``), ``mcm-emu run`` as users start it
(a subprocess), an independent subscriber process counting the telemetry the broker delivers
(``python -m mcm_firmware.host.tlm_count``), and ``ctl``-style pings from an independent requester
during the measurement.

The bench's own Mosquitto listens twice: over TLS, with a certificate authority made for the bench,
for the run (``--link tls``, the default: modules reach their site's broker over TLS, as a secured
site runs them), and over plain TCP on the loopback for the measuring processes, as host software
beside its broker. ``--link tcp`` runs the fleet over plain TCP as well. Which link the run used is
part of every result. The run's own measurement (tick lateness, loop lag, GC) covers exactly the measured
seconds (SIGUSR1 / SIGUSR2 to its ``--stats-file``); CPU and memory are read from ``/proc``.
Prints a table (markdown) and, with ``--json``, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .bench_parts import link_of, start_counter
from .broker_config import queued_for_consumer
from .common import EXIT_FAILURE, EXIT_OK, BadInput, Failure, bounded, broker_url
from .run import worker_stats

FLEET = "bench"


def add_parser(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="measure how many emulated modules one run keeps in real time",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    b.add_argument(
        "--nodes", default="1000,10000", metavar="N[,N...]", help="node counts to measure (default 1000,10000)"
    )
    b.add_argument(
        "--seconds",
        type=bounded(float, 5, 3600, "--seconds"),
        default=60.0,
        help="measured seconds per node count (default 60)",
    )
    b.add_argument(
        "--warmup",
        type=bounded(float, 0, 600, "--warmup"),
        default=10.0,
        help="seconds after every node is up before measuring (default 10)",
    )
    b.add_argument("--profile", default="colossus-mcm", help="profile of the nodes (default colossus-mcm)")
    b.add_argument(
        "--broker",
        type=broker_url,
        default=None,
        help="an external broker (default: a Mosquitto of the bench's own on a free port)",
    )
    b.add_argument(
        "--link",
        choices=["tls", "tcp"],
        default="tls",
        help="how the run reaches the bench's own Mosquitto, tls or tcp (default tls; the counter and the pinger "
        "connect over plain TCP on the loopback); with --broker every process uses that URL",
    )
    b.add_argument(
        "--ping-rate",
        type=bounded(float, 0, 10_000, "--ping-rate"),
        default=20.0,
        help="command round trips per second during the measurement (default 20)",
    )
    b.add_argument(
        "--connection",
        choices=["auto", "node", "carrier"],
        default="auto",
        help="passed to run (default auto: what a user gets)",
    )
    b.add_argument(
        "--processes",
        type=bounded(int, 1, 64, "--processes"),
        default=1,
        help="passed to run: worker processes sharing the nodes (default 1); CPU and RSS are the whole tree's",
    )
    b.add_argument(
        "--parts",
        type=_parts,
        default=",".join(PARTS),
        metavar="P[,P...]",
        help="what to measure: fleet (the runs), ceiling (what the broker itself accepts), codec (us per "
        "frame against the struct floor), soak (virtual-time speed-up of soak-24h) (default: all)",
    )
    b.add_argument("--json", action="store_true", help="print the results as one JSON object")
    b.add_argument("--out", metavar="FILE", default=None, help="also write the JSON results to FILE")
    b.set_defaults(func=cmd_bench)


PARTS = ("fleet", "ceiling", "codec", "soak")
OWN_RATES_SOAK_S = 600  # simulated seconds of the soak run at the profile's own rates


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(bad) or '(none)'}; choose among {', '.join(PARTS)}"
        )
    return parts


# --- processes -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    """Resident set of a process in MB (0 when it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _workers(pid: int) -> list[int]:
    """``pid`` and its worker processes (``run --processes``: children running ``mcm_firmware``),
    from ``/proc/PID/task/*/children``."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                if b"mcm_firmware" in Path(f"/proc/{child}/cmdline").read_bytes():
                    pids.append(int(child))
    return pids


def _tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of ``pids`` (a process that has ended counts nothing: the run's failure is
    reported on its own)."""
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += _cpu_seconds(p)
    return total


async def _marked(files: list[Path], timeout: float) -> None:
    """Wait until each stats file holds a measurement (SIGUSR2 reaches the workers through their
    parent; the stop must not overtake it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(f.exists() and '"what": "mark"' in f.read_text() for f in files):
            return
        await asyncio.sleep(0.05)


def merge_marks(marks: list[dict[str, Any]]) -> dict[str, Any]:
    """One measurement of several worker processes: counts added, seconds the longest, lateness,
    lag and GC pauses the worst worker's (so a p99 is an upper bound of the whole fleet's)."""
    if len(marks) == 1:
        return marks[0]
    worst = {
        key: {q: max(m[key][q] for m in marks) for q in ("p50", "p99", "max")} | {"n": sum(m[key]["n"] for m in marks)}
        for key in ("tick_late_ms", "loop_lag_ms")
    }
    return {
        "seconds": max(m["seconds"] for m in marks),
        "ticks": sum(m["ticks"] for m in marks),
        "periods_late": sum(m["periods_late"] for m in marks),
        **worst,
        "gc_ms": max(m["gc_ms"] for m in marks),
        "gc_max_pause_ms": max(m["gc_max_pause_ms"] for m in marks),
        "telemetry": {k: sum(m["telemetry"][k] for m in marks) for k in marks[0]["telemetry"]},
        "workers": len(marks),
    }


class Broker:
    """A Mosquitto of the bench's own: a plain TCP listener on a free loopback port (the measuring
    processes) and, with ``tls``, a TLS listener on another (the run), its certificate issued by a
    certificate authority made for the bench in ``workdir``."""

    def __init__(self, workdir: Path, *, tls: bool = False, queued: int = 100_000) -> None:
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
        )
        if binary is None:
            raise Failure("bench: mosquitto is not installed (apt-get install mosquitto), or pass --broker URL")
        self.port = _free_port()
        # max_queued_messages (``queued``): what the broker holds for a subscriber whose socket is
        # full before it drops QoS 0 frames; Mosquitto's default, 1,000, is 10 ms of a 10,000-node
        # fleet's telemetry: the counter, sharing two cores with everything else, lost frames the
        # broker had accepted when it was descheduled that long
        text = (
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"set_tcp_nodelay true\nlog_dest none\nmax_queued_messages {queued}\n"
            "sys_interval 1\n"  # its count of dropped messages each second (BrokerDrops)
        )
        self.tls_port: int | None = None
        self.cafile = workdir / "bench-ca.crt"
        if tls:
            from .certs import issue, load_or_create_ca

            ca = load_or_create_ca(self.cafile, workdir / "bench-ca.key", "mcm-emu bench CA")
            issue(ca, "127.0.0.1", workdir / "broker.crt", workdir / "broker.key", server=True)
            self.tls_port = _free_port()
            # the key is this user's (mode 0600): a Mosquitto started as root keeps that user
            # instead of changing to ``mosquitto``, which could not read it
            text += f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            text += (
                f"listener {self.tls_port} 127.0.0.1\ncafile {self.cafile}\n"
                f"certfile {workdir / 'broker.crt'}\nkeyfile {workdir / 'broker.key'}\n"
            )
        conf = workdir / "mosquitto.conf"
        conf.write_text(text)
        self.binary, self.conf = binary, conf
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The plain TCP listener: the counter, the pinger, the flood's subscriber."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def fleet_url(self) -> str:
        """Where the run connects: the TLS listener when there is one."""
        if self.tls_port is None:
            return self.url
        return f"mqtts://127.0.0.1:{self.tls_port}?{urlencode({'cafile': str(self.cafile)})}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", str(self.conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for port in [p for p in (self.port, self.tls_port) if p is not None]:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                    break
                await asyncio.sleep(0.025)
            else:
                raise Failure(f"bench: mosquitto did not listen on port {port}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


class BrokerDrops:
    """The messages a Mosquitto has dropped since it started (for a subscriber whose queue was
    full: ``$SYS/broker/publish/messages/dropped``, retained, published when it changes, at most
    every ``sys_interval``), read by a subscriber of its own; none published means none dropped."""

    TOPIC = "$SYS/broker/publish/messages/dropped"

    def __init__(self, url: str) -> None:
        import uuid

        from ..transport.mqtt import parse_broker_url
        from ..transport.mqtt_fast import FastSubscriber

        host, port = parse_broker_url(url)
        self.latest = 0
        self._sub = FastSubscriber(
            host=host,
            port=port,
            client_id=f"mcm-bench-sys-h{uuid.uuid4().hex[:8]}",
            topic_filter=self.TOPIC,
            on_publish=self._take,
            batch_s=0,
        )

    def _take(self, topic: bytes, payload: memoryview) -> None:
        with contextlib.suppress(ValueError):
            self.latest = int(bytes(payload))

    async def start(self) -> None:
        await self._sub.start()
        await asyncio.sleep(0.2)  # the retained count, if any, follows the SUBACK

    def close(self) -> None:
        self._sub.close()


async def _lines_until(stream: asyncio.StreamReader, needle: str, timeout: float, seen: list[str]) -> str:
    async def read() -> str:
        while True:
            raw = await stream.readline()
            if not raw:
                raise Failure(f"bench: the process ended before printing {needle!r}: {' | '.join(seen[-5:])}")
            line = raw.decode(errors="replace").rstrip()
            seen.append(line)
            if needle in line:
                return line

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise Failure(f"bench: no {needle!r} within {timeout:g} s: {' | '.join(seen[-5:])}") from None


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    while raw := await stream.readline():
        into.append(raw.decode(errors="replace").rstrip())


# --- one measurement -------------------------------------------------------------------------------


async def _pings(url: str, nodes: int, rate: float, seconds: float) -> dict[str, Any]:
    """Command round trips at ``rate`` per second to random nodes during ``seconds``, measured by
    an independent requester in a process of its own (:mod:`mcm_firmware.host.pinger`)."""
    if rate <= 0:
        return {"sent": 0, "lost": 0}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcm_firmware.host.pinger",
        *("--broker", url, "--fleet", FLEET, "--nodes", str(nodes)),
        *("--rate", str(rate), "--duration", str(seconds)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise Failure(f"bench: the pinger failed (exit {proc.returncode}): {err.decode(errors='replace')[-300:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def measure(
    n: int, args: argparse.Namespace, url: str, broker_pid: int | None, workdir: Path, host_url: str | None = None
) -> dict[str, Any]:
    """One node count: the run connects to ``url``, the counter and the pinger to ``host_url``
    (the same broker's plain listener; ``url`` when None). With ``broker_pid`` (the bench's own
    Mosquitto) the messages it dropped meanwhile are counted too."""
    from ..profile import load_profile

    host_url = host_url or url

    profile = load_profile(args.profile)
    stats_file = workdir / f"stats-{n}.jsonl"
    files = [stats_file] if args.processes == 1 else [worker_stats(str(stats_file), i) for i in range(args.processes)]
    out_lines: list[str] = []
    t0 = time.monotonic()
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcm_firmware",
        "run",
        "--broker",
        url,
        "--nodes",
        str(n),
        "--fleet",
        FLEET,
        "--profile",
        args.profile,
        "--connection",
        args.connection,
        "--processes",
        str(args.processes),
        "--stats-file",
        str(stats_file),
        "--summary-interval",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert run.stdout is not None and run.stderr is not None
    err_lines: list[str] = []
    err_task = asyncio.create_task(_drain(run.stderr, err_lines), name="bench-run-stderr")
    out_task: asyncio.Task[None] | None = None
    drops: BrokerDrops | None = None
    try:
        for _ in range(args.processes):  # each worker says when its nodes are up
            await _lines_until(run.stdout, "up: ", 600, out_lines)
        startup = time.monotonic() - t0
        pids = _workers(run.pid) if args.processes > 1 else [run.pid]
        out_task = asyncio.create_task(_drain(run.stdout, out_lines), name="bench-run-stdout")
        await asyncio.sleep(args.warmup)
        if broker_pid is not None:
            drops = BrokerDrops(host_url)
            await drops.start()
        dropped0 = drops.latest if drops is not None else 0
        counter = await start_counter(host_url, FLEET, args.seconds)
        run.send_signal(signal.SIGUSR1)
        cpu0 = {"run": _tree_cpu_seconds(pids), "counter": _cpu_seconds(counter.pid)}
        if broker_pid is not None:
            cpu0["broker"] = _cpu_seconds(broker_pid)
        w0 = time.monotonic()
        pinger = asyncio.create_task(_pings(host_url, n, args.ping_rate, args.seconds), name="bench-pinger")
        # CPU is read while the counter still runs (an ended process reads as having used none)
        await asyncio.sleep(max(0.0, args.seconds - 0.5 - (time.monotonic() - w0)))
        wall = time.monotonic() - w0
        if run.returncode is not None:
            raise Failure(
                f"bench: the run of {n} nodes ended during the measurement (exit {run.returncode}): "
                + " | ".join(err_lines[-5:])
            )
        cpu = {
            k: (_tree_cpu_seconds(pid) - cpu0[k]) / wall * 100
            for k, pid in (("run", pids), ("counter", [counter.pid]), ("broker", [broker_pid] if broker_pid else None))
            if pid is not None
        }
        pings = await pinger
        if "pinger_cpu_pct" in pings:
            cpu["pinger"] = pings["pinger_cpu_pct"]
        rss = sum(_rss_mb(p) for p in pids)
        run.send_signal(signal.SIGUSR2)
        counted = json.loads((await counter.communicate())[0].decode().strip().splitlines()[-1])
        await _marked(files, 10.0)  # every worker has written its measurement before it is stopped
        dropped_by_broker = None
        if drops is not None:
            await asyncio.sleep(1.2)  # the count of the window's last second (sys_interval 1)
            dropped_by_broker = drops.latest - dropped0
        t_stop = time.monotonic()
        run.send_signal(signal.SIGTERM)
        await asyncio.wait_for(run.wait(), 120)
        stop_s = time.monotonic() - t_stop
    finally:
        if drops is not None:
            drops.close()
        if run.returncode is None:
            run.kill()
            await run.wait()
        await asyncio.gather(err_task, *(t for t in (out_task,) if t is not None), return_exceptions=True)
    own_marks = []
    for f in files:
        records = [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []
        marks = [r for r in records if r.get("what") == "mark"]
        if not marks:
            kinds = sorted({str(r.get("what")) for r in records}) if f.exists() else "no file"
            raise Failure(
                f"bench: the run wrote no measurement ({f}: {kinds}): {' | '.join((err_lines or out_lines)[-5:])}"
            )
        own_marks.append(marks[-1])
    own = merge_marks(own_marks)
    hz = profile.rates.telemetry_hz
    due = n * hz * counted["seconds"]
    per_node = counted["per_node"]
    tracebacks = sum("Traceback" in line for line in err_lines + out_lines)
    return {
        "nodes": n,
        "profile": profile.name,
        "seconds": round(counted["seconds"], 1),
        "startup_s": round(startup, 1),
        "stop_s": round(stop_s, 1),
        "ticks_per_s": round(own["ticks"] / own["seconds"], 1),
        "tick_late_ms": own["tick_late_ms"],
        "periods_late": own["periods_late"],
        "loop_lag_ms": own["loop_lag_ms"],
        "gc_ms": own["gc_ms"],
        "telemetry": {
            "due_per_s": round(due / counted["seconds"]),
            "received_per_s": round(counted["received"] / counted["seconds"]),
            "received": counted["received"],
            "due": round(due),
            "share": round(counted["received"] / due, 5) if due else 1.0,
            "damaged": counted["damaged"],
            "silent_nodes": n - len(per_node),
            # the run's own count over its window (slightly longer than the counter's): what it
            # owed, handed to the link and dropped itself (a frame lost beyond it was lost after)
            "sent_by_run": own["telemetry"]["sent"],
            "due_by_run": own["telemetry"].get("due"),
            "dropped_by_run": own["telemetry"].get("dropped"),
            # messages the bench's broker dropped for a subscriber that was behind (the counter's,
            # or another's), from just before the window to a second after it; None on --broker
            "dropped_by_broker": dropped_by_broker,
        },
        "samples_per_frame": profile.rates.samples_per_frame,
        "publish_per_s_per_core": round(own["telemetry"]["sent"] / own["seconds"] / (cpu["run"] / 100))
        if cpu.get("run")
        else None,
        "ping": pings,
        "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
        "rss_mb": round(rss, 1),
        "rss_mb_per_1000": round(rss / n * 1000, 1),
        "run_stderr_tracebacks": tracebacks,
        "run_fell_behind": any("falling behind" in line for line in err_lines + out_lines),
        "processes": args.processes,
        "link": link_of(url),
    }


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| nodes | profile (processes) | link | ticks/s | tick late p50 / p99 / max ms | telemetry received / due per s | lost (run dropped / broker dropped) | silent "
        "| ping p50 / p99 ms (lost) | CPU run / broker / counter / pinger % | RSS MB per 1,000 | start-up s | stop s |"
    )
    rows = [head, "|" + "---|" * 13]
    for r in results:
        t, p, c = r["telemetry"], r["ping"], r["cpu_pct"]
        late = r["tick_late_ms"]
        lost = max(0, t["due"] - t["received"])
        rows.append(
            f"| {r['nodes']:,} | {r['profile']} ({r.get('processes', 1)}) | {r.get('link', 'tcp')} | {r['ticks_per_s']:,.0f} | {late['p50']:.1f} / {late['p99']:.1f} / {late['max']:.1f} "
            f"| {t['received_per_s']:,} / {t['due_per_s']:,} ({t['share']:.2%}) | {lost:,} ({t.get('dropped_by_run') or 0:,} / {_count(t.get('dropped_by_broker'))}) | {t['silent_nodes']} "
            f"| {p.get('p50_ms', 0):.1f} / {p.get('p99_ms', 0):.1f} ({p['lost']} of {p['sent']}) "
            f"| {c.get('run', 0):.0f} / {c.get('broker', float('nan')):.0f} / {c.get('counter', 0):.0f} / {c.get('pinger', 0):.0f} "
            f"| {r['rss_mb_per_1000']:.0f} | {r['startup_s']:.1f} | {r['stop_s']:.1f} |"
        )
    return "\n".join(rows)


def report(out: dict[str, Any]) -> str:
    """The whole bench as markdown: the fleet table, then the broker's ceiling, codec and soak."""
    lines = [table(out["results"])] if out["results"] else []
    ceiling = out.get("ceiling")
    if ceiling:
        lines += [
            "",
            f"Broker ceiling (one connection publishing {ceiling['written_per_s']:,} telemetry frames/s over "
            f"{ceiling.get('link', 'tcp').upper()}, one subscriber): {ceiling['received_per_s']:,} frames/s delivered, broker CPU "
            f"{ceiling['broker_cpu_pct']}%.",
        ]
        for r in out["results"]:
            if r.get("ceiling_per_publish_core"):
                lines.append(
                    f"{r['nodes']:,} nodes: {r['publish_per_s_per_core']:,} frames/s per core of the run "
                    f"(all its work included); the broker's ceiling is {r['ceiling_per_publish_core']:.2f}x that."
                )
    codec = out.get("codec")
    if codec:
        lines += ["", f"| codec, {codec['frame_bytes']}-byte telemetry frame | us/frame |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in codec["us_per_frame"].items()]
        lines.append(
            f"\nencode {codec['encode_vs_floor']}x, decode {codec['decode_vs_floor']}x, fleet path "
            f"{codec['fleet_path_vs_floor']}x the struct floor."
        )
    for soak in out.get("soak", []):
        lines.append(
            f"\nsoak-24h at the {soak['rates']}'s rates: {soak['simulated_s']:,.0f} simulated s in {soak['wall_s']:.1f} s "
            f"({soak['speedup']:,.0f}x real time), {soak['frames']:,} frames"
        )
    return "\n".join(lines)


async def cmd_bench(args: argparse.Namespace) -> int:
    try:
        counts = [int(x) for x in args.nodes.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--nodes {args.nodes!r}: give node counts separated by commas, e.g. 1000,10000") from None
    if not counts or any(not 1 <= n <= 100_000 for n in counts):
        raise BadInput(f"--nodes {args.nodes!r}: each count must be within 1..100000")
    from ..profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        raise BadInput(str(e)) from None
    from . import bench_parts

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    results = []
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="mcm-bench-") as tmp:
        work = Path(tmp)
        for part in [p for p in args.parts if p in ("fleet", "ceiling")]:
            for n in counts if part == "fleet" else [0]:
                broker = None
                url = host_url = args.broker
                if url is None:
                    # a second of the fleet's telemetry held for a subscriber that is behind, as
                    # broker-config does (the ceiling's flood: 10,000 nodes' worth)
                    queued = queued_for_consumer(n or 10_000, profile.rates.telemetry_hz)
                    broker = Broker(work, tls=args.link == "tls", queued=queued)
                    await broker.start()
                    url, host_url = broker.fleet_url, broker.url
                pid = broker.proc.pid if broker is not None and broker.proc is not None else None
                try:
                    if part == "fleet":
                        say(
                            f"bench: {n} nodes of {args.profile} on {url}: start-up, {args.warmup:g} s warm-up, "
                            f"{args.seconds:g} s measured ..."
                        )
                        results.append(await measure(n, args, url, pid, work, host_url))
                    else:
                        seconds = min(args.seconds, 20.0)
                        say(f"bench: the broker's ceiling on {url}: one connection publishing for {seconds:g} s ...")
                        out["ceiling"] = await bench_parts.broker_ceiling(url, seconds, pid, host_url=host_url)
                finally:
                    if broker is not None:
                        await broker.stop()
    if "codec" in args.parts:
        say("bench: codec cost per frame ...")
        out["codec"] = bench_parts.codec_costs()
    if "soak" in args.parts:
        say(f"bench: soak-24h in virtual time, and its first {OWN_RATES_SOAK_S} s at the profile's own rates ...")
        out["soak"] = [
            await bench_parts.soak_speedup(),
            await bench_parts.soak_speedup(own_rates=True, duration_s=OWN_RATES_SOAK_S),
        ]
    out["results"] = results
    ceiling = out.get("ceiling")
    if ceiling:
        for r in results:
            per_core = r["publish_per_s_per_core"]
            r["ceiling_per_publish_core"] = round(ceiling["received_per_s"] / per_core, 2) if per_core else None
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")  # noqa: ASYNC240 - after the measurements
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        print(report(out), flush=True)
    bad = [r for r in results if r["run_stderr_tracebacks"]]
    return EXIT_FAILURE if bad else EXIT_OK
