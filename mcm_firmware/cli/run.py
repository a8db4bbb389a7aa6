"""``mcm-emu run``: emulated nodes on MQTT (an embedded broker when none is given) or serial links."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .. import __version__
from ..tasks import cancel_and_wait
from .common import (
    EXIT_OK,
    U32_MAX,
    BadInput,
    Failure,
    bounded,
    broker_url,
    fleet_name,
    frame_keys_option,
    key_ring,
    secured,
    security_options,
    serial_port,
)
from .display import Display, meter_line
from .redfish import redfish_options, redfish_service


class _Once(argparse.Action):
    """An option that takes one value refuses to be given twice (the last one silently won)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        given = set(getattr(namespace, "given_options", ()))
        if self.dest in given:
            before = getattr(namespace, self.dest)
            hint = (
                "a run has one profile; for a mixed fleet write a fleet file (--fleet-file, docs/fleet-file.md)"
                if self.dest == "profile"
                else "give it once"
            )
            parser.error(f"{option_string} given twice ({before!r}, then {values!r}): {hint}")
        namespace.given_options = frozenset(given | {self.dest})
        setattr(namespace, self.dest, values)


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run emulated nodes",
        description="Run emulated nodes. Without --broker an MQTT broker is embedded in the process. "
        "A fleet file (--fleet-file) says which nodes run which profile, workload and rig, on which "
        "broker or serial links (docs/fleet-file.md).",
    )
    run.set_defaults(given_options=frozenset())
    fleet = run.add_argument_group("fleet: which nodes, running what")
    fleet.add_argument(
        "--fleet-file",
        action=_Once,
        metavar="FILE",
        default=None,
        help="a TOML file of node ranges with their profiles, workloads and rigs, and the broker or serial "
        "links (docs/fleet-file.md); it replaces --nodes, --first-id, --profile, --workload, --rig, --serial "
        "and --serial-mux, and --fleet, --seed, --frame-keys and the broker options override its values",
    )
    fleet.add_argument(
        "--nodes",
        metavar="N",
        action=_Once,
        type=bounded(int, 1, 100_000, "--nodes"),
        default=8,
        help="how many nodes (default %(default)s)",
    )
    fleet.add_argument(
        "--first-id",
        metavar="N",
        action=_Once,
        type=bounded(int, 0, U32_MAX, "--first-id"),
        default=0,
        help="node id of the first node (default %(default)s)",
    )
    fleet.add_argument(
        "--profile",
        action=_Once,
        default="colossus-mcm",
        metavar="NAME|PATH",
        help="hardware profile of every node: a name ('mcm-emu profiles list') or a TOML file (default %(default)s)",
    )
    fleet.add_argument(
        "--workload",
        action=_Once,
        choices=["idle", "steady", "training", "inference", "mixed"],
        default="steady",
        help="what the dice run; mixed cycles through the four by node (default %(default)s)",
    )
    fleet.add_argument(
        "--fleet",
        metavar="NAME",
        action=_Once,
        type=fleet_name,
        default="default",
        help="the fleet's name, the topic level in mcm/v1/<fleet>/... (default '%(default)s')",
    )
    fleet.add_argument(
        "--seed",
        metavar="N",
        action=_Once,
        type=bounded(int, 0, U32_MAX, "--seed"),
        default=0,
        help="seed of every random process of the model (default %(default)s)",
    )
    fleet.add_argument(
        "--rig",
        action="append",
        default=None,
        metavar="NODE=RIG[@PORT]",
        help="node NODE takes the sensors and actuators of rig profile RIG from a rig "
        "on PORT (default pty: a new pseudo-terminal, its path printed); repeatable, once per node",
    )
    link = run.add_argument_group("broker and links")
    link.add_argument(
        "--broker",
        action=_Once,
        type=broker_url,
        default=None,
        metavar="URL",
        help="mqtt://HOST[:PORT] or mqtts://... of an external broker (default: none, a broker is embedded)",
    )
    link.add_argument(
        "--embedded-port",
        metavar="PORT",
        action=_Once,
        type=bounded(int, 1, 65535, "--embedded-port"),
        default=1883,
        help="port of the embedded broker, on 127.0.0.1 (default %(default)s)",
    )
    link.add_argument(
        "--connection",
        action=_Once,
        choices=["auto", "node", "carrier"],
        default="auto",
        help="on a broker: a connection per node (as real modules have), one carrier connection for all "
        "(plus one for telemetry), or auto: per node up to 100 nodes (default %(default)s)",
    )
    link.add_argument(
        "--source-addresses",
        action=_Once,
        metavar="auto|A-B|A,B,...",
        default="auto",
        help="local addresses per-node connections come from, node i from the (i mod k)th: one address "
        "reaches one broker port through its ephemeral ports only (28,232 by default); auto: one "
        "address while it has ports enough, else loopback addresses 127.0.0.2 ... for a loopback broker "
        "(default %(default)s)",
    )
    link.add_argument(
        "--allow-overlap",
        action="store_true",
        help="start even when nodes with the same ids answer on the broker (default: refuse)",
    )
    link.add_argument(
        "--serial",
        type=serial_port,
        action="append",
        default=None,
        metavar="PORT",
        help="nodes talk MCTP over serial instead of MQTT: 'pty' (a pseudo-terminal per "
        "node), a device path or URL (once per node, or once for all: one link, "
        "one EID per node); options ?baud=N&mtu=N (default: none, MQTT)",
    )
    link.add_argument(
        "--serial-mux",
        action="store_true",
        help="with --serial pty: all nodes on one pseudo-terminal, told apart by EID (default: one each)",
    )
    frame_keys_option(link)
    scale = run.add_argument_group("scale: large fleets (docs/performance.md)")
    scale.add_argument(
        "--shard",
        action=_Once,
        metavar="K/N",
        default=None,
        help="run the K-th of N equal slices of the node ids (K from 0); 'index/N' takes K from "
        "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or the ordinal at the end of HOSTNAME "
        "(a StatefulSet pod), so that N machines run one fleet; also MCM_EMU_SHARD=K/N (default: all ids)",
    )
    scale.add_argument(
        "--processes",
        metavar="P",
        action=_Once,
        type=bounded(int, 1, 256, "--processes"),
        default=1,
        help="spread the nodes over this many worker processes on this machine (default %(default)s)",
    )
    scale.add_argument(
        "--priority",
        action=_Once,
        choices=["auto", "realtime", "normal"],
        default="auto",
        help="scheduling of the emulator: a real-time priority where the OS grants it, as the controllers' "
        "RTOS has (auto), required (realtime), or not asked for (normal); default %(default)s",
    )
    out = run.add_argument_group("run and output")
    out.add_argument(
        "--duration",
        metavar="S",
        action=_Once,
        type=bounded(float, 0.001, 1e9, "--duration"),
        default=None,
        help="stop after this many seconds (default: until SIGINT/SIGTERM)",
    )
    out.add_argument(
        "--speed",
        metavar="X",
        action=_Once,
        type=bounded(float, 0.01, 10_000, "--speed"),
        default=1.0,
        help="clock speed relative to real time (default %(default)s)",
    )
    out.add_argument(
        "--summary-interval",
        metavar="S",
        action=_Once,
        type=bounded(float, 0.1, 3600, "--summary-interval"),
        default=5.0,
        help="seconds between summary lines when stdout is not a terminal (default %(default)s)",
    )
    out.add_argument(
        "--record",
        action=_Once,
        metavar="FILE",
        default=None,
        help="keep every frame of the fleet in FILE (.jsonl.gz, see docs/record.md; default: none)",
    )
    out.add_argument(
        "--capture",
        action=_Once,
        metavar="FILE.pcap",
        default=None,
        help="with --serial: keep every frame on the serial lines, both ways, in a pcap for Wireshark "
        "(one file per line when there are several: FILE-<first node>.pcap); see docs/wireshark.md "
        "(default: none)",
    )
    out.add_argument(
        "--metrics-port",
        metavar="PORT",
        action=_Once,
        type=bounded(int, 1, 65535, "--metrics-port"),
        default=None,
        help="serve Prometheus metrics on this port (names after dcgm-exporter's; docs/performance.md; default: none)",
    )
    out.add_argument(
        "--metrics-address",
        metavar="ADDRESS",
        action=_Once,
        default="127.0.0.1",
        help="address the metrics server listens on (default %(default)s)",
    )
    out.add_argument(
        "--metrics-detail",
        action=_Once,
        choices=["module", "die"],
        default="module",
        help="module: 21 series a node; die: 4 more a die (default %(default)s)",
    )
    out.add_argument(
        "--stats-file",
        action=_Once,
        metavar="FILE",
        default=None,
        help="measurements as JSON lines: each summary window, and on SIGUSR2 what happened since the "
        "last SIGUSR1 (or the start); the whole run at the end (with --processes, a file per worker: "
        "FILE's stem suffixed .0, .1 ...; default: none)",
    )
    security_options(run, nodes=True)
    redfish_options(run, port_default=None)
    run.set_defaults(func=cmd_run)


