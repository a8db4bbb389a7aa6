"""The Redfish service over HTTP (aiohttp): routing, authentication, request bodies, errors.

Resources come from :mod:`.resources` (pure), node state and commands from a
:class:`~.gateway.Gateway`. Every refused request is answered with a message of the Base registry
and counted by its MessageId (``RedfishServer.refused``; logged when the service stops).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import math
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from ..host.client import HostError
from ..protocol import Status
from ..tasks import cancel_and_wait
from . import events as ev
from . import resources as rs
from .auth import Account, Authority, Session
from .events import Record, Subscription
from .gateway import Gateway
from .registry import STANDARD_REGISTRIES, error

log = logging.getLogger(__name__)

ROOT = rs.ROOT
OPEN_PATHS = {"/redfish", "/redfish/v1", "/redfish/v1/odata", "/redfish/v1/$metadata"}  # DSP0266: no auth
SESSIONS = f"{ROOT}/SessionService/Sessions"
REDFISH_QUERY = {"only", "excerpt", "includeoriginresource"}  # query parameters of DSP0266 without a $
HEADERS = {"OData-Version": "4.0", "Cache-Control": "no-cache"}
# properties of the power-limit Control: the one a client may write, and those it may only read
CONTROL_WRITABLE = {"SetPoint"}
CONTROL_READ_ONLY = {
    "Id", "Name", "Description", "PhysicalContext", "ControlType", "ControlMode", "SetPointUnits",
    "AllowableMin", "AllowableMax", "Sensor", "Status", "Oem", "Actions", "Links",
}  # fmt: skip


class Refused(Exception):
    """A request answered with a Redfish error: HTTP status, Base registry message and args."""

    def __init__(self, http: int, key: str, *args: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(key)
        self.http = http
        self.key = key
        self.args_ = args
        self.headers = headers or {}


@dataclass
class Who:
    account: Account
    session: Session | None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    return web.Response(
        text=text,
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers={**HEADERS, **(headers or {})},
    )


class EventService:
    """Delivers every record the gateway logs to the subscriptions that want it (an HTTP POST of an
    Event to the subscription's Destination, retried ``attempts`` times ``interval`` s apart, then
    the subscription suspended or terminated by its DeliveryRetryPolicy, as DSP0266 asks) and to
    every open SSE stream. Each subscription has its own queue (``QUEUE`` events; when full the
    oldest is dropped and counted) and task, so that a slow destination holds up no other."""

    QUEUE = 1000
    LIMIT = 32  # subscriptions

    def __init__(self, attempts: int = 3, interval: int = 5, timeout: float = 5.0) -> None:
        self.attempts = attempts
        self.interval = interval
        self.timeout = timeout
        self.subs: dict[str, Subscription] = {}
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # open SSE streams, each with its $filter (None: every event)
        self._streams: dict[asyncio.Queue[tuple[int, dict[str, Any]] | None], Callable[[Record], bool] | None] = {}
        self._ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self.sse_dropped = 0

    def tell(self, rec: Record) -> None:
        """A record logged (a gateway listener)."""
        for sub in list(self.subs.values()):
            if sub.suspended or not sub.wants(rec):
                continue
            q = self._queues[sub.id]
            if q.full():
                q.get_nowait()
                sub.dropped += 1
            q.put_nowait(ev.event_payload([rec], next(self._event_ids), sub.context))
        if self._streams:
            eid = next(self._event_ids)
            body = ev.event_payload([rec], eid, None)
            for stream, wanted in self._streams.items():
                if wanted is not None and not wanted(rec):
                    continue
                if stream.full():
                    self.sse_dropped += 1
                else:
                    stream.put_nowait((eid, body))

    def add(self, sub: Subscription) -> None:
        self.subs[sub.id] = sub
        self._queues[sub.id] = asyncio.Queue(self.QUEUE)
        self._tasks[sub.id] = asyncio.create_task(self._deliver(sub), name=f"redfish-push-{sub.id}")

    def new_id(self) -> str:
        return str(next(self._ids))

    async def remove(self, sid: str) -> None:
        self.subs.pop(sid, None)
        self._queues.pop(sid, None)
        task = self._tasks.pop(sid, None)
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait([task])

    async def _deliver(self, sub: Subscription) -> None:
        q = self._queues[sub.id]
        while True:
            body = await q.get()
            for attempt in range(self.attempts + 1):
                if attempt:
                    await asyncio.sleep(self.interval)
                if await self._post(sub, body):
                    sub.delivered += 1
                    break
                sub.failed += 1
            else:
                log.warning("redfish: subscription %s: %s unreachable after %d retries: %s", sub.id,
                            sub.destination, self.attempts, sub.policy)  # fmt: skip
                if sub.policy == "TerminateAfterRetries":
                    self.subs.pop(sub.id, None)
                    self._queues.pop(sub.id, None)
                    self._tasks.pop(sub.id, None)
                else:
                    sub.suspended = True
                    self._tasks.pop(sub.id, None)
                return

    async def _post(self, sub: Subscription, body: dict[str, Any]) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(sub.destination, json=body) as resp:
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.info("redfish: subscription %s: %s: %s", sub.id, sub.destination, e)
            return False

    def open_stream(
        self, wanted: Callable[[Record], bool] | None = None
    ) -> asyncio.Queue[tuple[int, dict[str, Any]] | None]:
        """A stream of the events ``wanted`` lets through (None: all)."""
        stream: asyncio.Queue[tuple[int, dict[str, Any]] | None] = asyncio.Queue(self.QUEUE)
        self._streams[stream] = wanted
        return stream

    def close_stream(self, stream: asyncio.Queue[tuple[int, dict[str, Any]] | None]) -> None:
        self._streams.pop(stream, None)

    async def stop(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(asyncio.QueueFull):
                stream.put_nowait(None)
        await cancel_and_wait(list(self._tasks.values()))
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


class RedfishServer:
    """The HTTP side of the service; ``start`` binds ``host:port`` (port 0: any free one, see
    ``port`` after start)."""

    def __init__(
        self, gateway: Gateway, authority: Authority, *, version: str = "0", alive_window: float = 3.0
    ) -> None:
        """``alive_window``: a node from which no fresh frame came for this long (s) is shown
        offline (three periods of the slowest telemetry of the shipped profiles, 1 Hz)."""
        self.gateway = gateway
        self.events = EventService()
        gateway.listeners.append(self.events.tell)
        self.alive_window = alive_window
        self.authority = authority
        self.version = version
        self.requests = 0
        self.refused: Counter[str] = Counter()  # by MessageId
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: Any = None) -> None:
        """``ssl_context``: an ``ssl.SSLContext`` to serve HTTPS with (None: HTTP)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        server = site._server  # the bound socket's port, for port 0
        socks = getattr(server, "sockets", None) or []
        self.port = socks[0].getsockname()[1] if socks else port

    async def stop(self) -> None:
        await self.events.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("redfish: %s", self.summary())

    def summary(self) -> str:
        refused = sum(self.refused.values())
        detail = ", ".join(f"{k.rsplit('.', 1)[-1]} {n}" for k, n in sorted(self.refused.items()))
        return f"{self.requests} requests, {refused} refused" + (f" ({detail})" if detail else "")

    # --- dispatch ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        try:
            resp = await self._dispatch(request)
        except Refused as r:
            body = error(r.key, *r.args_)
            self.refused[body["error"]["code"]] += 1
            resp = _json(body, r.http, r.headers)
        except Exception:
            log.exception("redfish: %s %s failed", request.method, request.path)
            body = error("InternalError")
            self.refused[body["error"]["code"]] += 1
            resp = _json(body, 500)
        return resp

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        method = request.method
        for name in request.query:  # DSP0266: those of the protocol refused, others ignored
            if (name.startswith("$") or name in REDFISH_QUERY) and not (name == "$filter" and path == ev.SSE_URI):
                raise Refused(501, "QueryParameterUnsupported", name)
        if path not in OPEN_PATHS and not (path == SESSIONS and method == "POST"):
            who = self._authenticate(request)
        else:
            who = None
        if method == "HEAD":
            if path == ev.SSE_URI:  # a stream has no end to wait for
                return web.Response(status=200, headers={**HEADERS, "Content-Type": "text/event-stream"})
            resp = await self._route(request, path, "GET", who)
            return web.Response(
                status=resp.status, headers={k: v for k, v in resp.headers.items() if k != "Content-Length"}
            )
        return await self._route(request, path, method, who)

    def _authenticate(self, request: web.Request) -> Who:
        unauth = {"WWW-Authenticate": 'Basic realm="mcm-emu Redfish"'}
        token = request.headers.get("X-Auth-Token")
        if token:
            s = self.authority.by_token(token)
            if s is None:
                raise Refused(401, "NoValidSession", headers=unauth)
            return Who(s.account, s)
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Refused(401, "NoValidSession", headers=unauth) from None
            acct = self.authority.check_password(user, password)
            if acct is not None:
                return Who(acct, None)
        raise Refused(401, "NoValidSession", headers=unauth)

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            allow = ", ".join(sorted({*allowed, "HEAD"} if "GET" in allowed else set(allowed)))
            raise Refused(405, "OperationNotAllowed", headers={"Allow": allow})

    @staticmethod
    def _writer(who: Who | None) -> None:
        if who is None or not who.account.can_write:
            raise Refused(403, "InsufficientPrivilege")

    async def _route(self, request: web.Request, path: str, method: str, who: Who | None) -> web.StreamResponse:
        view = self.gateway.view
        if path == "/redfish":
            self._allow(method, ("GET",))
            return _json(rs.version_document())
        if not path.startswith(ROOT):
            raise Refused(404, "ResourceMissingAtURI", request.path)
        parts = path[len(ROOT) :].strip("/").split("/") if path != ROOT else []
        if not parts:
            self._allow(method, ("GET",))
            return _json(rs.service_root(view.fleet, self.version))
        head = parts[0]
        if parts == ["odata"]:
            self._allow(method, ("GET",))
            return _json(rs.odata_document())
        if parts == ["$metadata"]:
            self._allow(method, ("GET",))
            return web.Response(
                text=rs.metadata_document(), content_type="application/xml", charset="utf-8", headers=HEADERS
            )
        if parts == ["Schemas", rs.OEM_SCHEMA_PATH.rsplit("/", 1)[1]]:  # the Oem.McmEmu extensions
            self._allow(method, ("GET",))
            return web.Response(text=rs.oem_schema(), content_type="application/xml", charset="utf-8", headers=HEADERS)
        if head == "SessionService":
            return await self._sessions(request, parts[1:], method, who)
        if head == "Chassis":
            return await self._chassis(request, parts[1:], method, who)
        if head == "Registries":
            return self._registries(request, parts[1:], method)
        if head == "EventService":
            return await self._event_service(request, parts[1:], method, who)
        if head == "AggregationService":
            return self._aggregation(request, parts[1:], method)
        if head == "ThermalEquipment":
            return self._thermal_equipment(request, parts[1:], method)
        raise Refused(404, "ResourceMissingAtURI", request.path)

    # --- thermal equipment: a coolant loop a module ---------------------------------------------------

    def _thermal_equipment(self, request: web.Request, parts: list[str], method: str) -> web.StreamResponse:
        view = self.gateway.view
        missing = Refused(404, "ResourceMissingAtURI", request.path)
        match parts:
            case []:
                self._allow(method, ("GET",))
                return _json(rs.thermal_equipment())
            case ["CoolingLoops"]:
                self._allow(method, ("GET",))
                return _json(rs.cooling_loops(view))
            case ["CoolingLoops", lid] | ["CoolingLoops", lid, "PrimaryCoolantConnectors"]:
                node = view.nodes.get(int(lid)) if lid.isdigit() and str(int(lid)) == lid else None
                if node is None:
                    raise missing
                node.judge(time.monotonic(), self.alive_window)
                self._allow(method, ("GET",))
                return _json(rs.cooling_loop(node) if len(parts) == 2 else rs.cooling_loop_connectors(node))
        raise missing

    # --- the event service ---------------------------------------------------------------------------

    async def _event_service(
        self, request: web.Request, parts: list[str], method: str, who: Who | None
    ) -> web.StreamResponse:
        es = self.events
        missing = Refused(404, "ResourceMissingAtURI", request.path)
        if not parts:
            self._allow(method, ("GET", "PATCH"))
            if method == "PATCH":
                self._writer(who)
                await self._patch_event_service(request)
            return _json(ev.event_service(es.attempts, es.interval))
        if parts == ["SSE"]:
            self._allow(method, ("GET",))
            return await self._sse(request)
        if parts[0] != "Subscriptions" or len(parts) > 2:
            raise missing
        if len(parts) == 1:
            self._allow(method, ("GET", "POST"))
            if method == "GET":
                return _json(ev.subscriptions(sorted(es.subs, key=int)))
            self._writer(who)
            sub = await self._subscribe(request)
            return _json(ev.subscription(sub), 201, {"Location": f"{ev.SUBSCRIPTIONS}/{sub.id}"})
        sub_ = es.subs.get(parts[1])
        if sub_ is None:
            raise missing
        self._allow(method, ("GET", "DELETE"))
        if method == "GET":
            return _json(ev.subscription(sub_))
        self._writer(who)
        await es.remove(sub_.id)
        return web.Response(status=204, headers=HEADERS)

    async def _patch_event_service(self, request: web.Request) -> None:
        body = await self._body(request)
        props = {k: v for k, v in body.items() if not k.startswith("@")}
        if not props:
            raise Refused(400, "NoOperation")
        limits = {"DeliveryRetryAttempts": (0, 10), "DeliveryRetryIntervalSeconds": (1, 600)}
        for key, value in props.items():
            if key not in limits:
                known = {"Id", "Name", "ServiceEnabled", "EventFormatTypes", "RegistryPrefixes", "Status",
                         "ServerSentEventUri", "Subscriptions"}  # fmt: skip
                raise Refused(400, "PropertyNotWritable" if key in known else "PropertyUnknown", key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise Refused(400, "PropertyValueTypeError", json.dumps(value), key)
            lo, hi = limits[key]
            if not lo <= value <= hi:
                raise Refused(400, "PropertyValueOutOfRange", json.dumps(value), key)
        self.events.attempts = props.get("DeliveryRetryAttempts", self.events.attempts)
        self.events.interval = props.get("DeliveryRetryIntervalSeconds", self.events.interval)

    async def _subscribe(self, request: web.Request) -> Subscription:
        body = await self._body(request)
        allowed = {"Destination", "Context", "Protocol", "DeliveryRetryPolicy", "RegistryPrefixes", "MessageIds",
                   "EventFormatType", "SubscriptionType"}  # fmt: skip
        for key in body:
            if key not in allowed and not key.startswith("@"):
                raise Refused(400, "PropertyUnknown", key)
        for key in ("Destination", "Protocol"):
            if key not in body:
                raise Refused(400, "PropertyMissing", key)
        dest = body["Destination"]
        if not isinstance(dest, str):
            raise Refused(400, "PropertyValueTypeError", json.dumps(dest), "Destination")
        try:
            url = urllib.parse.urlsplit(dest)
            ok = url.scheme in ("http", "https") and bool(url.hostname) and len(dest) <= 2048 and url.port != 0
        except ValueError:  # a port out of range
            ok = False
        if not ok:
            raise Refused(400, "PropertyValueFormatError", dest, "Destination")
        enums = {"Protocol": ("Redfish",), "DeliveryRetryPolicy": ev.RETRY_POLICIES, "EventFormatType": ("Event",),
                 "SubscriptionType": ("RedfishEvent",)}  # fmt: skip
        for key, values in enums.items():
            if key in body and body[key] not in values:
                raise Refused(400, "PropertyValueNotInList", json.dumps(body[key]), key)
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("RegistryPrefixes", "MessageIds"):
            value = body.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise Refused(400, "PropertyValueTypeError", json.dumps(value), key)
            lists[key] = tuple(value)
        for prefix in lists["RegistryPrefixes"]:
            if prefix not in ev.REGISTRY_PREFIXES:
                raise Refused(400, "PropertyValueNotInList", prefix, "RegistryPrefixes")
        context = body.get("Context")
        if context is not None and not isinstance(context, str):
            raise Refused(400, "PropertyValueTypeError", json.dumps(context), "Context")
        if len(self.events.subs) >= EventService.LIMIT:
            raise Refused(400, "CreateLimitReachedForResource")
        sub = Subscription(
            self.events.new_id(), dest, context, body.get("DeliveryRetryPolicy", "SuspendRetries"),
            lists["RegistryPrefixes"], lists["MessageIds"],
        )  # fmt: skip
        self.events.add(sub)
        return sub

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        """The SSE stream (DSP0266 "Server-sent events"): every event from now on, one ``id:`` and
        ``data:`` (the Event JSON) each; a comment every 15 s keeps idle links open."""
        wanted = None
        if "$filter" in request.query:  # DSP0266: the subset of properties an SSE stream filters on
            text = request.query["$filter"]
            try:
                wanted = ev.sse_filter(text)
            except ev.FilterError as e:
                log.info("redfish: SSE $filter refused: %s", e)
                raise Refused(400, "QueryParameterValueFormatError", e.part, "$filter") from None
        resp = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream", "Connection": "keep-alive"})
        await resp.prepare(request)
        stream = self.events.open_stream(wanted)
        await resp.write(b": open\n\n")  # the headers leave now, not with the first event
        try:
            while True:
                try:
                    item = await asyncio.wait_for(stream.get(), 15.0)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if item is None:
                    break
                eid, body = item
                data = json.dumps(body, separators=(",", ":"))
                await resp.write(f"id: {eid}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self.events.close_stream(stream)
        return resp

    # --- aggregation ---------------------------------------------------------------------------------

    def _aggregation(self, request: web.Request, parts: list[str], method: str) -> web.StreamResponse:
        gw = self.gateway
        fleet = gw.view.fleet
        self._allow(method, ("GET",))
        match parts:
            case []:
                return _json(rs.aggregation_service(fleet))
            case ["AggregationSources"]:
                return _json(rs.aggregation_sources(fleet))
            case ["AggregationSources", name] if name == fleet:
                return _json(rs.aggregation_source(gw.view, gw.source, gw.connected))
            case ["Aggregates"]:
                return _json(rs.aggregates(fleet))
            case ["Aggregates", name] if name == fleet:
                return _json(rs.aggregate(gw.view))
            case ["ConnectionMethods"]:
                return _json(rs.connection_methods())
            case ["ConnectionMethods", rs.CONNECTION_METHOD]:
                return _json(rs.connection_method(fleet))
        raise Refused(404, "ResourceMissingAtURI", request.path)

    # --- registries ---------------------------------------------------------------------------------

    def _registries(self, request: web.Request, parts: list[str], method: str) -> web.StreamResponse:
        names = [*STANDARD_REGISTRIES, ev.OEM_REGISTRY]
        by_prefix = {n.split(".")[0]: n for n in names}
        self._allow(method, ("GET",))
        if not parts:
            return _json(rs.registries(names))
        name = by_prefix.get(parts[0])
        if name is None or len(parts) > 2:
            raise Refused(404, "ResourceMissingAtURI", request.path)
        local = name == ev.OEM_REGISTRY
        if len(parts) == 1:
            return _json(rs.registry_file(name, local=local))
        if local and parts[1] == f"{name}.json":
            return _json(ev.oem_registry())
        raise Refused(404, "ResourceMissingAtURI", request.path)

    # --- sessions ---------------------------------------------------------------------------------

    async def _sessions(
        self, request: web.Request, parts: list[str], method: str, who: Who | None
    ) -> web.StreamResponse:
        auth = self.authority
        if not parts:
            self._allow(method, ("GET",))
            return _json(rs.session_service(int(auth.session_timeout)))
        if parts[0] != "Sessions" or len(parts) > 2:
            raise Refused(404, "ResourceMissingAtURI", request.path)
        if len(parts) == 1:
            self._allow(method, ("GET", "POST"))
            if method == "GET":
                auth.expire()
                assert who is not None
                mine = [s.id for s in auth.sessions.values() if who.account.can_write or s.account is who.account]
                return _json(rs.sessions(mine))
            return await self._login(request)
        sid = parts[1]
        s = auth.sessions.get(sid)
        assert who is not None
        if s is None or not (who.account.can_write or s.account is who.account):
            raise Refused(404, "ResourceMissingAtURI", request.path)
        self._allow(method, ("GET", "DELETE"))
        if method == "GET":
            return _json(rs.session(s.id, s.account.user))
        auth.close(sid)
        return web.Response(status=204, headers=HEADERS)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        for key in body:
            if key not in ("UserName", "Password") and not key.startswith("@"):
                raise Refused(400, "PropertyUnknown", key)
        for key in ("UserName", "Password"):
            if key not in body:
                raise Refused(400, "PropertyMissing", key)
            if not isinstance(body[key], str):
                raise Refused(400, "PropertyValueTypeError", json.dumps(body[key]) if key == "UserName" else "", key)
        acct = self.authority.check_password(body["UserName"], body["Password"])
        if acct is None:
            raise Refused(401, "NoValidSession")
        s = self.authority.open(acct)
        if s is None:
            raise Refused(503, "ServiceTemporarilyUnavailable", "60")
        uri = f"{SESSIONS}/{s.id}"
        return _json(rs.session(s.id, acct.user), 201, {"X-Auth-Token": s.token, "Location": uri})

    async def _body(self, request: web.Request, *, empty: bool = False) -> dict[str, Any]:
        """The request's JSON object; ``empty``: no body at all reads as ``{}`` (an action's)."""
        try:
            raw = await request.read()
            if empty and not raw.strip():
                return {}
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise Refused(400, "MalformedJSON") from None
        except web.HTTPRequestEntityTooLarge:
            raise Refused(413, "GeneralError") from None
        if not isinstance(body, dict):
            raise Refused(400, "MalformedJSON")
        return body

    # --- chassis ----------------------------------------------------------------------------------

    async def _chassis(
        self, request: web.Request, parts: list[str], method: str, who: Who | None
    ) -> web.StreamResponse:
        view = self.gateway.view
        missing = Refused(404, "ResourceMissingAtURI", request.path)
        if not parts:
            self._allow(method, ("GET",))
            return _json(rs.chassis_collection(view))
        try:
            node_id = int(parts[0])
        except ValueError:
            raise missing from None
        if str(node_id) != parts[0] or node_id not in view.nodes:
            raise missing
        node = view.nodes[node_id]
        node.judge(time.monotonic(), self.alive_window)
        rest = parts[1:]
        match rest:
            case []:
                self._allow(method, ("GET",))
                return _json(rs.chassis(node))
            case ["Sensors"]:
                self._allow(method, ("GET",))
                return _json(rs.sensors(node))
            case ["Sensors", sid]:
                body = rs.sensor(node, sid)
                if body is None:
                    raise missing
                self._allow(method, ("GET",))
                return _json(body)
            case ["PowerSubsystem"]:
                self._allow(method, ("GET",))
                return _json(rs.power_subsystem(node))
            case ["ThermalSubsystem"]:
                self._allow(method, ("GET",))
                return _json(rs.thermal_subsystem(node))
            case ["ThermalSubsystem", "ThermalMetrics"]:
                self._allow(method, ("GET",))
                return _json(rs.thermal_metrics(node))
            case ["ThermalSubsystem", "Pumps"]:
                self._allow(method, ("GET",))
                return _json(rs.pumps(node))
            case ["ThermalSubsystem", "Pumps", index]:
                p = rs.pump(node, int(index)) if index.isdigit() and str(int(index)) == index else None
                if p is None:
                    raise missing
                self._allow(method, ("GET",))
                return _json(p)
            case ["ThermalSubsystem", "CoolantConnectors"]:
                self._allow(method, ("GET",))
                return _json(rs.coolant_connectors(node))
            case ["ThermalSubsystem", "CoolantConnectors", rs.COLD_PLATE]:
                self._allow(method, ("GET",))
                return _json(rs.coolant_connector(node))
            case ["Memory"]:
                self._allow(method, ("GET",))
                return _json(rs.memory_collection(node))
            case ["Memory", mid] | ["Memory", mid, "MemoryMetrics"]:
                stack = rs.memory_stack(node, mid)
                if stack is None:
                    raise missing
                self._allow(method, ("GET",))
                return _json(rs.memory(node, stack) if len(rest) == 2 else rs.memory_metrics(node, stack))
            case ["LogServices"]:
                self._allow(method, ("GET",))
                return _json(ev.log_services(node))
            case ["LogServices", ev.EVENT_LOG]:
                self._allow(method, ("GET",))
                return _json(ev.log_service(node))
            case ["LogServices", ev.EVENT_LOG, "Entries"]:
                self._allow(method, ("GET",))
                return _json(ev.log_entries(node, self.gateway.log(node_id)))
            case ["LogServices", ev.EVENT_LOG, "Entries", rid]:
                rec = ev.find(self.gateway.log(node_id), rid)
                if rec is None:
                    raise missing
                self._allow(method, ("GET",))
                return _json(ev.log_entry(rec))
            case ["Controls"]:
                self._allow(method, ("GET",))
                return _json(rs.controls(node))
            case [rs.RESET_ACTION_INFO]:
                self._allow(method, ("GET",))
                return _json(rs.reset_action_info(node))
            case ["Actions", "Chassis.Reset"]:
                self._allow(method, ("POST",))
                self._writer(who)
                await self._reset(request, node_id)
                return web.Response(status=204, headers=HEADERS)
            case ["Controls", cid] if cid.startswith("Valve"):
                valve = rs.valve_index(node, cid)
                if valve is None:
                    raise missing
                self._allow(method, ("GET", "PATCH"))
                if method == "PATCH":
                    self._writer(who)
                    answer = await self._patch_valve(request, node_id, valve)
                    # the control as the module reports it after its answer
                    await self.gateway.next_telemetry(node_id, after_seq=answer)
                return _json(rs.valve_control(self.gateway.view.nodes[node_id], valve))
            case ["Controls", rs.POWER_LIMIT]:
                self._allow(method, ("GET", "PATCH"))
                if method == "PATCH":
                    self._writer(who)
                    await self._patch_power_limit(request, node_id)
                return _json(rs.power_limit_control(self.gateway.view.nodes[node_id]))
        raise missing

    async def _reset(self, request: web.Request, node_id: int) -> None:
        body = await self._body(request, empty=True)
        for key, value in body.items():
            if key.startswith("@"):
                continue
            if key != "ResetType":
                raise Refused(400, "ActionParameterUnknown", "Reset", key)
            if not isinstance(value, str):
                raise Refused(400, "ActionParameterValueTypeError", json.dumps(value), "ResetType", "Reset")
            if value not in rs.RESET_TYPES:
                raise Refused(400, "ActionParameterValueNotInList", value, "ResetType", "Reset")
        await self._command(node_id, self.gateway.reset(node_id))

    async def _command(self, node_id: int, request: Any, field: tuple[str, str] | None = None) -> int:
        """Send a command (the awaitable ``request``) to an online node; its refusals as Redfish
        errors (``field``: the value and property a BAD_ARGUMENT is about); the sequence number of
        its answer."""
        if not self.gateway.view.nodes[node_id].online:
            request.close()
            raise Refused(503, "ServiceTemporarilyUnavailable", "10")
        try:
            resp = await request
        except HostError as e:
            log.info("redfish: node %d: command not answered: %s", node_id, e)
            raise Refused(503, "ServiceTemporarilyUnavailable", "10") from None
        if resp.status == Status.BAD_ARGUMENT and field is not None:
            raise Refused(400, "PropertyValueOutOfRange", *field)
        if resp.status == Status.REFUSED:
            raise Refused(503, "ServiceTemporarilyUnavailable", "1")
        if resp.status != Status.OK:
            log.info("redfish: node %d answered %s: %s", node_id, resp.status, resp.message)
            raise Refused(500, "InternalError")
        return int(resp.seq)

    async def _patch_valve(self, request: web.Request, node_id: int, index: int) -> int:
        """``{"SetPoint": PCT}`` holds the valve (ControlMode becomes Override); ``{"ControlMode":
        "Automatic"}`` (or ``"SetPoint": null``) gives it back to the module's controller. The
        sequence number of the node's answer."""
        body = await self._body(request)
        props = {k: v for k, v in body.items() if not k.startswith("@")}
        for key in props:
            if key in ("SetPoint", "ControlMode"):
                continue
            if key in CONTROL_READ_ONLY:
                raise Refused(400, "PropertyNotWritable", key)
            raise Refused(400, "PropertyUnknown", key)
        if not props:
            raise Refused(400, "NoOperation")
        mode = props.get("ControlMode")
        if mode is not None and mode not in ("Automatic", "Override"):
            raise Refused(400, "PropertyValueNotInList", json.dumps(mode), "ControlMode")
        value = props.get("SetPoint")
        shown = json.dumps(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise Refused(400, "PropertyValueTypeError", shown, "SetPoint")
        if value is not None and not (math.isfinite(value) and 0 <= value <= 100):
            raise Refused(400, "PropertyValueOutOfRange", shown, "SetPoint")
        if mode == "Automatic" or ("SetPoint" in props and value is None):
            if value is not None:  # both: a held position and automatic control
                raise Refused(400, "PropertyValueIncorrect", "ControlMode", "Automatic")
            return await self._command(node_id, self.gateway.set_valve(node_id, index, None))
        if value is None:  # Override without a set point: hold it where it is
            raise Refused(400, "PropertyMissing", "SetPoint")
        return await self._command(node_id, self.gateway.set_valve(node_id, index, float(value)), (shown, "SetPoint"))

    async def _patch_power_limit(self, request: web.Request, node_id: int) -> None:
        body = await self._body(request)
        props = {k: v for k, v in body.items() if not k.startswith("@")}
        for key in props:
            if key in CONTROL_READ_ONLY:
                raise Refused(400, "PropertyNotWritable", key)
            if key not in CONTROL_WRITABLE:
                raise Refused(400, "PropertyUnknown", key)
        if not props:
            raise Refused(400, "NoOperation")
        value = props["SetPoint"]
        shown = json.dumps(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise Refused(400, "PropertyValueTypeError", shown, "SetPoint")
        watts = None if value is None else float(value)
        node = self.gateway.view.nodes[node_id]
        if watts is not None:
            lim = node.limits
            if not math.isfinite(watts) or (lim is not None and not (lim.min_w <= watts <= lim.max_w)):
                raise Refused(400, "PropertyValueOutOfRange", shown, "SetPoint")
        if not node.online:
            raise Refused(503, "ServiceTemporarilyUnavailable", "10")
        try:
            resp = await self.gateway.set_power_limit(node_id, watts)
        except HostError as e:
            log.info("redfish: node %d: power limit not set: %s", node_id, e)
            raise Refused(503, "ServiceTemporarilyUnavailable", "10") from None
        if resp.status == Status.BAD_ARGUMENT:
            raise Refused(400, "PropertyValueOutOfRange", shown, "SetPoint")
        if resp.status == Status.REFUSED:
            raise Refused(503, "ServiceTemporarilyUnavailable", "1")
        if resp.status != Status.OK:
            log.info("redfish: node %d answered %s: %s", node_id, resp.status, resp.message)
            raise Refused(500, "InternalError")
