"""What a node tells and what changes on it, as Redfish messages: log entries (LogService) and
events (EventService). Pure: from decoded frames and the node's view to records; no I/O.

A node's EVENT is told with a message of DMTF's registries where one fits (a pump failed:
Environmental.PumpFailed; a VRM overcurrent: Power.CurrentCritical; an uncorrectable memory error:
ResourceEvent.ResourceErrorsDetected), else with the message of its code in the service's own
registry (``McmEmu.1.0.0``, served at ``/redfish/v1/Registries/McmEmu``). A change of a module's
health or state, judged at every frame, is ResourceEvent.ResourceStatusChanged*/ResourceStateChanged.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Event, EventCode
from ..protocol.vocabulary import Severity
from . import resources as rs
from .registry import EVENTS, Msg, fill
from .state import NodeView

OEM_REGISTRY = "McmEmu.1.0.0"
OEM_PREFIX = "McmEmu.1.0"
LOG_LIMIT = 500  # entries kept per node, the newest

# the registry message's severity for an event code of the service's own registry
_CRITICAL = {EventCode.THERMAL_SHUTDOWN, EventCode.NATURAL_CONVECTION, EventCode.REMAP_FAILED}
_WARNING = {
    EventCode.FRAME_REJECTED, EventCode.EVENTS_SUPPRESSED, EventCode.CLOCK_REASONS, EventCode.FAILSAFE_ENTER,
    EventCode.PUMP_FAILOVER, EventCode.SENSOR_FAULT, EventCode.REMAP_PENDING, EventCode.CE_STORM,
    EventCode.XID, EventCode.RIG_LOST, EventCode.FAULT_INJECTED,
}  # fmt: skip


def _key(code: EventCode) -> str:
    return "".join(w.capitalize() for w in code.name.split("_"))


def _oem_message(code: EventCode) -> Msg:
    phrase = code.name.replace("_", " ").lower()
    severity = "Critical" if code in _CRITICAL else "Warning" if code in _WARNING else "OK"
    return Msg(
        f"The module reported {phrase} (subject %1, value %2): %3",
        3,
        severity,
        "See docs/protocol.md (events) and docs/faults.md of mcm-emu for the event and what to do.",
    )


OEM_MESSAGES: dict[str, Msg] = {_key(c): _oem_message(c) for c in EventCode}
OEM_MESSAGES["UnknownEvent"] = Msg(
    "The module reported an event of unknown code %1 (subject %2): %3",
    3,
    "Warning",
    "Check that the service and the module's firmware are of the same version.",
)


def oem_registry() -> dict[str, Any]:
    """The service's own message registry (MessageRegistry.v1_7_0), one message per event code."""
    return {
        "@odata.type": rs.type_of("MessageRegistry"),
        "Id": OEM_REGISTRY,
        "Name": "mcm-emu module events",
        "Language": "en",
        "Description": "The events of an mcm-emu module's management controller (EVENT frames) that no "
        "DMTF registry has a message for.",
        "RegistryPrefix": "McmEmu",
        "RegistryVersion": "1.0.0",
        "OwningEntity": "mcm-emu",
        "Messages": {
            key: {
                "Description": f"The module's controller sent the EVENT {key}.",
                "Message": m.text,
                "NumberOfArgs": m.args,
                "ParamTypes": ["number", "number", "string"],
                "MessageSeverity": m.severity,
                "Resolution": m.resolution,
            }
            for key, m in OEM_MESSAGES.items()
        },
    }


def severity(level: int) -> str:
    """LogEntry Severity (Resource.Health) of an event's severity."""
    if level >= Severity.ERROR:
        return "Critical"
    return "Warning" if level >= Severity.WARNING else "OK"