async def cmd_run(args: argparse.Namespace) -> int:
    from ..clock import ScaledClock
    from ..profile import ProfileError, load_profile
    from ..runtime.fleet import Fleet
    from ..transport import PerNodeLinks, TransportError, node_links
    from ..transport.broker import EmbeddedBroker, PortInUse

    layout = apply_fleet_file(args) if args.fleet_file else None
    profiles: dict[int, Any]
    if layout is None:
        try:
            profile = load_profile(args.profile)
        except ProfileError as e:
            raise BadInput(str(e)) from None
        args.node_ids = list(range(args.first_id, args.first_id + args.nodes))
        profiles = dict.fromkeys(args.node_ids, profile)
    else:
        profiles = layout.profiles
        args.node_ids = sorted(profiles)
    if args.serial_mux and not args.serial:
        raise BadInput("--serial-mux goes with --serial")
    if args.capture and not args.serial:
        raise BadInput("--capture goes with --serial (on MQTT: --record, then 'mcm-emu record to-pcap')")
    if args.serial and (args.broker is not None or args.record):
        raise BadInput("--serial replaces the MQTT link: --broker and --record do not go with it")
    if args.broker is not None:
        args.broker = secured(args.broker, args)
        if args.node_secret and not args.username:
            raise BadInput(
                "--node-secret needs --username and --password-file too: the run's own checks connect as a host"
            )
        if args.node_secret and args.connection == "carrier":
            raise BadInput(
                "--node-secret gives every node a connection of its own: it does not go with --connection carrier"
            )
        if args.node_secret:
            args.connection = "node"
        if args.cert and "{client_id}" in args.cert and not args.username:
            raise BadInput(
                "--cert with {client_id} needs --username and --password-file too: the run's own checks connect "
                "as that host user, with its certificate"
            )
    elif any(getattr(args, k) for k in ("username", "password_file", "node_secret", "cafile", "cert", "key")):
        raise BadInput("broker security options are for an external broker (--broker); the embedded one is open")
    if args.redfish_port is not None and (args.serial or args.processes > 1):
        raise BadInput(
            "--redfish-port serves a fleet on MQTT from one process: with --serial or --processes, "
            "run 'mcm-emu redfish --broker URL' beside it"
        )
    if args.processes > 1:
        return await run_processes(args, layout)
    ids = shard_ids(args)
    if args.broker is not None and args.connection != "carrier":  # a certificate per node: each there, a pair
        from ..transport.security import check_client_certificates

        try:
            check_client_certificates(args.broker, [f"mcm-{args.fleet}-{i}" for i in ids])
        except ValueError as e:
            raise BadInput(str(e)) from None
    ring = key_ring(args)  # a key file that cannot be used is refused before anything starts
    sched = scheduling(args.priority)
    gc.disable()  # what start-up builds lives for the whole run: frozen once up (_up_and_settled)
    broker = None
    url = args.broker
    if args.serial:
        urls = [f"serial://{port}" for port in args.serial]
    else:
        if url is None:
            broker = EmbeddedBroker(port=args.embedded_port)
            try:
                await broker.start()
            except PortInUse as e:
                raise Failure(
                    f"{e}: pass --embedded-port PORT for another port, or --broker URL to use a running broker"
                ) from None
            except TransportError as e:
                raise Failure(str(e)) from None
            url = broker.url
            print(
                f"mcm-emu {__version__}: embedded MQTT broker at {url} "
                "(for large fleets run Mosquitto and pass --broker)",
                flush=True,
            )
        urls = [url]
        if not args.allow_overlap:
            await refuse_overlap(url, args.fleet, ids, broker is not None, ring=ring)
    try:
        try:
            links = node_links(
                urls,
                ids,
                fleet=args.fleet,
                mux=args.serial_mux,
                connection=args.connection,
                sources=args.source_addresses,
            )
        except ValueError as e:
            raise BadInput(str(e)) from None
        if isinstance(links, PerNodeLinks):
            ensure_descriptors(len(ids), "--connection carrier")
        clock = ScaledClock(args.speed)
        fleet = Fleet(
            members=[(i, profiles[i]) for i in ids],
            fleet=args.fleet,
            transport_factory=None,
            links=links,
            clock=clock,
            seed=args.seed,
            frame_keys=ring,
        )
        if layout is None:
            fleet.set_workload(args.workload)
        else:
            set_workloads(fleet, layout)
        try:
            await links.open()
        except TransportError as e:
            raise Failure(str(e)) from None
        try:
            if args.capture:
                try:
                    files = links.capture(args.capture)
                except OSError as e:
                    raise BadInput(f"--capture {args.capture}: {e.strerror or e}") from None
                print(
                    f"serial: capturing to {', '.join(files)} (open with the plugin of 'mcm-emu wireshark')", flush=True
                )
            for line in links.describe():
                print(line, flush=True)
            if args.serial:
                print(
                    f"mcm-emu {__version__}: running {len(ids)} nodes of {profile_names(fleet)} in fleet "
                    f"{args.fleet!r} on serial links (MCTP over DSP0253)",
                    flush=True,
                )
            else:
                print(
                    f"running {len(ids)} nodes (ids {id_ranges(ids)}) of {profile_names(fleet)} in fleet "
                    f"{args.fleet!r} on {url}; topics mcm/v1/{args.fleet}/<node>/...; {sched}",
                    flush=True,
                )
            recorder = await _start_recorder(str(url), args.fleet, args.record, clock) if args.record else None
            try:
                async with (
                    redfish_service(args, str(url), args.fleet)
                    if args.redfish_port is not None
                    else contextlib.nullcontext()
                ):
                    await serve(fleet, args, layout)
            finally:
                if recorder is not None:
                    await recorder.stop()
                    print(f"recorded {recorder.writer.frames} frames to {args.record}", flush=True)
        finally:
            await links.close()
            for line in links.summary():
                print(line, flush=True)
    finally:
        if broker is not None:
            await broker.stop()
    return EXIT_OK


