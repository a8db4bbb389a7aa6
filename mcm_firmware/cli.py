"""``mcm-emu``: run emulated nodes, talk to them, watch them, check profiles.

Exit codes: 0 success; 2 bad usage or bad input (the message names what is wrong); 1 a runtime
failure such as a timeout or an unreachable broker (one line, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from . import __version__
from .tasks import cancel_and_wait

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


class Failure(Exception):
    """A runtime failure: printed as one line, exit 1."""


class BadInput(Exception):
    """Bad input found after argument parsing: printed as one line, exit 2."""


# --- argument types -------------------------------------------------------------------------------


def _broker_url(text: str) -> str:
    from .transport.mqtt import parse_broker_url

    try:
        parse_broker_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _serial_port(text: str) -> str:
    from .transport.serial import parse_port_url

    try:
        parse_port_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _fuzz_target(text: str) -> str:
    from .target import EMULATED, parse_target

    if text != EMULATED:
        try:
            parse_target(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).replace("--mcm-target", "--target")) from None
    return text


def _fleet(text: str) -> str:
    from .transport import check_fleet_name

    try:
        return check_fleet_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bounded(kind: Callable[[str], Any], lo: float, hi: float, what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a {'whole number' if kind is int else 'number'}, got {text!r}") from None
        if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
            raise argparse.ArgumentTypeError(f"{what} must be within {lo:g}..{hi:g}, got {text}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    from .host.commands import COMMANDS

    p = argparse.ArgumentParser(prog="mcm-emu", description="Emulated MCM management controllers.")
    p.add_argument("--version", action="version", version=f"mcm-emu {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run emulated nodes", description=(
        "Run emulated nodes. Without --broker an MQTT broker is embedded in the process."))
    run.add_argument("--nodes", type=_bounded(int, 1, 100_000, "--nodes"), default=8)
    run.add_argument("--profile", default="colossus-mcm", help="profile name or path to a TOML file")
    run.add_argument("--fleet", type=_fleet, default="default")
    run.add_argument("--broker", type=_broker_url, default=None, help="mqtt://HOST[:PORT] of an external broker")
    run.add_argument("--embedded-port", type=_bounded(int, 1, 65535, "--embedded-port"), default=1883)
    run.add_argument("--duration", type=_bounded(float, 0.001, 1e9, "--duration"), default=None,
                     help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    run.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1, "--seed"), default=0)
    run.add_argument("--speed", type=_bounded(float, 0.01, 10_000, "--speed"), default=1.0,
                     help="clock speed relative to real time")
    run.add_argument("--first-id", type=_bounded(int, 0, 2**32 - 1, "--first-id"), default=0,
                     help="node id of the first node")
    run.add_argument("--workload", choices=["idle", "steady", "training", "inference", "mixed"],
                     default="steady", help="what the dice run; mixed cycles through the four by node")
    run.add_argument("--record", metavar="FILE", default=None,
                     help="keep every frame of the fleet in FILE (.jsonl.gz, see docs/record.md)")
    run.add_argument("--serial", type=_serial_port, action="append", default=None, metavar="PORT",
                     help="nodes talk MCTP over serial instead of MQTT: 'pty' (a pseudo-terminal per "
                          "node), a device path or URL (once per node, or once for all: one link, "
                          "one EID per node); options ?baud=N&mtu=N")
    run.add_argument("--rig", action="append", default=None, metavar="NODE=RIG[@PORT]",
                     help="node NODE takes the sensors and actuators of rig profile RIG from a rig "
                          "on PORT (default pty: a new pseudo-terminal, its path printed)")
    run.add_argument("--serial-mux", action="store_true",
                     help="with --serial pty: all nodes on one pseudo-terminal, told apart by EID")
    run.add_argument("--summary-interval", type=_bounded(float, 0.1, 3600, "--summary-interval"), default=5.0,
                     help="seconds between summary lines when stdout is not a terminal")

    ctl = sub.add_parser("ctl", help="send a command to a node", description=(
        "Send a command to one node and print its reply. Commands: "
        + "; ".join(f"{c.usage} ({c.help})" for c in COMMANDS.values())))
    _client_options(ctl)
    ctl.add_argument("--timeout", type=_bounded(float, 0.01, 3600, "--timeout"), default=2.0)
    ctl.add_argument("--retries", type=_bounded(int, 0, 100, "--retries"), default=2)
    ctl.add_argument("node", type=_bounded(int, 0, 2**32 - 1, "NODE"), metavar="NODE")
    ctl.add_argument("op", choices=sorted(COMMANDS), metavar="COMMAND")
    ctl.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")

    mon = sub.add_parser("monitor", help="print every frame of a fleet, decoded")
    _client_options(mon)
    mon.add_argument("--node", type=_bounded(int, 0, 2**32 - 1, "--node"), default=None)
    mon.add_argument("--count", type=_bounded(int, 1, 2**63, "--count"), default=None)
    mon.add_argument("--duration", type=_bounded(float, 0.001, 1e9, "--duration"), default=None)

    sc = sub.add_parser("scenario", help="run fault scenarios in deterministic virtual time")
    ssub = sc.add_subparsers(dest="scenario_command", required=True, metavar="ACTION")
    ssub.add_parser("list", help="the shipped scenarios")
    sval = ssub.add_parser("validate", help="check scenario files without running them")
    sval.add_argument("paths", nargs="+", metavar="FILE|NAME")
    srun = ssub.add_parser("run", help="run a scenario and check its expectations", description=(
        "Run a scenario in virtual time (as fast as the CPU allows) and print a digest of the full "
        "trace; exit 1 naming every failed expectation. With --realtime it runs on real time over "
        "the MQTT broker given with --broker, so that fleet software can watch it."))
    srun.add_argument("scenario", metavar="FILE|NAME")
    srun.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1, "--seed"), default=None)
    srun.add_argument("--report", metavar="DIR", default=None, help="write summary.json, plots and index.html")
    srun.add_argument("--record", metavar="FILE", default=None, help="keep every frame in FILE (.jsonl.gz)")
    srun.add_argument("--realtime", action="store_true", help="run on real time over --broker")
    srun.add_argument("--broker", type=_broker_url, default=None)
    srun.add_argument("--speed", type=_bounded(float, 0.01, 10_000, "--speed"), default=1.0,
                      help="with --realtime: clock speed relative to real time")
    srun.add_argument("--json", action="store_true", help="print the summary as JSON")

    rep = sub.add_parser("replay", help="publish a recording again")
    rep.add_argument("file", metavar="FILE")
    rep.add_argument("--broker", type=_broker_url, default=DEFAULT_BROKER)
    rep.add_argument("--speed", type=_bounded(float, 0.01, 1e6, "--speed"), default=1.0)
    rep.add_argument("--fleet", type=_fleet, default=None, help="publish under this fleet name instead")

    fz = sub.add_parser("fuzz", help="fuzz a live node over its transport", description=(
        "Send generated valid and malformed frames to a node, judge every answer, shrink each "
        "failure to a minimal frame sequence. Exit 1 when a failure is found."))
    fz.add_argument("--target", type=_fuzz_target, default="emulated", metavar="URL",
                    help="emulated (an in-process node), mqtt://HOST:PORT/NODE[?fleet=F], serial://PORT?node=N")
    fz.add_argument("--duration", type=_bounded(float, 0.1, 7 * 86400, "--duration"), default=60.0)
    fz.add_argument("--seed", type=_bounded(int, 0, 2**32 - 1, "--seed"), default=0)
    fz.add_argument("--report", metavar="DIR", default=None,
                    help="write summary.json, coverage.png and per failure its frames and a pytest file")
    fz.add_argument("--timeout", type=_bounded(float, 0.05, 600, "--timeout"), default=2.0,
                    help="seconds to wait for the node's answers to a case")
    fz.add_argument("--json", action="store_true", help="print the summary as JSON")

    prof = sub.add_parser("profiles", help="list, show or validate hardware profiles")
    psub = prof.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    psub.add_parser("list", help="the profiles found")
    show = psub.add_parser("show", help="one profile, validated, as JSON")
    show.add_argument("name")
    val = psub.add_parser("validate", help="check profile files")
    val.add_argument("paths", nargs="+", metavar="PATH")
    return p


def _client_options(p: argparse.ArgumentParser) -> None:
    link = p.add_mutually_exclusive_group()
    link.add_argument("--broker", type=_broker_url, default=DEFAULT_BROKER)
    link.add_argument("--serial", type=_serial_port, default=None, metavar="PORT",
                      help="talk to the node(s) on a serial port instead: a device path, the path "
                           "printed by run --serial pty, socket://HOST:PORT, rfc2217://HOST:PORT; "
                           "options ?baud=N&mtu=N")
    p.add_argument("--fleet", type=_fleet, default="default")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


# --- profiles -----------------------------------------------------------------------------------


def cmd_profiles(args: argparse.Namespace) -> int:
    from .profile import ProfileError, list_profiles, load_profile, load_profile_file

    if args.profiles_command == "list":
        for name, path in list_profiles().items():
            try:
                prof = load_profile_file(path)
                print(f"{name:<20} {prof.description}")
            except ProfileError as e:
                print(f"{name:<20} INVALID: {e}")
        return EXIT_OK
    if args.profiles_command == "show":
        try:
            prof = load_profile(args.name)
        except ProfileError as e:
            raise BadInput(str(e)) from None
        print(json.dumps(prof.model_dump(), indent=2))
        return EXIT_OK
    bad = 0
    for path in args.paths:
        try:
            prof = load_profile_file(path)
            print(f"{path}: ok ({prof.name})")
        except ProfileError as e:
            print(str(e), file=sys.stderr)
            bad += 1
    return EXIT_USAGE if bad else EXIT_OK


# --- run ----------------------------------------------------------------------------------------


async def cmd_run(args: argparse.Namespace) -> int:
    from .clock import ScaledClock
    from .profile import ProfileError, load_profile
    from .runtime.fleet import Fleet
    from .transport import TransportError, transport_factory
    from .transport.broker import EmbeddedBroker, PortInUse

    try:
        profile = load_profile(args.profile)
    except ProfileError as e:
        raise BadInput(str(e)) from None
    if args.serial:
        return await _run_serial(args, profile)
    if args.serial_mux:
        raise BadInput("--serial-mux goes with --serial")
    broker = None
    url = args.broker
    if url is None:
        broker = EmbeddedBroker(port=args.embedded_port)
        try:
            await broker.start()
        except PortInUse as e:
            raise Failure(f"{e}: pass --embedded-port PORT for another port, or --broker URL to use a running broker") from None
        except TransportError as e:
            raise Failure(str(e)) from None
        url = broker.url
        print(f"mcm-emu {__version__}: embedded MQTT broker at {url} "
              "(for large fleets run Mosquitto and pass --broker)", flush=True)
    factory = transport_factory(url)
    probe = factory(f"mcm-probe-{uuid.uuid4().hex[:8]}")
    try:
        await probe.connect()
    except TransportError as e:
        if broker:
            await broker.stop()
        raise Failure(str(e)) from None
    await probe.close()

    clock = ScaledClock(args.speed)
    fleet = Fleet.uniform(nodes=args.nodes, profile=profile, first_id=args.first_id, fleet=args.fleet,
                          transport_factory=factory, clock=clock, seed=args.seed)
    fleet.set_workload(args.workload)
    print(f"running {args.nodes} nodes (ids {args.first_id}..{args.first_id + args.nodes - 1}) "
          f"of {profile.name} in fleet {args.fleet!r} on {url}; topics mcm/v1/{args.fleet}/<node>/...",
          flush=True)
    recorder = None
    if args.record:
        recorder = await _start_recorder(factory, args.fleet, args.record, clock)
    try:
        await _serve(fleet, args)
    finally:
        if recorder is not None:
            await recorder.stop()
            print(f"recorded {recorder.writer.frames} frames to {args.record}", flush=True)
        if broker:
            await broker.stop()
    return EXIT_OK


def _rig_drivers(fleet: Any, specs: list[str] | None) -> list[Any]:
    """``NODE=RIG[@PORT]`` options as rig drivers (not started); BadInput names a bad one."""
    from .profile import ProfileError
    from .profile.rig import load_rig_profile
    from .runtime.rig import RigDriver

    drivers = []
    for spec in specs or []:
        node_text, eq, rest = spec.partition("=")
        rig_name, _, port = rest.partition("@")
        if not eq or not node_text.isdigit() or not rig_name:
            raise BadInput(f"--rig {spec!r}: expected NODE=RIG[@PORT], e.g. 3=bench-tc-valve@pty")
        node = fleet.nodes.get(int(node_text))
        if node is None:
            raise BadInput(f"--rig {spec!r}: node {node_text} is not in this fleet")
        if any(d.node is node for d in drivers):
            raise BadInput(f"--rig {spec!r}: node {node_text} already has a rig")
        try:
            drivers.append(RigDriver(node, load_rig_profile(rig_name), port or "pty"))
        except ProfileError as e:
            raise BadInput(f"--rig {spec!r}: {e}") from None
        except ValueError as e:
            raise BadInput(f"--rig {spec!r}: {e}") from None
    return drivers


async def _serve(fleet: Any, args: argparse.Namespace) -> None:
    """Run ``fleet`` until SIGINT / SIGTERM or ``--duration``, showing it; then stop every node."""
    from .transport import TransportError

    rigs = _rig_drivers(fleet, args.rig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    started = []
    display = _Display(fleet, interval=args.summary_interval)
    try:
        for rig in rigs:
            try:
                await rig.start()
            except TransportError as e:
                raise Failure(f"rig of node {rig.node.node_id}: {e}") from None
            started.append(rig)
            print(f"rig: node {rig.node.node_id} ({rig.rig.name}) at {rig.path or rig.port.spec.url}", flush=True)
        waiter = asyncio.create_task(stop.wait(), name="run-stop")
        shown = asyncio.create_task(display.run(), name="run-display")
        await asyncio.wait({waiter, shown}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        await cancel_and_wait([waiter, shown])
    finally:
        display.close()
        for rig in started:
            await rig.stop()
        await fleet.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(f"stopped {len(fleet.nodes)} nodes (DEATH published)", flush=True)


async def _run_serial(args: argparse.Namespace, profile: Any) -> int:
    """Nodes on serial links: one pty each, one port each, or all on one port by EID."""
    from .clock import ScaledClock
    from .runtime.fleet import Fleet
    from .transport import TransportError
    from .transport.serial import plan_node_links

    if args.broker is not None or args.record:
        raise BadInput("--serial replaces the MQTT link: --broker and --record do not go with it")
    ids = list(range(args.first_id, args.first_id + args.nodes))
    try:
        plan = plan_node_links(args.serial, ids, mux=args.serial_mux)
    except ValueError as e:
        raise BadInput(str(e)) from None
    links = list({id(p.link): p.link for p in plan}.values())
    try:
        for link in links:
            await link.open()
    except TransportError as e:
        for link in links:
            await link.close()
        raise Failure(str(e)) from None
    clock = ScaledClock(args.speed)
    fleet = Fleet.uniform(nodes=args.nodes, profile=profile, first_id=args.first_id, fleet=args.fleet,
                          transport_factory=None, clock=clock,
                          seed=args.seed, node_transports={p.node: p.factory(args.fleet) for p in plan})
    fleet.set_workload(args.workload)
    for p in plan:
        link = p.link
        rate = f"{link.spec.baud} baud" if link.spec.paced else "unpaced"
        print(f"serial: node {p.node} at {link.path or link.spec.url} (EID {p.eid}, {rate}, "
              f"MTU {link.spec.mtu})", flush=True)
    print(f"mcm-emu {__version__}: running {args.nodes} nodes of {profile.name} in fleet "
          f"{args.fleet!r} on serial links (MCTP over DSP0253)", flush=True)
    try:
        await _serve(fleet, args)
    finally:
        for link in links:
            await link.close()
            print(f"serial: {link.path or link.spec.url}: {link.summary()}", flush=True)
    return EXIT_OK


class _Recorder:
    """Subscribes to the fleet's topics and writes every frame to a recording."""

    def __init__(self, transport: Any, writer: Any, clock: Any) -> None:
        self.transport = transport
        self.writer = writer
        self.clock = clock
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        from .transport import TransportError

        try:
            while True:
                d = await self.transport.receive()
                self.writer.write(self.clock.now_ns(), d.address, d.payload, retain=d.retained)
        except TransportError:
            pass

    async def stop(self) -> None:
        await asyncio.sleep(0.2)  # the last DEATH frames
        if self.task is not None:
            await cancel_and_wait([self.task])
        await self.transport.close()
        self.writer.close()


