"""What every ``mcm-emu`` command shares: exit codes, errors, argument types, output."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
U32_MAX = 2**32 - 1


class Failure(Exception):
    """A runtime failure: printed as one line (``mcm-emu: error: ...``) and, where one helps, a
    hint line; exit 1. ``fields`` go into the JSON error object of ``--json``."""

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.hint = hint
        self.fields = fields


class BadInput(Exception):
    """Bad input found after argument parsing: printed as one line, exit 2."""


def connect_hint(args: argparse.Namespace | None, message: str) -> str | None:
    """The hint for a broker that could not be reached: where the command looked, and what starts one."""
    if args is None or not message.startswith("cannot connect to broker") or getattr(args, "serial", None):
        return None
    if not any(why in message for why in ("Connection refused", "no answer", "timed out")) or any(
        why in message for why in ("SSL", "TLS", "authoriz", "password")
    ):
        return None  # the broker answered and refused (TLS, credentials): the error names why
    url = getattr(args, "broker", None) or DEFAULT_BROKER
    if getattr(args, "command", None) == "run":
        return f"is a broker running at {url}? without --broker, 'mcm-emu run' embeds one"
    return f"is a broker running at {url}? 'mcm-emu run' starts one with its nodes; --broker URL names another"


def broker_url(text: str) -> str:
    from ..transport.mqtt import parse_broker_url

    try:
        parse_broker_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def serial_port(text: str) -> str:
    from ..transport.serial import parse_port_url

    try:
        parse_port_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def fleet_name(text: str) -> str:
    from ..transport import check_fleet_name

    try:
        return check_fleet_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bounded(kind: Callable[[str], Any], lo: float, hi: float, what: str) -> Callable[[str], Any]:
    """An argument type: ``kind(text)`` within ``lo..hi``; the error names ``what``."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"{what} must be a {noun}, got {text!r}") from None
        if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
            span = f"{int(lo)}..{int(hi)}" if kind is int else f"{lo:g}..{hi:g}"
            raise argparse.ArgumentTypeError(f"{what} must be within {span}, got {text}")
        return value

    return convert


def security_options(p: argparse.ArgumentParser, *, nodes: bool = False) -> None:
    """Credentials and TLS for the broker (docs/security.md); they become the broker URL's query
    parameters (:mod:`mcm_firmware.transport.security`)."""
    g = p.add_argument_group("broker security (docs/security.md)")
    g.add_argument("--username", default=None, help="MQTT user name (a host's role, e.g. fleet-host)")
    g.add_argument("--password-file", default=None, metavar="FILE", help="file whose first line is the password")
    if nodes:
        g.add_argument(
            "--node-secret",
            default=None,
            metavar="FILE",
            help="the fleet's node secret: every node connects as its own client id with a password "
            "derived from it (mcm-emu broker-config writes the broker's side)",
        )
    g.add_argument("--cafile", default=None, metavar="FILE", help="CA the broker's certificate must chain to (TLS)")
    g.add_argument(
        "--cert",
        default=None,
        metavar="FILE",
        help="this client's certificate (TLS); '{client_id}' in it and in --key: each connection its own "
        "(a node's its client id's, a host's its --username's)",
    )
    g.add_argument("--key", default=None, metavar="FILE", help="this client's private key (TLS)")


def secured(url: str, args: argparse.Namespace) -> str:
    """``url`` with the command's security options; BadInput names what does not fit."""
    from ..transport.security import security_of, with_security

    given = {
        "username": getattr(args, "username", None),
        "password_file": getattr(args, "password_file", None),
        "node_secret": getattr(args, "node_secret", None),
        "cafile": getattr(args, "cafile", None),
        "cert": getattr(args, "cert", None),
        "key": getattr(args, "key", None),
    }
    out = with_security(url, **given)
    try:
        security_of(out)
    except ValueError as e:
        raise BadInput(str(e).replace("broker URL", "broker").replace("password_file", "--password-file")) from None
    return out


def client_options(p: argparse.ArgumentParser) -> None:
    """``--broker`` or ``--serial``, ``--fleet``, ``--json``: how a host reaches a fleet."""
    link = p.add_mutually_exclusive_group()
    link.add_argument(
        "--broker",
        type=broker_url,
        default=DEFAULT_BROKER,
        help="the broker: mqtt://HOST[:PORT] or mqtts:// (default %(default)s)",
    )
    link.add_argument(
        "--serial",
        type=serial_port,
        default=None,
        metavar="PORT",
        help="talk to the node(s) on a serial port instead: a device path, the path "
        "printed by run --serial pty, socket://HOST:PORT, rfc2217://HOST:PORT; "
        "options ?baud=N&mtu=N",
    )
    p.add_argument(
        "--fleet", type=fleet_name, default="default", help="the fleet (a topic level) (default %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    security_options(p)
    frame_keys_option(p)


def frame_keys_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--frame-keys",
        default=None,
        metavar="FILE",
        help="the fleet's frame keys: frames are sealed with an HMAC tag and verified, replays refused "
        "(mcm-emu frame-keys new FILE makes one; docs/security.md)",
    )