LAYOUT_OPTIONS = {
    "nodes": "--nodes",
    "first_id": "--first-id",
    "profile": "--profile",
    "workload": "--workload",
    "rig": "--rig",
    "serial": "--serial",
    "serial_mux": "--serial-mux",
}
"""Options a fleet file replaces: with --fleet-file they are refused."""
OVERRIDES = {
    "fleet": ("--fleet", ("fleet",)),
    "seed": ("--seed", ("seed",)),
    "frame_keys": ("--frame-keys", ("frame_keys",)),
    "broker": ("--broker", ("broker", "url")),
    "embedded_port": ("--embedded-port", ("broker", "embedded_port")),
    "connection": ("--connection", ("broker", "connection")),
    "source_addresses": ("--source-addresses", ("broker", "source_addresses")),
    "username": ("--username", ("broker", "username")),
    "password_file": ("--password-file", ("broker", "password_file")),
    "node_secret": ("--node-secret", ("broker", "node_secret")),
    "cafile": ("--cafile", ("broker", "cafile")),
    "cert": ("--cert", ("broker", "cert")),
    "key": ("--key", ("broker", "key")),
}
"""Options that, given with --fleet-file, override the file's value (said in one line)."""


def _given(args: argparse.Namespace, dest: str) -> bool:
    """Whether an option was on the command line: counted by its action (_Once), or, for the
    options without one, a value other than their default (None, False)."""
    if dest in getattr(args, "given_options", ()):
        return True
    return dest in UNCOUNTED and bool(getattr(args, dest, None))