async def _start_recorder(factory: Any, fleet: str, path: str, clock: Any) -> _Recorder:
    from .host.record import RecordWriter
    from .transport import Subscription, TransportError

    try:
        writer = RecordWriter(path, fleet=fleet, clock="real", started_ns=clock.now_ns(), source="mcm-emu run")
    except OSError as e:
        raise BadInput(f"--record {path}: {e.strerror or e}") from None
    tr = factory(f"mcm-recorder-{uuid.uuid4().hex[:8]}")
    try:
        await tr.connect()
        await tr.subscribe(Subscription(fleet))
    except TransportError as e:
        writer.close()
        raise Failure(str(e)) from None
    rec = _Recorder(tr, writer, clock)
    rec.task = asyncio.create_task(rec._run(), name="run-recorder")
    return rec


class _Display:
    """A live table on a terminal; plain summary lines otherwise."""

    def __init__(self, fleet: Any, *, interval: float) -> None:
        self.fleet = fleet
        self.interval = interval
        self.tty = sys.stdout.isatty()
        self._live: Any = None
        self._t0 = time.monotonic()

    def _rows(self) -> list[dict[str, Any]]:
        return list(self.fleet.summary())

    def _table(self) -> Any:
        from rich.table import Table

        rows = self._rows()
        table = Table(title=f"fleet {self.fleet.name}: {len(rows)} nodes, "
                            f"{time.monotonic() - self._t0:.0f} s", expand=False)
        for col in ("node", "state", "mode", "link", "Tmax °C", "power W", "clock MHz"):
            table.add_column(col, justify="right")
        for r in rows[:200]:
            table.add_row(str(r["node"]), r["state"], _mode(r["mode"]), r["link"], f"{r['temp_c']:.1f}",
                          f"{r['power_w']:.0f}", f"{r['clock_mhz']:.0f}")
        if len(rows) > 200:
            table.caption = f"... and {len(rows) - 200} more"
        return table

    async def run(self) -> None:
        if self.tty:
            from rich.live import Live

            self._live = Live(self._table(), refresh_per_second=2, transient=False)
            self._live.start()
            while True:
                await asyncio.sleep(0.5)
                self._live.update(self._table())
        while True:
            await asyncio.sleep(self.interval)
            rows = self._rows()
            stamp = f"t={time.monotonic() - self._t0:7.1f}s"
            if len(rows) <= 16:
                for r in rows:
                    print(f"{stamp} node={r['node']} state={r['state']} mode={_mode(r['mode'])} link={r['link']} "
                          f"Tmax={r['temp_c']:.1f}C power={r['power_w']:.0f}W clock={r['clock_mhz']:.0f}MHz",
                          flush=True)
            else:
                up = sum(r["link"] == "up" for r in rows)
                hot = max(r["temp_c"] for r in rows)
                kw = sum(r["power_w"] for r in rows) / 1e3
                print(f"{stamp} nodes={len(rows)} up={up} Tmax={hot:.1f}C power={kw:.1f}kW", flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _mode(value: int) -> str:
    from .protocol import CoolingMode

    return CoolingMode(int(value)).name


# --- ctl ----------------------------------------------------------------------------------------


async def cmd_ctl(args: argparse.Namespace) -> int:
    from .host.client import HostClient, HostError, NodeError, RequestTimeout
    from .host.commands import COMMANDS, UsageError
    from .protocol import Status
    from .transport import TransportError, transport_factory

    spec = COMMANDS[args.op]
    try:
        cmd_args = spec.parse(list(args.args))
    except UsageError as e:
        raise BadInput(f"ctl {spec.name}: {e}") from None
    transport = transport_factory(_link_url(args))(f"mcm-ctl-{uuid.uuid4().hex[:10]}")
    try:
        async with HostClient(transport, fleet=args.fleet, timeout=args.timeout, retries=args.retries) as host:
            t0 = time.perf_counter()
            try:
                resp = await host.request(args.node, spec.op, cmd_args)
            except NodeError as e:
                out = {"node": args.node, "ok": False, "status": e.response.status.name,
                       "message": e.response.message}
                _emit(args, out, text=str(e), stream=sys.stderr)
                return EXIT_USAGE if e.response.status in (Status.BAD_ARGUMENT, Status.UNKNOWN_OP,
                                                           Status.BAD_REQUEST) else EXIT_FAILURE
            rtt = time.perf_counter() - t0
    except RequestTimeout as e:
        raise Failure(str(e)) from None
    except (TransportError, HostError) as e:
        raise Failure(str(e)) from None
    out = spec.show(args.node, resp, rtt)
    _emit(args, out, text=spec.text(spec.name, out))
    return EXIT_OK


def _link_url(args: argparse.Namespace) -> str:
    return f"serial://{args.serial}" if args.serial else args.broker


def _emit(args: argparse.Namespace, obj: dict[str, Any], *, text: str, stream: Any = None) -> None:
    if args.json:
        print(json.dumps(obj), flush=True)
    else:
        print(text, file=stream or sys.stdout, flush=True)


# --- monitor ------------------------------------------------------------------------------------


async def cmd_monitor(args: argparse.Namespace) -> int:
    from .host.views import message_json, message_line
    from .protocol import FrameError, decode
    from .transport import Subscription, TransportError, transport_factory
    from .transport.topics import topic

    transport = transport_factory(_link_url(args))(f"mcm-mon-{uuid.uuid4().hex[:10]}")
    seen = 0
    try:
        await transport.connect()
        try:
            await transport.subscribe(Subscription(args.fleet, args.node, None))

            async def consume() -> None:
                nonlocal seen
                while args.count is None or seen < args.count:
                    d = await transport.receive()
                    seen += 1
                    try:
                        msg = decode(d.payload)
                    except FrameError as e:
                        obj = {"topic": topic(d.address), "node": d.address.node, "error": e.reason.name,
                               "detail": e.detail, "hex": d.payload[:64].hex()}
                        print(json.dumps(obj) if args.json else f"{d.address.node:>5} REJECTED  {e}", flush=True)
                        continue
                    if args.json:
                        obj = message_json(d.address, msg)
                        obj["retained"] = d.retained
                        print(json.dumps(obj), flush=True)
                    else:
                        print(message_line(d.address, msg), flush=True)

            try:
                await asyncio.wait_for(consume(), args.duration)
            except TimeoutError:
                pass
        finally:
            await transport.close()
    except TransportError as e:
        raise Failure(str(e)) from None
    return EXIT_OK


# --- scenario -------------------------------------------------------------------------------------


def cmd_scenario(args: argparse.Namespace) -> int:
    from .scenario import (ScenarioError, check_scenario, find_scenario, list_scenarios, load_scenario,
                           run_scenario)

    if args.scenario_command == "list":
        for name, path in list_scenarios().items():
            try:
                sc = load_scenario(path)
                first = sc.description.strip().splitlines()[0] if sc.description.strip() else ""
                print(f"{name:<22} {sc.fleet.nodes:>3} nodes {sc.duration_s:>8g} s  {first}")
            except ScenarioError as e:
                print(f"{name:<22} INVALID: {e}")
        return EXIT_OK
    if args.scenario_command == "validate":
        bad = 0
        for item in args.paths:
            try:
                path = find_scenario(item)
                sc = load_scenario(path)
                actions = check_scenario(sc, path=str(path))
                print(f"{item}: ok ({sc.name}: {sc.fleet.nodes} nodes, {sc.duration_s:g} s, "
                      f"{actions} timed actions, {len(sc.expect)} expectations)")
            except ScenarioError as e:
                print(str(e), file=sys.stderr)
                bad += 1
        return EXIT_USAGE if bad else EXIT_OK
    try:
        path = find_scenario(args.scenario)
        sc = load_scenario(path)
    except ScenarioError as e:
        raise BadInput(str(e)) from None
    if args.realtime and args.broker is None:
        raise BadInput("scenario run --realtime needs --broker URL")
    if args.broker is not None and not args.realtime:
        raise BadInput("--broker goes with --realtime (virtual-time runs use the in-process bus)")

    def progress(t: float) -> None:
        print(f"  t={t:9.1f} s", file=sys.stderr, flush=True)

    try:
        result = run_scenario(sc, seed=args.seed, path=str(path), record=args.record, realtime=args.realtime,
                              broker=args.broker, speed=args.speed,
                              progress=progress if (args.realtime and not args.json) else None)
    except ScenarioError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise Failure(f"{e.filename or ''}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - a transport failure in real time, a dead scheduler
        from .transport import TransportError

        if isinstance(e, TransportError):
            raise Failure(str(e)) from None
        raise
    index = None
    if args.report:
        from .scenario.report import write_report

        try:
            index = write_report(result, args.report)
        except OSError as e:
            raise BadInput(f"--report {args.report}: {e.strerror or e}") from None
    if args.json:
        from .scenario.report import summary

        out = summary(result)
        out.pop("figures", None)
        print(json.dumps(out))
    else:
        print(f"scenario {sc.name} (seed {result.seed}): {sc.fleet.nodes} nodes, {result.sim_s:g} s simulated "
              f"in {result.wall_s:.1f} s ({result.speedup:.0f}x), {result.frames} frames")
        for o in result.outcomes:
            print(f"  {'PASS' if o.passed else 'FAIL'}  {o.name}: {o.detail}")
        print(f"digest sha256:{result.digest}")
        if index is not None:
            print(f"report: {index}")
        if args.record:
            print(f"recording: {args.record}")
    failed = [o.name for o in result.outcomes if not o.passed]
    if failed:
        print("mcm-emu: failed expectations: " + "; ".join(failed), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def cmd_replay(args: argparse.Namespace) -> int:
    from .host.record import RecordError, read_record, replay
    from .transport import TransportError, transport_factory

    try:  # the whole file is checked before the first frame goes out
        header, frames = read_record(args.file)
        total = sum(1 for _ in frames)
    except RecordError as e:
        raise BadInput(str(e)) from None
    tr = transport_factory(args.broker)(f"mcm-replay-{uuid.uuid4().hex[:8]}")
    try:
        await tr.connect()
        try:
            sent = await replay(args.file, tr, speed=args.speed, fleet=args.fleet)
        finally:
            await tr.close()
    except RecordError as e:
        raise BadInput(str(e)) from None
    except TransportError as e:
        raise Failure(str(e)) from None
    print(f"replayed {sent} frames of fleet {args.fleet or header.get('fleet')!r} to {args.broker}", flush=True)
    if sent != total:
        raise Failure(f"{args.file}: {total - sent} of {total} frames were not replayed")
    return EXIT_OK


# --- entry point --------------------------------------------------------------------------------


async def cmd_fuzz(args: argparse.Namespace) -> int:
    from .fuzz import run_campaign
    from .fuzz.report import summary, write_report
    from .target import EMULATED, emulated_target, parse_target
    from .transport import TransportError, transport_factory

    last = [0.0]

    def progress(r: Any) -> None:
        if r.duration_s - last[0] >= 5 and not args.json:
            last[0] = r.duration_s
            print(f"t={r.duration_s:7.1f}s cases={r.cases} executions={r.executions} "
                  f"({r.executions_per_s:.0f}/s) coverage={r.cells} failures={len(r.findings)}", flush=True)

    async def campaign(target: Any) -> Any:
        tr = transport_factory(target.transport_url)(f"mcm-fuzz-{uuid.uuid4().hex[:8]}")
        return await run_campaign(tr, fleet=target.fleet, node=target.node, target=args.target,
                                  duration=args.duration, seed_value=args.seed, timeout=args.timeout,
                                  progress=progress)

    try:
        if args.target == EMULATED:
            async with emulated_target() as target:
                result = await campaign(target)
        else:
            target = parse_target(args.target)
            result = await campaign(target)
    except TransportError as e:
        raise Failure(str(e)) from None
    if args.report:
        try:
            write_report(result, args.report, node=target.node)
        except OSError as e:
            raise Failure(f"--report {args.report}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(summary(result)), flush=True)
    else:
        print(f"{result.executions} executions in {result.duration_s:.1f} s "
              f"({result.executions_per_s:.0f}/s), {result.cases} cases, {result.cells} coverage cells "
              f"(probe kind x outcome), {len(result.findings)} failure(s)", flush=True)
        for f in result.findings:
            print(f"FAIL {f.kind}: {f.detail}", flush=True)
            for p in f.frames:
                print(f"  {p.label} {p.frame.hex()}", flush=True)
        if args.report:
            print(f"report: {args.report}/summary.json", flush=True)
    return EXIT_FAILURE if result.findings else EXIT_OK


def _run_async(fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    return asyncio.run(fn(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        if args.command == "profiles":
            return cmd_profiles(args)
        if args.command == "scenario":
            return cmd_scenario(args)
        fn = {"run": cmd_run, "ctl": cmd_ctl, "monitor": cmd_monitor, "replay": cmd_replay,
              "fuzz": cmd_fuzz}[args.command]
        return _run_async(fn, args)
    except BadInput as e:
        print(f"mcm-emu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as e:
        print(f"mcm-emu: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
