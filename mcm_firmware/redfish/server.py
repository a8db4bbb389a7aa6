"""The Redfish service over HTTP (aiohttp): routing, authentication, request bodies, errors.

Resources come from :mod:`.resources` (pure), node state and commands from a
:class:`~.gateway.Gateway`. Every refused request is answered with a message of the Base registry
and counted by its MessageId (``RedfishServer.refused``; logged when the service stops).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..host.client import HostError
from ..protocol import Status
from . import events as ev
from . import resources as rs
from .auth import Account, Authority, Session
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


class RedfishServer:
    """The HTTP side of the service; ``start`` binds ``host:port`` (port 0: any free one, see
    ``port`` after start)."""

    def __init__(
        self, gateway: Gateway, authority: Authority, *, version: str = "0", alive_window: float = 3.0
    ) -> None:
        """``alive_window``: a node from which no fresh frame came for this long (s) is shown
        offline (three periods of the slowest telemetry of the shipped profiles, 1 Hz)."""
        self.gateway = gateway
        self.alive_window = alive_window
        self.authority = authority
        self.version = version
        self.requests = 0
        self.refused: Counter[str] = Counter()  # by MessageId
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # the bound socket's port, for port 0
        socks = getattr(server, "sockets", None) or []
        self.port = socks[0].getsockname()[1] if socks else port

    async def stop(self) -> None:
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
            if name.startswith("$") or name in REDFISH_QUERY:
                raise Refused(501, "QueryParameterUnsupported", name)
        if path not in OPEN_PATHS and not (path == SESSIONS and method == "POST"):
            who = self._authenticate(request)
        else:
            who = None
        if method == "HEAD":
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

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
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
            case ["Controls", rs.POWER_LIMIT]:
                self._allow(method, ("GET", "PATCH"))
                if method == "PATCH":
                    self._writer(who)
                    await self._patch_power_limit(request, node_id)
                return _json(rs.power_limit_control(self.gateway.view.nodes[node_id]))
        raise missing

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