UNCOUNTED = frozenset(
    {"rig", "serial", "serial_mux", "frame_keys", "username", "password_file", "node_secret", "cafile", "cert", "key"}
)
"""Options of run whose action is not _Once (appended, flags, or defined in common.py)."""


def apply_fleet_file(args: argparse.Namespace) -> Any:
    """Read ``--fleet-file``: BadInput lists every problem of the file (file:line: key 'k': ...)
    or names the options that it replaces; the file's fleet, seed, keys, broker and serial links
    go into ``args`` unless the command line gives them (then that wins, said in one line)."""
    from urllib.parse import urlsplit

    from ..profile import ProfileError
    from ..profile.fleet_file import load_fleet_file
    from ..transport import check_fleet_name
    from ..transport.mqtt import parse_broker_url
    from ..transport.serial import parse_port_url

    replaced = [opt for dest, opt in LAYOUT_OPTIONS.items() if _given(args, dest)]
    if replaced:
        raise BadInput(
            f"{', '.join(replaced)} {'does' if len(replaced) == 1 else 'do'} not go with --fleet-file: "
            f"the fleet file {args.fleet_file} lays out the nodes (ids, profiles, workloads, rigs, serial links)"
        )
    try:
        layout = load_fleet_file(
            args.fleet_file,
            {"broker_url": parse_broker_url, "serial_port": parse_port_url, "fleet_name": check_fleet_name},
        )
    except ProfileError as e:
        raise BadInput("\nmcm-emu: error: ".join(e.lines())) from None
    spec = layout.spec
    if spec.serial is not None:
        for dest in ("broker", "embedded_port", "connection", "source_addresses"):
            if _given(args, dest):
                raise BadInput(
                    f"{OVERRIDES[dest][0]} does not go with {layout.where('serial')}: the fleet file puts its "
                    "nodes on serial links"
                )
        args.serial = spec.serial.ports
        args.serial_mux = spec.serial.mux
    for dest, (option, loc) in OVERRIDES.items():
        value: Any = spec
        for part in loc:
            value = getattr(value, part, None) if value is not None else None
        if value is None:
            continue
        if not _given(args, dest):
            setattr(args, dest, value)
            continue
        mine = getattr(args, dest)
        if dest == "broker":  # a worker of --processes gets the URL with the security options in it
            same = urlsplit(str(mine))._replace(query="") == urlsplit(str(value))._replace(query="")
        else:
            same = str(mine) == str(value)
        if not same:
            line = layout.line(*loc)
            print(
                f"fleet file: {option} {mine} is used instead of {'.'.join(loc)} = {value!r} "
                f"({layout.path}{f':{line}' if line else ''})",
                flush=True,
            )
    return layout