def timestamp(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Record:
    """One thing to log and tell subscribers of."""

    node: int
    id: int  # per node, from 1
    created_ns: int
    severity: str
    message_id: str
    message: str
    args: tuple[str, ...]
    origin: str  # the URI of the resource concerned
    event: bool  # from a node's EVENT (else a change the service saw)


@dataclass
class NodeLog:
    entries: deque[Record] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    next_id: int = 1
    health: str | None = None  # the module's health and state as last told
    state: str | None = None

    def add(self, view: NodeView, created_ns: int, sev: str, registry: str, key: str, args: tuple[object, ...],
            origin: str, *, event: bool) -> Record:  # fmt: skip
        if registry == OEM_REGISTRY:
            msg = OEM_MESSAGES[key]
            prefix = OEM_PREFIX
        else:
            msg = EVENTS[registry][key]
            prefix = registry.rsplit(".", 1)[0]
        if len(args) != msg.args:
            raise ValueError(f"{key} takes {msg.args} arguments, got {len(args)}")
        shown = tuple(str(a) for a in args)
        rec = Record(
            view.node, self.next_id, created_ns, sev, f"{prefix}.{key}", fill(msg.text, shown), shown, origin, event
        )
        self.next_id += 1
        self.entries.append(rec)
        return rec


def _value(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.3f}"


def from_event(log: NodeLog, view: NodeView, ev: Event) -> Record:
    """The log record of a node's EVENT."""
    node = view.node
    sev = severity(ev.severity)
    when = ev.timestamp_ns
    try:
        code = EventCode(ev.code)
    except ValueError:
        code = None
    if code == EventCode.PUMP_FAULT:
        name = view.pump_names[ev.subject] if ev.subject < len(view.pump_names) else str(ev.subject)
        return log.add(view, when, sev, "Environmental.1.4.0", "PumpFailed", (name,),
                       rs.pump_uri(node, ev.subject), event=True)  # fmt: skip
    if code == EventCode.VRM_OVERCURRENT:
        return log.add(view, when, sev, "Power.1.2.0", "CurrentCritical", ("VRMCurrent", _value(ev.value)),
                       rs.sensor_uri(node, "VRMCurrent"), event=True)  # fmt: skip
    if code == EventCode.UE:
        return log.add(view, when, sev, "ResourceEvent.1.4.3", "ResourceErrorsDetected",
                       ("UncorrectableECCErrorCount", "UncorrectableECC"), rs.memory_uri(node, ev.subject),
                       event=True)  # fmt: skip
    if code is None:
        return log.add(view, when, sev, OEM_REGISTRY, "UnknownEvent", (ev.code, ev.subject, ev.text or "-"),
                       rs.chassis_uri(node), event=True)  # fmt: skip
    return log.add(view, when, sev, OEM_REGISTRY, _key(code), (ev.subject, _value(ev.value), ev.text or "-"),
                   rs.chassis_uri(node), event=True)  # fmt: skip


def changes(log: NodeLog, view: NodeView, now_ns: int) -> list[Record]:
    """Records of a change of the module's health or state since they were last told (none the
    first time a module is judged: with its first telemetry, or offline)."""
    out: list[Record] = []
    if view.online and not view.has_telemetry:
        return out  # nothing to judge yet: a module is first judged with its first telemetry
    uri = rs.chassis_uri(view.node)
    health, state = rs.health_of(view), rs.state_of(view)
    if log.state is not None and state != log.state:
        out.append(log.add(view, now_ns, "OK", "ResourceEvent.1.4.3", "ResourceStateChanged", (uri, state), uri,
                           event=False))  # fmt: skip
    if log.health is not None and health != log.health:
        key = f"ResourceStatusChanged{health}"
        out.append(log.add(view, now_ns, health, "ResourceEvent.1.4.3", key, (uri, health), uri, event=False))
    log.health, log.state = health, state
    return out


# --- the LogService of a module ----------------------------------------------------------------------

EVENT_LOG = "EventLog"


def log_uri(node: int) -> str:
    return f"{rs.chassis_uri(node)}/LogServices/{EVENT_LOG}"


def log_services(view: NodeView) -> dict[str, Any]:
    return rs.collection(
        "LogServiceCollection", f"{rs.chassis_uri(view.node)}/LogServices", f"Logs of module {view.node}",
        [log_uri(view.node)],
    )  # fmt: skip


def log_service(view: NodeView) -> dict[str, Any]:
    uri = log_uri(view.node)
    return {
        "@odata.type": rs.type_of("LogService"),
        "@odata.id": uri,
        "Id": EVENT_LOG,
        "Name": f"Event log of module {view.node}",
        "Description": "The module's events (EVENT frames) and the changes of its health and state the service saw.",
        "LogEntryType": "Event",
        "MaxNumberOfRecords": LOG_LIMIT,
        "OverWritePolicy": "WrapsWhenFull",
        "ServiceEnabled": True,
        "Entries": rs.link(f"{uri}/Entries"),
        "Status": {"State": "Enabled", "Health": "OK"},
    }


def entry_uri(node: int, rid: int) -> str:
    return f"{log_uri(node)}/Entries/{rid}"


def log_entries(view: NodeView, log: NodeLog) -> dict[str, Any]:
    """The newest entries first, each in full (the schema expands the members of a LogEntryCollection)."""
    out = rs.collection(
        "LogEntryCollection", f"{log_uri(view.node)}/Entries", f"Event log entries of module {view.node}", ()
    )
    out["Members"] = [log_entry(r) for r in reversed(log.entries)]
    out["Members@odata.count"] = len(out["Members"])
    return out


def find(log: NodeLog, rid: str) -> Record | None:
    if not rid.isdigit() or str(int(rid)) != rid:
        return None
    return next((r for r in log.entries if r.id == int(rid)), None)


def log_entry(rec: Record) -> dict[str, Any]:
    return {
        "@odata.type": rs.type_of("LogEntry"),
        "@odata.id": entry_uri(rec.node, rec.id),
        "Id": str(rec.id),
        "Name": f"Event {rec.id} of module {rec.node}",
        "EntryType": "Event",
        "Severity": rec.severity,
        "Created": timestamp(rec.created_ns),
        "MessageId": rec.message_id,
        "Message": rec.message,
        "MessageArgs": list(rec.args),
        "Links": {"OriginOfCondition": rs.link(rec.origin)},
    }


# --- the EventService --------------------------------------------------------------------------------

EVENT_SERVICE = f"{rs.ROOT}/EventService"
SUBSCRIPTIONS = f"{EVENT_SERVICE}/Subscriptions"
SSE_URI = f"{EVENT_SERVICE}/SSE"
RETRY_POLICIES = ("SuspendRetries", "TerminateAfterRetries")
REGISTRY_PREFIXES = ("Environmental", "Power", "ResourceEvent", "McmEmu")


@dataclass
class Subscription:
    id: str
    destination: str
    context: str | None = None
    policy: str = "SuspendRetries"
    prefixes: tuple[str, ...] = ()  # only messages of these registries (none: all)
    message_ids: tuple[str, ...] = ()  # only these messages (none: all)
    suspended: bool = False
    delivered: int = 0  # events delivered
    failed: int = 0  # delivery attempts that failed
    dropped: int = 0  # events dropped because the queue of the subscription was full

    def wants(self, rec: Record) -> bool:
        prefix = rec.message_id.split(".", 1)[0]
        key = rec.message_id.rsplit(".", 1)[1]
        if self.prefixes and prefix not in self.prefixes:
            return False
        return not self.message_ids or any(m in (rec.message_id, f"{prefix}.{key}") for m in self.message_ids)


def event_service(attempts: int, interval: int) -> dict[str, Any]:
    return {
        "@odata.type": rs.type_of("EventService"),
        "@odata.id": EVENT_SERVICE,
        "Id": "EventService",
        "Name": "Event Service",
        "ServiceEnabled": True,
        "DeliveryRetryAttempts": attempts,
        "DeliveryRetryIntervalSeconds": interval,
        "EventFormatTypes": ["Event"],
        "RegistryPrefixes": list(REGISTRY_PREFIXES),
        "ServerSentEventUri": SSE_URI,
        "Subscriptions": rs.link(SUBSCRIPTIONS),
        "Status": {"State": "Enabled", "Health": "OK"},
    }


def subscriptions(ids: list[str]) -> dict[str, Any]:
    return rs.collection(
        "EventDestinationCollection", SUBSCRIPTIONS, "Event subscriptions", (f"{SUBSCRIPTIONS}/{i}" for i in ids)
    )


def subscription(sub: Subscription) -> dict[str, Any]:
    return {
        "@odata.type": rs.type_of("EventDestination"),
        "@odata.id": f"{SUBSCRIPTIONS}/{sub.id}",
        "Id": sub.id,
        "Name": f"Event subscription {sub.id}",
        "Destination": sub.destination,
        "Context": sub.context,
        "Protocol": "Redfish",
        "SubscriptionType": "RedfishEvent",
        "EventFormatType": "Event",
        "DeliveryRetryPolicy": sub.policy,
        "RegistryPrefixes": list(sub.prefixes),
        "MessageIds": list(sub.message_ids),
        "Status": {
            "State": "Disabled" if sub.suspended else "Enabled",
            "Health": "OK" if not sub.failed else "Warning",
        },
    }


def event_payload(recs: list[Record], event_id: int, context: str | None) -> dict[str, Any]:
    """An Event (DSP0266 "Event message objects") carrying ``recs``."""
    out: dict[str, Any] = {
        "@odata.type": rs.type_of("Event"),
        "Id": str(event_id),
        "Name": "mcm-emu module events",
        "Events": [
            {
                "MemberId": str(i),
                "EventId": f"{r.node}.{r.id}",
                "EventTimestamp": timestamp(r.created_ns),
                "MessageSeverity": r.severity,
                "MessageId": r.message_id,
                "Message": r.message,
                "MessageArgs": list(r.args),
                "OriginOfCondition": rs.link(r.origin),
            }
            for i, r in enumerate(recs)
        ],
    }
    if context is not None:
        out["Context"] = context
    return out


# --- $filter of the SSE stream (DSP0266 "Server-sent events") ----------------------------------------

# the properties DSP0266 lets an SSE client filter on
SSE_FILTER_PROPERTIES = (
    "EventFormatType", "MessageId", "MetricReportDefinition", "OriginResource", "RegistryPrefix", "ResourceType",
)  # fmt: skip
_RESOURCE_TYPES = (  # the type of an origin, by the last collection in its URI
    ("/Pumps/", "Pump"), ("/Memory/", "Memory"), ("/Sensors/", "Sensor"), ("/Controls/", "Control"),
)  # fmt: skip


class FilterError(ValueError):
    """A ``$filter`` that cannot be used; ``part`` is what is wrong in it."""

    def __init__(self, part: str, why: str) -> None:
        super().__init__(f"{why}: {part}")
        self.part = part


def resource_type(origin: str) -> str:
    """The schema type of the resource at ``origin`` (an origin the service logs)."""
    for marker, kind in _RESOURCE_TYPES:
        if marker in origin:
            return kind
    return "Chassis"


def _matches(prop: str, value: str, rec: Record) -> bool:
    if prop == "EventFormatType":
        return value == "Event"  # the stream sends Events only, no metric reports
    if prop == "MetricReportDefinition":
        return False
    if prop == "OriginResource":
        return rec.origin == value.rstrip("/")
    if prop == "RegistryPrefix":
        return rec.message_id.split(".", 1)[0] == value
    if prop == "ResourceType":
        return resource_type(rec.origin) == value
    prefix, key = rec.message_id.split(".", 1)[0], rec.message_id.rsplit(".", 1)[1]
    return value in (rec.message_id, f"{prefix}.{key}")  # MessageId, with or without the version


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            out.append(ch)
            i += 1
        elif ch == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise FilterError(text[i:], "a quoted value is not closed")
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":  # '' is a quote inside the value
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            out.append("'" + "".join(buf))  # marked as a value
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "()'":
                j += 1
            out.append(text[i:j])
            i = j
    return out


def sse_filter(text: str) -> Callable[[Record], bool]:
    """The records a ``$filter`` of the SSE stream lets through: comparisons ``PROPERTY eq VALUE``
    (a property of ``SSE_FILTER_PROPERTIES``; the value quoted or a bare word) joined by ``and``
    and ``or`` (``and`` first), in parentheses as needed. FilterError names what is wrong."""
    toks = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(toks):
            raise FilterError(text, "the filter ends too soon")
        pos += 1
        return toks[pos - 1]

    def atom() -> Callable[[Record], bool]:
        tok = take()
        if tok == "(":
            inner = any_of()
            if take() != ")":
                raise FilterError(text, "a parenthesis is not closed")
            return inner
        if tok not in SSE_FILTER_PROPERTIES:
            raise FilterError(tok.lstrip("'"), "not a property an SSE stream can be filtered on")
        op = take()
        if op != "eq":
            raise FilterError(f"{tok} {op.lstrip(chr(39))}", "only 'eq' compares a property")
        raw = take()
        if raw in ("(", ")", "and", "or"):
            raise FilterError(f"{tok} eq {raw}", "a value is missing")
        value = raw[1:] if raw.startswith("'") else raw
        return lambda rec: _matches(tok, value, rec)

    def all_of() -> Callable[[Record], bool]:
        parts = [atom()]
        while peek() == "and":
            take()
            parts.append(atom())
        return parts[0] if len(parts) == 1 else (lambda rec: all(p(rec) for p in parts))

    def any_of() -> Callable[[Record], bool]:
        parts = [all_of()]
        while peek() == "or":
            take()
            parts.append(all_of())
        return parts[0] if len(parts) == 1 else (lambda rec: any(p(rec) for p in parts))

    if not toks:
        raise FilterError(text, "the filter is empty")
    wanted = any_of()
    if pos != len(toks):
        raise FilterError(" ".join(t.lstrip("'") for t in toks[pos:]), "unexpected after the filter")
    return wanted