def key_ring(args: argparse.Namespace) -> Any:
    """The KeyRing of ``--frame-keys``, None without it; BadInput for a file that cannot be used."""
    from ..keyring import KeyFileError, KeyRing

    path = getattr(args, "frame_keys", None)
    if path is None:
        return None
    try:
        return KeyRing(path)
    except KeyFileError as e:
        raise BadInput(f"--frame-keys: {e}") from None


def frame_auth(args: argparse.Namespace, fleet: str) -> Any:
    """The FrameAuth of a host command (``--frame-keys``), None without it."""
    from ..protocol.auth import FrameAuth

    ring = key_ring(args)
    return None if ring is None else FrameAuth(fleet, ring.secret, ring.current)


def link_url(args: argparse.Namespace) -> str:
    """The transport URL of a host command's ``--broker`` (with its security options) / ``--serial``."""
    return f"serial://{args.serial}" if args.serial else secured(str(args.broker), args)


def emit(args: argparse.Namespace, obj: dict[str, Any], *, text: str, stream: Any = None) -> None:
    """``obj`` as one JSON line with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(obj), flush=True)
    else:
        print(text, file=stream or sys.stdout, flush=True)


def id_ranges(ids: list[int], most: int = 8) -> str:
    """Sorted node ids as ranges: ``0-7``, ``0-3,5,9-12`` (the first ``most`` runs, then ``...``)."""
    runs: list[tuple[int, int]] = []
    for n in ids:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    text = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (",..." if len(runs) > most else "")


def _utc(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def death_text(death: Any) -> str:
    """``DEATH: CONNECTION_LOST ...``: a DEATH's reason, boot and bdseq, and what its time is. A
    Last Will (CONNECTION_LOST) is published by the broker with the time the node set when it
    connected, not the time of the loss."""
    from ..protocol import DeathReason

    bdseq = death.bdseq & 0x7FFFFFFF
    if death.reason is DeathReason.CONNECTION_LOST:
        when = f", registered when it connected at {_utc(death.timestamp_ns)}" if death.timestamp_ns else ""
        return f"DEATH: CONNECTION_LOST, its Last Will published by the broker{when}; boot {death.boot_count}, bdseq {bdseq}"
    when = f" at {_utc(death.timestamp_ns)}" if death.timestamp_ns else ""
    return f"DEATH: {death.reason.name}{when}; boot {death.boot_count}, bdseq {bdseq}"


NOT_IN_FLEET, OFFLINE, NO_FLEET, NOT_BACK, STALE = "NOT_IN_FLEET", "OFFLINE", "NO_FLEET", "NOT_BACK", "STALE"


@dataclass
class Standing:
    """What the broker's retained state says of a fleet: its nodes' state frames (all of them,
    or one node's when that was enough) and, when the fleet has no node, the fleets it has."""

    state: Any  # host.discovery.FleetState
    whole: bool  # every node of the fleet was read, not one
    fleets: list[str] | None = None

    @property
    def empty_broker(self) -> bool:
        """The broker holds no state of any fleet at all: just started, or restarted without
        persistence and no node back yet."""
        return not self.state.nodes and self.fleets == []

    def no_fleet(self) -> str:
        """``no node of fleet 'x' on this broker (fleets seen: a, b)``."""
        if self.fleets is None:
            seen = "other fleets could not be read: is --fleet right?"
        else:
            seen = f"fleets seen: {', '.join(self.fleets)}" if self.fleets else "no fleet at all"
        return f"no node of fleet {self.state.fleet!r} on this broker ({seen})"

    def reconnecting(self, node: int) -> bool:
        """``node`` may be on its way back although the broker has no state of it: the broker
        holds no state at all (it just started, or restarted without persistence), or the node
        was not seen but some node of its fleet was born again lately (a BIRTH of a connection
        after its first within the nodes' reconnect window, host.discovery.reconnected_recently).
        A node whose state is a DEATH is not: it is explained at once."""
        from ..host.discovery import reconnected_recently

        if self.empty_broker:
            return True
        return self.whole and node not in self.state.nodes and reconnected_recently(self.state)

    def seen(self) -> str:
        """``nodes 0-3 seen``, or ``no node of it seen``."""
        return f"nodes {id_ranges(sorted(self.state.nodes))} seen" if self.state.nodes else "no node of it seen"

    def not_back(self, node: int, timeout: float) -> str:
        """``not back in fleet 'x' within 15 s (nodes 3-63 seen)``: a node waited for in vain."""
        return f"not back in fleet {self.state.fleet!r} within {timeout:g} s ({self.seen()})"

    def blocked(self, node: int) -> tuple[str, str] | None:
        """(status, text) for a node that will not answer by the retained state: never seen in
        the fleet, or offline; None for a node that may answer (a node that may be reconnecting,
        :meth:`reconnecting`, included)."""
        from ..protocol import Death

        fleet = self.state.fleet
        if self.reconnecting(node):
            return None
        if not self.state.nodes:
            return NO_FLEET, self.no_fleet()
        last = self.state.nodes.get(node)
        if last is None:
            if not self.whole:
                return None
            return NOT_IN_FLEET, f"not in fleet {fleet!r} (nodes {id_ranges(sorted(self.state.nodes))} seen)"
        if isinstance(last, Death):
            return OFFLINE, f"offline ({death_text(last)})"
        if self.whole and not self.state.online(node):
            return OFFLINE, "offline (its carrier link is down)"
        return None

    def why(self, node: int) -> str | None:
        """``node 3: offline (...)``, ``no node of fleet ...``: why ``node`` will not answer, in one
        line; None for a node that may."""
        blocked = self.blocked(node)
        if blocked is None:
            return None
        return blocked[1] if blocked[0] == NO_FLEET else f"node {node}: {blocked[1]}"


def _any_fleet_states() -> Any:
    """A subscription to the state channel of every fleet (``mcm/v1/+/+/state``): to name the
    fleets a broker has."""
    from ..transport import Channel, Subscription

    class AnyFleet(Subscription):
        __slots__ = ()

        def matches(self, addr: Any) -> bool:
            return bool(addr.channel == self.channel)

    return AnyFleet("+", None, Channel.STATE)


async def read_standing(args: argparse.Namespace, node: int | None = None, *, settle: float = 0.25) -> Standing:
    """The retained state, cheaply: for one ``node`` its own state topic first (one retained frame,
    read as soon as it comes); the whole fleet when that is missing, is carried (its link's state
    is needed too) or no ``node`` is given; the fleets on the broker when the fleet has no node.
    With ``--frame-keys`` a state or LINK frame whose tag does not verify is left out (counted in
    ``refused``). The connect is bounded by ``args.timeout``; TransportError when the broker
    cannot be reached."""
    import asyncio
    import uuid

    from ..host.client import connect_within
    from ..host.discovery import FleetState
    from ..protocol import Birth, Death
    from ..transport import Channel, Subscription, TransportError, transport_factory
    from ..transport.carrier import CARRIED

    fleet = args.fleet
    state = FleetState(fleet)
    auth = frame_auth(args, fleet)
    tr = transport_factory(link_url(args))(f"mcm-probe-h{uuid.uuid4().hex[:8]}")
    await connect_within(tr, getattr(args, "timeout", 5.0))

    async def drain(first_only: bool = False) -> set[str]:
        fleets: set[str] = set()
        while True:
            try:
                d = await asyncio.wait_for(tr.receive(), settle)
            except TimeoutError:
                return fleets
            if d.address.fleet != fleet:
                fleets.add(d.address.fleet)
                continue
            if isinstance(state.take(d.address.node, d.payload, auth), (Birth, Death)):
                fleets.add(fleet)
                if first_only:
                    return fleets

    try:
        if node is not None:
            await tr.subscribe(Subscription(fleet, node, Channel.STATE))
            await drain(first_only=True)
            last = state.nodes.get(node)
            if isinstance(last, Death) or (isinstance(last, Birth) and not last.bdseq & CARRIED):
                return Standing(state, whole=False)
        await tr.subscribe(Subscription(fleet, None, Channel.STATE))
        await tr.subscribe(Subscription(fleet, None, Channel.LINK))
        await drain()
        if state.nodes:
            return Standing(state, whole=True)
        try:  # a broker's ACL may keep other fleets from this client: then they go unnamed
            await tr.subscribe(_any_fleet_states())
            fleets: list[str] | None = sorted(await drain())
        except TransportError:
            fleets = None
        return Standing(state, whole=True, fleets=fleets)
    finally:
        await tr.close()


async def why_silent(args: argparse.Namespace, node: int) -> str | None:
    """What the broker's retained state says of a node that did not answer: never seen in this
    fleet (a wrong id or --fleet), offline since its DEATH, not back (waited for while its fleet
    was reconnecting), or a BIRTH without an answer (crashed, hung, or a BIRTH the broker kept of
    a node that is gone)."""
    from ..protocol import FrameFlags
    from ..transport import TransportError

    try:
        standing = await read_standing(args)
    except TransportError:
        return None
    why = standing.why(node)
    if why is not None:
        return why
    last = standing.state.nodes.get(node)
    if last is None:  # still not back: waited for in vain
        return f"node {node}: {standing.not_back(node, args.timeout)}"
    if last.flags & FrameFlags.AUTH and getattr(args, "frame_keys", None) is None:
        return (
            f"node {node} is up, and its fleet authenticates its frames (its BIRTH is sealed): pass --frame-keys FILE"
        )
    return (
        f"node {node}: online by its BIRTH (bdseq {last.bdseq & 0x7FFFFFFF}) but does not answer: crashed, hung, "
        "or gone without its Last Will published yet"
    )