def set_workloads(fleet: Any, layout: Any) -> None:
    """Each node's workload and load from its ``[[nodes]]`` entry (``mixed``: the four in turn
    within the entry)."""
    from ..plant.workload import Workload

    kinds = list(Workload)
    for entry in layout.spec.nodes:
        for k, nid in enumerate(entry.ids):
            if nid not in fleet.nodes:
                continue  # another shard's
            kind = kinds[k % len(kinds)] if entry.workload == "mixed" else Workload[entry.workload.upper()]
            shard, row = fleet.shard_of(nid)
            shard.set_workload(row, kind, entry.load)


def layout_rigs(fleet: Any, layout: Any) -> list[Any]:
    """The rig drivers (not started) of the fleet file's nodes that this process runs."""
    from ..runtime.rig import RigDriver

    drivers = []
    for i, entry in enumerate(layout.spec.nodes):
        if entry.rig is None:
            continue
        for nid in entry.ids:
            if nid in fleet.nodes:
                try:
                    drivers.append(RigDriver(fleet.nodes[nid], layout.rigs[nid], entry.rig_port))
                except ValueError as e:
                    raise BadInput(f"{layout.where('nodes', i, 'rig')}: {e}") from None
    return drivers


def id_ranges(ids: list[int]) -> str:
    """``0..99`` for a contiguous run of ids, else ``0..5, 8..9``."""
    runs: list[list[int]] = []
    for n in ids:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    shown = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs[:8])
    return shown + (f", ... ({len(runs)} ranges)" if len(runs) > 8 else "")


