"""``mcm-emu redfish``: a Redfish service (DSP0266) in front of a running fleet (docs/redfish.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

from .common import EXIT_OK, BadInput, Failure, bounded, broker_url, fleet_name, frame_auth, secured, security_options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "redfish",
        help="serve a running fleet as a Redfish service (DSP0266) over HTTP or HTTPS",
        description="A Redfish service in front of a fleet that runs already: it talks to the nodes over the "
        "binary protocol like any host (their state, telemetry and events from the broker; commands with "
        "request ids) and serves every module as a Chassis with its Sensors, PowerSubsystem, ThermalSubsystem "
        "(pumps, cold plate), HBM stacks as Memory, an event log, a power-limit and valve Controls and a reset "
        "action; an EventService (subscriptions and SSE); sessions and HTTP Basic authentication, roles "
        "ReadOnly and Operator; HTTPS with --https-cert/--https-key. See docs/redfish.md.",
    )
    p.add_argument(
        "--broker",
        type=broker_url,
        default="mqtt://127.0.0.1:1883",
        help="the fleet's broker: mqtt://HOST[:PORT] or mqtts:// (default %(default)s)",
    )
    p.add_argument("--fleet", type=fleet_name, default="default", help="the fleet (default %(default)s)")
    redfish_options(p, port_default=8000)
    security_options(p)
    p.add_argument(
        "--frame-keys",
        default=None,
        metavar="FILE",
        help="the fleet's frame keys, when its frames are authenticated (docs/security.md)",
    )
    p.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds (default: run until stopped)"
    )
    p.set_defaults(func=cmd_redfish)


def redfish_options(p: argparse.ArgumentParser, *, port_default: int | None) -> None:
    """The HTTP side's options, shared with ``run --redfish-port``."""
    g = p.add_argument_group("Redfish service (docs/redfish.md)")
    name = "--port" if port_default is not None else "--redfish-port"
    g.add_argument(
        name,
        dest="redfish_port",
        type=bounded(int, 0, 65535, name),
        default=port_default,
        metavar="P",
        help="serve Redfish over HTTP on this port (0: any free one, printed)"
        + (" (default %(default)s)" if port_default is not None else " (default: none)"),
    )
    g.add_argument(
        "--redfish-bind" if port_default is None else "--bind",
        dest="redfish_bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the Redfish service listens on (default %(default)s)",
    )
    g.add_argument(
        "--redfish-cert" if port_default is None else "--https-cert",
        dest="redfish_cert",
        default=None,
        metavar="FILE",
        help="serve HTTPS with this certificate (PEM, its chain after it); needs the key too",
    )
    g.add_argument(
        "--redfish-key" if port_default is None else "--https-key",
        dest="redfish_key",
        default=None,
        metavar="FILE",
        help="the certificate's private key (PEM)",
    )
    g.add_argument(
        "--redfish-accounts" if port_default is None else "--accounts",
        dest="redfish_accounts",
        default=None,
        metavar="FILE",
        help="TOML file of accounts ([accounts.NAME] role = ReadOnly|Operator, password or password_file); "
        "without one an 'operator' and a 'readonly' account get random passwords, printed at start",
    )
    g.add_argument(
        "--redfish-event-log" if port_default is None else "--event-log",
        dest="redfish_event_log",
        default=None,
        metavar="FILE",
        help="keep the modules' event logs in FILE (JSON lines) across restarts of the service "
        "(default: in memory only)",
    )
    g.add_argument(
        "--redfish-event-log-max" if port_default is None else "--event-log-max",
        dest="redfish_event_log_max",
        type=bounded(int, 1, 10**8, "--event-log-max"),
        default=100_000,
        metavar="N",
        help="records in the event log file before it is rotated to FILE.1 (default %(default)s)",
    )


def https_context(args: argparse.Namespace) -> Any:
    """The TLS context of ``--https-cert``/``--https-key`` (None: plain HTTP); BadInput names a
    file that cannot be used."""
    import ssl

    cert, key = args.redfish_cert, args.redfish_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise BadInput("redfish: HTTPS needs both a certificate and its key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise BadInput(f"redfish: certificate {cert} with key {key}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


def authority(args: argparse.Namespace) -> Any:
    """The accounts of ``--accounts`` (BadInput names what is wrong), or generated ones, printed."""
    from ..redfish.auth import AccountError, Authority, generated_accounts, load_accounts

    if args.redfish_accounts is not None:
        try:
            return Authority(load_accounts(args.redfish_accounts))
        except AccountError as e:
            raise BadInput(f"accounts: {e}") from None
    accounts = generated_accounts()
    for a in accounts.values():
        print(f"redfish: account {a.user} ({a.role}) password {a.password}", flush=True)
    return Authority(accounts)


def public_url(url: str) -> str:
    """The broker's URL without credentials or security options: ``scheme://host:port``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@contextlib.asynccontextmanager
async def redfish_service(args: argparse.Namespace, url: str, fleet: str) -> Any:
    """The gateway and HTTP server of ``args`` against the broker ``url``; prints its address."""
    from .. import __version__
    from ..redfish.gateway import Gateway
    from ..redfish.server import RedfishServer
    from ..transport import TransportError, transport_factory

    auth = authority(args)
    tls = https_context(args)
    fast = url if urlsplit(url).scheme in ("mqtt", "mqtts", "tcp") else None  # telemetry parsed in bulk
    gateway = Gateway(
        transport_factory(url), fleet, auth=frame_auth(args, fleet), source=public_url(url), telemetry_url=fast
    )
    store = None
    if getattr(args, "redfish_event_log", None) is not None:
        from ..redfish.eventlog import EventLogFile

        store = EventLogFile(args.redfish_event_log, args.redfish_event_log_max)
        try:
            gateway.logs = store.load()
        except OSError as e:
            raise BadInput(f"redfish: event log {args.redfish_event_log}: {e.strerror or e}") from None
        gateway.listeners.append(store.append)
        print(
            f"redfish: event log {args.redfish_event_log}: {store.restored} records of {len(gateway.logs)} modules "
            f"restored, {store.skipped} lines skipped",
            flush=True,
        )
    try:
        await gateway.start()
    except TransportError as e:
        raise Failure(f"redfish: cannot reach the broker: {e}") from None
    server = RedfishServer(gateway, auth, version=__version__)
    try:
        try:
            await server.start(args.redfish_bind, args.redfish_port, ssl_context=tls)
        except OSError as e:
            raise Failure(f"redfish: port {args.redfish_port}: {e.strerror or e}") from None
        scheme = "https" if tls is not None else "http"
        print(f"redfish: {scheme}://{args.redfish_bind}:{server.port}/redfish/v1/", flush=True)
        yield server
    finally:
        await server.stop()
        print(f"redfish: {server.summary()}", flush=True)
        print(f"redfish: {gateway.summary()}", flush=True)
        await gateway.stop()
        if store is not None:
            store.close()


async def cmd_redfish(args: argparse.Namespace) -> int:
    url = secured(str(args.broker), args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    served: list[Any] = []  # the server, once it serves

    def counts() -> None:  # SIGUSR1: the gateway's counts, one JSON line (installed before the address is printed)
        if served:
            print(json.dumps({"redfish": served[0].gateway.stats()}), flush=True)

    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGUSR1, counts)
    async with redfish_service(args, url, args.fleet) as server:
        served.append(server)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
    sys.stdout.flush()
    return EXIT_OK