def profile_names(fleet: Any) -> str:
    """``colossus-mcm`` for a fleet of one profile, else ``colossus-mcm ×6, mi300x-class ×2``."""
    counts: dict[str, int] = {}
    for node in fleet.nodes.values():
        counts[node.shard.profile.name] = counts.get(node.shard.profile.name, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{name} ×{n}" for name, n in sorted(counts.items()))


async def _start_recorder(url: str, fleet: str, path: str, clock: Any) -> Any:
    from ..host.record import FleetRecorder, RecordWriter
    from ..transport import TransportError, transport_factory

    try:
        writer = RecordWriter(path, fleet=fleet, clock="real", started_ns=clock.now_ns(), source="mcm-emu run")
    except OSError as e:
        raise BadInput(f"--record {path}: {e.strerror or e}") from None
    recorder = FleetRecorder(transport_factory(url)(f"mcm-recorder-h{uuid.uuid4().hex[:8]}"), writer, clock)
    try:
        return await recorder.start(fleet)
    except TransportError as e:
        raise Failure(str(e)) from None


def rig_drivers(fleet: Any, specs: list[str] | None) -> list[Any]:
    """``NODE=RIG[@PORT]`` options as rig drivers (not started); BadInput names a bad one."""
    from ..profile import ProfileError
    from ..profile.rig import load_rig_profile
    from ..runtime.rig import RigDriver

    drivers: list[RigDriver] = []
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
        except (ProfileError, ValueError) as e:
            raise BadInput(f"--rig {spec!r}: {e}") from None
    return drivers


class StatsFile:
    """The run's measurements as JSON lines (``--stats-file``): ``{"what": "window"|"mark"|"run", ...}``."""

    def __init__(self, path: str, meter: Any) -> None:
        self.path = path
        self.meter = meter
        self._mark = meter.mark()
        try:
            open(path, "w").close()  # created (emptied) now, appended to later
        except OSError as e:
            raise BadInput(f"--stats-file {path}: {e.strerror or e}") from None

    def write(self, what: str, window: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"what": what, "t": time.time(), **window.as_json()}) + "\n")

    def mark(self) -> None:
        self._mark = self.meter.mark()

    def since_mark(self) -> None:
        self.write("mark", self.meter.since(self._mark))


STARTUP_LIMIT_S = 60.0
"""The collector is off while the fleet starts, and on again at the latest this long after."""
GC_THRESHOLDS = (5_000, 10, 10)
"""Young collections every 5,000 allocations instead of 700 (measured: ``mcm-emu bench`` with
1,000 pings a second; higher thresholds make each collection, and so each pause, longer)."""


def shard_spec(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--shard K/N`` (or ``MCM_EMU_SHARD``) as (K, N), K from the environment for ``index/N``."""
    spec = args.shard or os.environ.get("MCM_EMU_SHARD")
    if not spec:
        return None
    k_text, sep, n_text = spec.partition("/")
    if not sep or not n_text.isdigit() or int(n_text) < 1:
        raise BadInput(f"--shard {spec!r}: expected K/N, e.g. 0/4, or index/N")
    n = int(n_text)
    if k_text == "index":
        k_text = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not k_text:
            tail = os.environ.get("HOSTNAME", "").rsplit("-", 1)[-1]
            k_text = tail if tail.isdigit() else ""
        if not k_text:
            raise BadInput(f"--shard {spec!r}: no JOB_COMPLETION_INDEX, and HOSTNAME ends in no ordinal")
    if not k_text.isdigit() or not 0 <= int(k_text) < n:
        raise BadInput(f"--shard {spec!r}: K must be a whole number within 0..{n - 1}, got {k_text!r}")
    count = len(args.node_ids) if getattr(args, "node_ids", None) else args.nodes
    if n > count:
        raise BadInput(f"--shard {spec!r}: {n} slices of {count} nodes leave some empty")
    return int(k_text), n


def shard_ids(args: argparse.Namespace) -> list[int]:
    """The node ids this process runs: all of ``--first-id .. --first-id + --nodes - 1``, or the
    ``--shard K/N`` slice of them (contiguous slices of sizes differing by one at most); with a
    fleet file, of its ids in ascending order."""
    ids = getattr(args, "node_ids", None) or list(range(args.first_id, args.first_id + args.nodes))
    spec = shard_spec(args)
    if spec is None:
        return ids
    k, n = spec
    return ids[k * len(ids) // n : (k + 1) * len(ids) // n]


async def refuse_overlap(url: str, fleet: str, ids: list[int], embedded: bool, *, ring: Any = None) -> None:
    """Refuse to start nodes that something else on the broker runs already (a second fleet with
    the same ids would take over their client ids, or answer their commands twice). ``ring``: the
    fleet's frame keys (--frame-keys): its state read by tag, its nodes pinged sealed."""
    if embedded:
        return  # a broker this process just started has nothing on it
    from ..host.discovery import running_elsewhere
    from ..transport import TransportError, transport_factory

    try:
        from ..protocol.auth import FrameAuth

        auth = None if ring is None else FrameAuth(fleet, ring.secret, ring.current)
        alive = await running_elsewhere(transport_factory(url), fleet, ids, auth=auth)
    except TransportError as e:
        raise Failure(str(e)) from None
    if alive:
        names = ", ".join(map(str, alive))
        raise Failure(
            f"node(s) {names} of fleet {fleet!r} already run on {url} (they answer a ping): refusing to start "
            f"a second copy; choose other ids (--first-id) or another --fleet, or stop the other run "
            f"(--allow-overlap starts anyway)"
        )


async def run_processes(args: argparse.Namespace, layout: Any = None) -> int:
    """``--processes P``: P workers, each ``mcm-emu run`` of its own slice of the ids, against one
    broker (the one given, or this process's embedded broker); their lines prefixed ``[k/P]``."""
    from ..transport import TransportError
    from ..transport.broker import EmbeddedBroker, PortInUse

    if layout is not None and layout.spec.serial is not None:
        raise BadInput(f"--processes runs nodes on a broker: {layout.where('serial')} puts them on serial links")
    if layout is not None and layout.rigs:
        first = min(layout.rigs)
        entry = next(i for i, r in enumerate(layout.spec.nodes) if first in r.ids)
        raise BadInput(
            f"--processes does not run rigs (nor does --rig go with it): {layout.where('nodes', entry, 'rig')} "
            "gives node(s) a rig; run them in a fleet file of their own, without --processes"
        )
    if args.serial or args.record or args.rig:
        raise BadInput("--processes runs nodes on a broker: --serial, --record and --rig do not go with it")
    base_k, base_n = shard_spec(args) or (0, 1)
    p = args.processes
    broker = None
    url = args.broker
    if url is None:
        broker = EmbeddedBroker(port=args.embedded_port)
        try:
            await broker.start()
        except (PortInUse, TransportError) as e:
            raise Failure(str(e)) from None
        url = broker.url
        print(f"mcm-emu {__version__}: embedded MQTT broker at {url} for {p} worker processes", flush=True)
    skip = {"--processes", "--shard", "--broker", "--stats-file"}
    cleaned: list[str] = []
    it = iter(args.argv)
    for a in it:
        if a in skip:
            next(it, None)
        elif not any(a.startswith(f"{o}=") for o in skip):
            cleaned.append(a)
    env = {k: v for k, v in os.environ.items() if k != "MCM_EMU_SHARD"}
    env["PYTHONUNBUFFERED"] = "1"
    procs = []
    for i in range(p):
        shard = f"{base_k * p + i}/{base_n * p}"
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mcm_firmware",
                *cleaned,
                "--broker",
                url,
                "--shard",
                shard,
                *(["--stats-file", str(worker_stats(args.stats_file, i))] if args.stats_file else []),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        )
    loop = asyncio.get_running_loop()

    def forward(sig: int) -> None:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(sig)

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    for sig in forwarded:
        loop.add_signal_handler(sig, forward, sig)

    async def relay(i: int, proc: asyncio.subprocess.Process) -> int:
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            text = raw.decode(errors="replace").rstrip()
            if not text.startswith("fleet file: "):  # what overrides the file: said once, above
                print(f"[{i}/{p}] {text}", flush=True)
        return await proc.wait()

    try:
        codes = await asyncio.gather(*(relay(i, proc) for i, proc in enumerate(procs)))
    finally:
        for sig in forwarded:
            loop.remove_signal_handler(sig)
        forward(signal.SIGTERM)
        if broker is not None:
            await broker.stop()
    return max(codes)


def worker_stats(path: str, worker: int) -> Path:
    """The ``--stats-file`` of worker ``worker`` under ``--processes``: ``stats.jsonl`` becomes
    ``stats.0.jsonl``, ``stats.1.jsonl`` ... (SIGUSR1/SIGUSR2 reach every worker)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{worker}{p.suffix}")


def serve_metrics(fleet: Any, args: argparse.Namespace) -> Any:
    """The Prometheus endpoint (``--metrics-port``); None without one."""
    if args.metrics_port is None:
        return None
    from ..runtime.metrics import FleetCollector, MetricsServer, Renderer

    try:
        server = MetricsServer(
            Renderer(FleetCollector(fleet, detail=args.metrics_detail)),
            asyncio.get_running_loop(),
            address=args.metrics_address,
            port=args.metrics_port,
        )
    except OSError as e:
        raise Failure(f"--metrics-port {args.metrics_port}: {e.strerror or e}") from None
    server.start()
    print(f"metrics: http://{args.metrics_address}:{args.metrics_port}/metrics", flush=True)
    return server


RT_PRIORITY = 10


def scheduling(want: str) -> str:
    """Ask the OS to run this process as the firmware it emulates runs: at a real-time priority
    (``SCHED_RR``, a low one) so that control ticks are not late behind the broker or other load;
    what was granted, in words. Linux keeps a share of every CPU for ordinary processes
    (``sched_rt_runtime_us``), and this process waits in the event loop when it has nothing to do."""
    if want == "normal":
        return "normal priority"
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(RT_PRIORITY))
    except (PermissionError, OSError, AttributeError) as e:
        if want == "realtime":
            raise Failure(f"--priority realtime: not permitted ({getattr(e, 'strerror', None) or e})") from None
        return "normal priority (real-time priority not permitted: ticks may be late on a busy machine)"
    return f"real-time priority (SCHED_RR {RT_PRIORITY})"


SETTLE_S = 2.0
"""Start-up ends this long after every node has connected (their first telemetry and events sent)."""


async def _up_and_settled(fleet: Any, t_start: float) -> Any:
    """Once every node has connected: say how long start-up took, then move everything built so
    far out of the collector's way (``gc.freeze``: full collections no longer walk it); the meter's
    mark where start-up ends."""
    try:
        await fleet.wait_connected(STARTUP_LIMIT_S)
        print(f"up: {len(fleet.nodes)} nodes connected in {time.monotonic() - t_start:.1f} s", flush=True)
    except TimeoutError:
        up = sum(n.link_up for n in fleet.nodes.values())
        print(f"up: only {up} of {len(fleet.nodes)} nodes connected after {STARTUP_LIMIT_S:g} s", flush=True)
    gc.freeze()  # no collection first: a full one over a large fleet is a pause of its own
    gc.enable()
    await asyncio.sleep(SETTLE_S)
    return fleet.meter.mark()


async def serve(fleet: Any, args: argparse.Namespace, layout: Any = None) -> None:
    """Run ``fleet`` until SIGINT / SIGTERM or ``--duration``, showing it; then stop every node."""
    from ..transport import TransportError

    rigs = rig_drivers(fleet, args.rig) if layout is None else layout_rigs(fleet, layout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t_start = time.monotonic()
    gc.set_threshold(*GC_THRESHOLDS)
    stats = StatsFile(args.stats_file, fleet.meter) if args.stats_file else None
    if stats is not None:
        loop.add_signal_handler(signal.SIGUSR1, stats.mark)
        loop.add_signal_handler(signal.SIGUSR2, stats.since_mark)
    metrics = serve_metrics(fleet, args)
    await fleet.start()
    started = []
    display = Display(fleet, interval=args.summary_interval, stats=stats)
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
        booted = asyncio.create_task(_up_and_settled(fleet, t_start), name="run-startup")
        await asyncio.wait({waiter, shown}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        await cancel_and_wait([waiter, shown, booted])
        settled = booted.result() if booted.done() and not booted.cancelled() and not booted.exception() else None
        gc.enable()
    finally:
        display.close()
        for rig in started:
            await rig.stop()
        await fleet.stop()
        if metrics is not None:
            metrics.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(f"stopped {len(fleet.nodes)} nodes (DEATH published)", flush=True)
    w = fleet.meter.since_start()
    if stats is not None:
        stats.write("run", w)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            loop.remove_signal_handler(sig)
    print(f"run: {w.seconds:.1f} s, {w.ticks} ticks; {meter_line(w)}", flush=True)
    verdict = fleet.meter.closing(settled)
    if verdict is not None:
        print(f"mcm-emu: {verdict}", file=sys.stderr, flush=True)


FD_MARGIN = 256  # descriptors beside the connections: the broker's, pipes, files, the metrics server


def ensure_descriptors(connections: int, instead: str) -> None:
    """Raise this process's open-file limit to what ``connections`` sockets need (up to the hard
    limit); BadInput, naming the limit and ``instead``, when even the hard limit is too low."""
    import resource

    need = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise BadInput(
                f"{connections} connections need about {need} file descriptors; this process may open "
                f"{hard} (ulimit -Hn): raise the limit, or use {instead}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
