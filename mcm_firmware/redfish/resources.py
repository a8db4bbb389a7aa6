"""Redfish resources (DSP0266) of an emulated fleet, built from what the service knows of its nodes.

Pure functions from :class:`~.state.NodeView` (and the fleet) to Redfish JSON; no I/O. Types and
properties are those of DMTF's published schemas (DSP8010 2025.x: the versions in ``TYPES``);
what a module has that the schemas have no property for sits in ``Oem.McmEmu`` (docs/redfish.md).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..protocol.vocabulary import CoolingMode, DeathReason, NodeState, PumpFlags, SnapshotFlags, ValveFlags
from .state import FleetView, NodeView

REDFISH_VERSION = "1.21.0"  # DSP0266 the service follows

# the newest version of every schema the service serves (DSP8010, Redfish-Publications 2026-01-20)
TYPES = {
    "ServiceRoot": "ServiceRoot.v1_20_0",
    "Chassis": "Chassis.v1_28_0",
    "Sensor": "Sensor.v1_12_0",
    "Control": "Control.v1_7_0",
    "PowerSubsystem": "PowerSubsystem.v1_1_3",
    "ThermalSubsystem": "ThermalSubsystem.v1_5_0",
    "ThermalMetrics": "ThermalMetrics.v1_3_2",
    "Pump": "Pump.v1_2_0",
    "CoolantConnector": "CoolantConnector.v1_3_0",
    "ThermalEquipment": "ThermalEquipment.v1_2_0",
    "CoolingLoop": "CoolingLoop.v1_1_0",
    "Memory": "Memory.v1_23_0",
    "MemoryMetrics": "MemoryMetrics.v1_8_0",
    "LogService": "LogService.v1_9_0",
    "LogEntry": "LogEntry.v1_21_0",
    "MessageRegistryFile": "MessageRegistryFile.v1_1_5",
    "MessageRegistry": "MessageRegistry.v1_7_0",
    "EventService": "EventService.v1_12_0",
    "EventDestination": "EventDestination.v1_16_0",
    "Event": "Event.v1_13_0",
    "ActionInfo": "ActionInfo.v1_5_0",
    "SessionService": "SessionService.v1_2_0",
    "Session": "Session.v1_8_0",
    "AggregationService": "AggregationService.v1_0_3",
    "AggregationSource": "AggregationSource.v1_5_0",
    "Aggregate": "Aggregate.v1_0_3",
    "ConnectionMethod": "ConnectionMethod.v1_2_0",
}
COLLECTIONS = (
    "ChassisCollection",
    "SensorCollection",
    "ControlCollection",
    "PumpCollection",
    "CoolantConnectorCollection",
    "CoolingLoopCollection",
    "MemoryCollection",
    "LogServiceCollection",
    "LogEntryCollection",
    "MessageRegistryFileCollection",
    "EventDestinationCollection",
    "SessionCollection",
    "AggregationSourceCollection",
    "AggregateCollection",
    "ConnectionMethodCollection",
)
# schemas referenced by those above (common types, excerpts, messages)
SUPPORT = {
    "Resource": "Resource.v1_23_0",
    "PhysicalContext": None,
    "Message": "Message.v1_3_0",
    "RedfishError": "RedfishError.v1_0_2",
}
SCHEMA_URI = "http://redfish.dmtf.org/schemas/v1/{}_v1.xml"

ROOT = "/redfish/v1"
AGGREGATION = f"{ROOT}/AggregationService"
THERMAL_EQUIPMENT = f"{ROOT}/ThermalEquipment"
POWER_LIMIT = "PowerLimit"  # the id of the power-limit Control

# --- the Oem.McmEmu extensions: declared once, served as a CSDL schema, typed in every payload -----

OEM = "McmEmu"
OEM_VERSION = "McmEmu.v1_0_0"
OEM_SCHEMA_PATH = f"{ROOT}/Schemas/McmEmu_v1.xml"


class OemProperty(NamedTuple):
    name: str
    type: str  # an Edm type
    description: str
    nullable: bool = False


OEM_TYPES: dict[str, tuple[OemProperty, ...]] = {
    "Chassis": (
        OemProperty("Firmware", "Edm.String", "The firmware version of the module's controller, from its BIRTH."),
        OemProperty("BootCount", "Edm.Int64", "The boots of the module's controller, from its BIRTH."),
        OemProperty("BdSeq", "Edm.Int64", "The birth/death sequence of the controller's connection, from its BIRTH."),
        OemProperty("NodeState", "Edm.String", "The controller's state: BOOTING, RUNNING, SHUTDOWN or STOPPING."),
        OemProperty("CoolingMode", "Edm.String", "The cooling mode: NORMAL, FAILSAFE or NATURAL_CONVECTION."),
        OemProperty("UptimeSeconds", "Edm.Decimal", "The time since the controller booted, in seconds."),
        OemProperty(
            "SnapshotTime",
            "Edm.DateTimeOffset",
            "The time, by the module's clock, of the telemetry frame (or STATUS answer) the readings and health "
            "shown come from.",
        ),
        OemProperty("DeathReason", "Edm.String", "After a DEATH: SHUTDOWN, CONNECTION_LOST or REBOOT."),
        OemProperty(
            "FaultsInjected", "Collection(Edm.String)", "The injected faults in force, as get-faults prints them."
        ),
        OemProperty(
            "MemoryRowsRemappedCorrectable",
            "Edm.Int64",
            "The HBM rows of the module remapped after correctable errors (all stacks).",
        ),
        OemProperty(
            "MemoryRowsRemappedUncorrectable",
            "Edm.Int64",
            "The HBM rows of the module remapped after uncorrectable errors (all stacks).",
        ),
        OemProperty("MemoryRowRemapPending", "Edm.Boolean", "A row remap of the module waits for a reset."),
        OemProperty("MemoryRowRemapFailed", "Edm.Boolean", "A row remap of the module failed (no spare row left)."),
        OemProperty("MemoryCEStorm", "Edm.Boolean", "The module's HBM reports a storm of correctable errors."),
        OemProperty(
            "MemoryLifetimeCorrectableECCErrorCount",
            "Edm.Int64",
            "The correctable ECC errors of the module's HBM over its lifetime (all stacks).",
        ),
        OemProperty(
            "MemoryLifetimeUncorrectableECCErrorCount",
            "Edm.Int64",
            "The uncorrectable ECC errors of the module's HBM over its lifetime (all stacks).",
        ),
    ),
    "Pump": (
        OemProperty("Lead", "Edm.Boolean", "The pump is the lead pump of its pair."),
        OemProperty(
            "SnapshotTime",
            "Edm.DateTimeOffset",
            "The time, by the module's clock, of the telemetry frame (or STATUS answer) the pump's state and health "
            "come from.",
        ),
    ),
    "CoolingLoop": (
        OemProperty(
            "SnapshotTime",
            "Edm.DateTimeOffset",
            "The time, by the module's clock, of the telemetry frame (or STATUS answer) the loop's health comes from.",
        ),
    ),
    "Control": (
        OemProperty(
            "EnforcedWatts",
            "Edm.Decimal",
            "The power limit the module enforces: the lowest of those set, in watts.",
            True,
        ),
        OemProperty("EnforcedBy", "Edm.String", "Who set the limit enforced: Default, InBand or OutOfBand."),
        OemProperty("DefaultWatts", "Edm.Decimal", "The board's default power limit, in watts.", True),
        OemProperty(
            "InBandWatts", "Edm.Decimal", "The host's in-band power limit, in watts; null while none is set.", True
        ),
    ),
}


def oem(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """An ``Oem`` property holding ``values`` as the McmEmu extension of a ``kind`` resource."""
    known = {p.name for p in OEM_TYPES[kind]}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"Oem.McmEmu of {kind} declares no {sorted(unknown)}")
    return {OEM: {"@odata.type": f"#{OEM_VERSION}.{kind}", **values}}


def oem_schema() -> str:
    """The CSDL schema of the McmEmu extensions (served at ``OEM_SCHEMA_PATH``)."""

    def text(s: str) -> str:
        return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")

    types = []
    for kind, props in OEM_TYPES.items():
        lines = [
            f'      <ComplexType Name="{kind}" BaseType="Resource.OemObject">',
            '        <Annotation Term="OData.AdditionalProperties" Bool="false"/>',
            f'        <Annotation Term="OData.Description" String="mcm-emu\'s extension of {kind}."/>',
            f'        <Annotation Term="OData.LongDescription" String="This type shall contain the mcm-emu properties of a {kind}."/>',
        ]
        for p in props:
            null = "" if p.nullable or p.type.startswith("Collection") else ' Nullable="false"'
            lines += [
                f'        <Property Name="{p.name}" Type="{p.type}"{null}>',
                '          <Annotation Term="OData.Permissions" EnumMember="OData.Permission/Read"/>',
                f'          <Annotation Term="OData.Description" String="{text(p.description)}"/>',
                f'          <Annotation Term="OData.LongDescription" String="This property shall contain {text(p.description[0].lower() + p.description[1:])}"/>',
                "        </Property>",
            ]
        lines.append("      </ComplexType>")
        types.append("\n".join(lines))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">\n'
        '  <edmx:Reference Uri="http://docs.oasis-open.org/odata/odata/v4.0/errata03/csd01/complete/vocabularies/Org.OData.Core.V1.xml">\n'
        '    <edmx:Include Namespace="Org.OData.Core.V1" Alias="OData"/>\n'
        "  </edmx:Reference>\n"
        f'  <edmx:Reference Uri="{SCHEMA_URI.format("RedfishExtensions")}">\n'
        '    <edmx:Include Namespace="RedfishExtensions.v1_0_0" Alias="Redfish"/>\n'
        "  </edmx:Reference>\n"
        f'  <edmx:Reference Uri="{SCHEMA_URI.format("Resource")}">\n'
        '    <edmx:Include Namespace="Resource"/>\n'
        '    <edmx:Include Namespace="Resource.v1_0_0"/>\n'
        "  </edmx:Reference>\n"
        "  <edmx:DataServices>\n"
        f'    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{OEM}">\n'
        '      <Annotation Term="Redfish.OwningEntity" String="mcm-emu"/>\n'
        "    </Schema>\n"
        f'    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{OEM_VERSION}">\n'
        '      <Annotation Term="Redfish.OwningEntity" String="mcm-emu"/>\n'
        '      <Annotation Term="Redfish.Release" String="1.0"/>\n'
        + "\n".join(types)
        + "\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n"
    )


def type_of(kind: str) -> str:
    """The ``@odata.type`` of a resource of ``kind``, of the version the service serves."""
    return f"#{TYPES[kind]}.{kind}"


_type = type_of


def num(x: float | None, digits: int = 3) -> float | None:
    """A reading for JSON: NaN (a failed sensor, a limit not set) is null."""
    if x is None or math.isnan(x) or math.isinf(x):
        return None
    return round(float(x), digits)


def link(uri: str) -> dict[str, str]:
    return {"@odata.id": uri}


def collection(kind: str, uri: str, name: str, members: Iterable[str]) -> dict[str, Any]:
    ms = [link(m) for m in members]
    return {
        "@odata.type": f"#{kind}.{kind}",
        "@odata.id": uri,
        "Name": name,
        "Members@odata.count": len(ms),
        "Members": ms,
    }


# --- service documents ---------------------------------------------------------------------------


def version_document() -> dict[str, str]:
    """``/redfish``: the protocol versions the service speaks."""
    return {"v1": f"{ROOT}/"}


def service_uuid(fleet: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mcm-emu/redfish/{fleet}"))


def service_root(fleet: str, version: str) -> dict[str, Any]:
    return {
        "@odata.type": _type("ServiceRoot"),
        "@odata.id": f"{ROOT}/",
        "Id": "RootService",
        "Name": f"mcm-emu Redfish service of fleet {fleet}",
        "RedfishVersion": REDFISH_VERSION,
        "UUID": service_uuid(fleet),
        "Product": "mcm-emu",
        "Vendor": "mcm-emu",
        "ServiceIdentification": f"mcm-emu {version}",
        "ProtocolFeaturesSupported": {
            "ExpandQuery": {"ExpandAll": False, "Levels": False, "Links": False, "NoLinks": False},
            "SelectQuery": False,
            "FilterQuery": False,
            "OnlyMemberQuery": False,
            "ExcerptQuery": False,
        },
        "Chassis": link(f"{ROOT}/Chassis"),
        "SessionService": link(f"{ROOT}/SessionService"),
        "Registries": link(f"{ROOT}/Registries"),
        "EventService": link(f"{ROOT}/EventService"),
        "AggregationService": link(AGGREGATION),
        "ThermalEquipment": link(THERMAL_EQUIPMENT),
        "Links": {"Sessions": link(f"{ROOT}/SessionService/Sessions")},
    }


def odata_document() -> dict[str, Any]:
    """``/redfish/v1/odata``: the OData service document (DSP0266 "OData service document")."""
    singletons = [
        ("Service", f"{ROOT}/"),
        ("Chassis", f"{ROOT}/Chassis"),
        ("SessionService", f"{ROOT}/SessionService"),
        ("AggregationService", AGGREGATION),
        ("ThermalEquipment", THERMAL_EQUIPMENT),
    ]
    return {
        "@odata.context": f"{ROOT}/$metadata",
        "value": [{"name": n, "kind": "Singleton", "url": u} for n, u in singletons],
    }


def metadata_document() -> str:
    """``/redfish/v1/$metadata``: the CSDL document referencing the standard schema of every type
    the service serves (DSP0266 "Service metadata")."""
    refs: list[str] = []

    def ref(schema: str, versioned: str | None) -> None:
        inc = f'    <edmx:Include Namespace="{schema}"/>\n'
        if versioned:
            inc += f'    <edmx:Include Namespace="{versioned}"/>\n'
        refs.append(f'  <edmx:Reference Uri="{SCHEMA_URI.format(schema)}">\n{inc}  </edmx:Reference>\n')

    for kind, ver in TYPES.items():
        ref(kind, ver)
    for kind in COLLECTIONS:
        ref(kind, None)
    for kind, support in SUPPORT.items():
        ref(kind, support)
    refs.append(
        f'  <edmx:Reference Uri="{OEM_SCHEMA_PATH}">\n'
        f'    <edmx:Include Namespace="{OEM}"/>\n'
        f'    <edmx:Include Namespace="{OEM_VERSION}"/>\n'
        "  </edmx:Reference>\n"
    )
    refs.append(
        f'  <edmx:Reference Uri="{SCHEMA_URI.format("RedfishExtensions")}">\n'
        '    <edmx:Include Namespace="RedfishExtensions.v1_0_0" Alias="Redfish"/>\n'
        "  </edmx:Reference>\n"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">\n'
        + "".join(refs)
        + "  <edmx:DataServices>\n"
        '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">\n'
        f'      <EntityContainer Name="Service" Extends="{TYPES["ServiceRoot"]}.ServiceContainer"/>\n'
        "    </Schema>\n"
        "  </edmx:DataServices>\n"
        "</edmx:Edmx>\n"
    )


# --- sessions --------------------------------------------------------------------------------------


def session_service(timeout_s: int) -> dict[str, Any]:
    return {
        "@odata.type": _type("SessionService"),
        "@odata.id": f"{ROOT}/SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "ServiceEnabled": True,
        "SessionTimeout": timeout_s,
        "Sessions": link(f"{ROOT}/SessionService/Sessions"),
        "Status": {"State": "Enabled", "Health": "OK"},
    }


def sessions(ids: Iterable[str]) -> dict[str, Any]:
    return collection(
        "SessionCollection",
        f"{ROOT}/SessionService/Sessions",
        "Session Collection",
        (f"{ROOT}/SessionService/Sessions/{i}" for i in ids),
    )


def session(sid: str, user: str) -> dict[str, Any]:
    return {
        "@odata.type": _type("Session"),
        "@odata.id": f"{ROOT}/SessionService/Sessions/{sid}",
        "Id": sid,
        "Name": f"Session of {user}",
        "UserName": user,
        "Password": None,  # the schema's rule: null in responses
    }


# --- chassis ---------------------------------------------------------------------------------------


def chassis_uri(node: int) -> str:
    return f"{ROOT}/Chassis/{node}"


def chassis_collection(fleet: FleetView) -> dict[str, Any]:
    return collection(
        "ChassisCollection", f"{ROOT}/Chassis", "Chassis Collection", (chassis_uri(n) for n in sorted(fleet.nodes))
    )


def state_of(view: NodeView) -> str:
    """Status.State of a module: Enabled while its BIRTH is in force and it reports, Starting
    between its BIRTH and its first telemetry, UnavailableOffline after its DEATH."""
    if not view.online:
        return "UnavailableOffline"
    return "Enabled" if view.has_telemetry else "Starting"


def health_of(view: NodeView) -> str:
    """Status.Health of a module, from its newest snapshot and the faults in force: Critical when
    its dice are powered off by a protection, it lost forced cooling, a row remap failed or an
    uncontained error asks for a reboot; Warning in failsafe, with a pump fault, pending remaps, a
    CE storm, a failed sensor or an injected fault; else OK."""
    s = view.snapshot
    if s is None:
        return "OK"
    flags = SnapshotFlags(s.flags)
    if (
        s.state == NodeState.SHUTDOWN
        or s.mode == CoolingMode.NATURAL_CONVECTION
        or SnapshotFlags.REMAP_FAILED in flags
        or s.recovery_action == 2
    ):
        return "Critical"
    readings = [s.inlet_c, s.outlet_c, s.flow_lpm, *(d.temp_c for d in s.dies), *(h.temp_c for h in s.hbm)]
    if (
        s.mode == CoolingMode.FAILSAFE
        or flags & (SnapshotFlags.FAILSAFE | SnapshotFlags.REMAP_PENDING | SnapshotFlags.CE_STORM)
        or any(p.flags & PumpFlags.FAULT for p in s.pumps)
        or any(math.isnan(r) for r in readings)
        or view.faults
    ):
        return "Warning"
    return "OK"


def status(view: NodeView) -> dict[str, str]:
    return {"State": state_of(view), "Health": health_of(view), "HealthRollup": health_of(view)}


def power_state(view: NodeView) -> str | None:
    """Chassis PowerState (Resource.PowerState) from the node's state; after a DEATH, Off when the
    node shut down cleanly, unknown (null) when its connection was lost."""
    if not view.online:
        if view.death is not None and view.death.reason == DeathReason.SHUTDOWN:
            return "Off"
        return None
    s = view.snapshot
    if s is None:
        return "PoweringOn"
    return {
        NodeState.BOOTING: "PoweringOn",
        NodeState.RUNNING: "On",
        NodeState.SHUTDOWN: "Off",
        NodeState.STOPPING: "PoweringOff",
    }.get(NodeState(s.state))


def _enum_name(kind: Any, value: int) -> str:
    try:
        return str(kind(value).name)
    except ValueError:
        return str(value)


def chassis(view: NodeView) -> dict[str, Any]:
    uri = chassis_uri(view.node)
    out: dict[str, Any] = {
        "@odata.type": _type("Chassis"),
        "@odata.id": uri,
        "Id": str(view.node),
        "Name": f"Module {view.node}",
        "ChassisType": "Module",
        "PowerState": power_state(view),
        "Status": status(view),
        "Sensors": link(f"{uri}/Sensors"),
        "Controls": link(f"{uri}/Controls"),
        "PowerSubsystem": link(f"{uri}/PowerSubsystem"),
        "ThermalSubsystem": link(f"{uri}/ThermalSubsystem"),
        "Memory": link(f"{uri}/Memory"),
        "LogServices": link(f"{uri}/LogServices"),
        "Links": {"ConnectedCoolingLoops": [link(cooling_loop_uri(view.node))]},
        "Actions": {
            "#Chassis.Reset": {
                "target": f"{uri}/Actions/Chassis.Reset",
                "@Redfish.ActionInfo": f"{uri}/{RESET_ACTION_INFO}",
                "ResetType@Redfish.AllowableValues": list(RESET_TYPES),
            }
        },
    }
    if view.birth is not None:
        out["Model"] = view.birth.profile
    ext: dict[str, Any] = {}
    if view.birth is not None:
        ext.update(
            Firmware=view.birth.firmware,
            BootCount=view.birth.boot_count,
            BdSeq=view.birth.bdseq & 0x7FFFFFFF,
        )
    if view.death is not None:
        ext["DeathReason"] = _enum_name(DeathReason, view.death.reason)
    s = view.snapshot
    if s is not None:
        ext.update(
            NodeState=_enum_name(NodeState, s.state),
            CoolingMode=_enum_name(CoolingMode, s.mode),
            UptimeSeconds=round(s.uptime_ns / 1e9, 3),
        )
        when = snapshot_time(view)
        if when is not None:
            ext["SnapshotTime"] = when
        flags = SnapshotFlags(s.flags)
        ext.update(
            MemoryRowsRemappedCorrectable=s.remapped_correctable,
            MemoryRowsRemappedUncorrectable=s.remapped_uncorrectable,
            MemoryRowRemapPending=SnapshotFlags.REMAP_PENDING in flags,
            MemoryRowRemapFailed=SnapshotFlags.REMAP_FAILED in flags,
            MemoryCEStorm=SnapshotFlags.CE_STORM in flags,
            MemoryLifetimeCorrectableECCErrorCount=s.ecc_ce_aggregate,
            MemoryLifetimeUncorrectableECCErrorCount=s.ecc_ue_aggregate,
        )
    if view.faults:
        ext["FaultsInjected"] = list(view.faults)
    if ext:
        out["Oem"] = oem("Chassis", ext)
    return out


# --- sensors ---------------------------------------------------------------------------------------


class SensorSpec(NamedTuple):
    id: str
    name: str
    reading_type: str
    units: str
    context: str
    reading: float | None
    digits: int = 3


def sensor_specs(view: NodeView) -> list[SensorSpec]:
    """Every sensor of a module that its telemetry carries, in a stable order."""
    s = view.snapshot
    if s is None:
        return []
    out = [
        SensorSpec("TotalPower", "Module power", "Power", "W", "Chassis", s.power_w),
        SensorSpec(
            "TotalEnergy",
            "Module energy since its controller booted",
            "EnergyJoules",
            "J",
            "Chassis",
            s.energy_mj / 1e3,
        ),
        SensorSpec("VRMCurrent", "Module VRM current", "Current", "A", "VoltageRegulator", s.vrm_current_a),
        SensorSpec("CoolantInletTemp", "Coolant inlet temperature", "Temperature", "Cel", "LiquidInlet", s.inlet_c),
        SensorSpec("CoolantOutletTemp", "Coolant outlet temperature", "Temperature", "Cel", "LiquidOutlet", s.outlet_c),
        SensorSpec("CoolantFlow", "Coolant flow", "LiquidFlowLPM", "L/min", "CoolingSubsystem", s.flow_lpm),
    ]
    for i, d in enumerate(s.dies):
        out += [
            SensorSpec(f"Die{i}Temp", f"Die {i} temperature", "Temperature", "Cel", "Accelerator", d.temp_c),
            SensorSpec(f"Die{i}Power", f"Die {i} power", "Power", "W", "Accelerator", d.power_w),
            SensorSpec(f"Die{i}Voltage", f"Die {i} core voltage", "Voltage", "V", "Accelerator", d.voltage_mv / 1e3),
            SensorSpec(f"Die{i}Clock", f"Die {i} clock", "Frequency", "Hz", "Accelerator", d.clock_mhz * 1e6, 0),
        ]
    for i, h in enumerate(s.hbm):
        out.append(SensorSpec(f"HBM{i}Temp", f"HBM stack {i} temperature", "Temperature", "Cel", "Memory", h.temp_c))
    for i, p in enumerate(s.pumps):
        name = view.pump_names[i] if i < len(view.pump_names) else str(i)
        out.append(SensorSpec(f"Pump{i}Speed", f"Pump {name} speed", "Rotational", "{rev}/min", "Pump", p.rpm, 0))
    for i, v in enumerate(s.valves):
        out.append(
            SensorSpec(f"Valve{i}Position", f"Valve {i} position", "Valve", "%", "CoolingSubsystem", v.position_pct)
        )
    return out


def sensor_uri(node: int, sid: str) -> str:
    return f"{chassis_uri(node)}/Sensors/{sid}"


def sensors(view: NodeView) -> dict[str, Any]:
    return collection(
        "SensorCollection",
        f"{chassis_uri(view.node)}/Sensors",
        f"Sensors of module {view.node}",
        (sensor_uri(view.node, s.id) for s in sensor_specs(view)),
    )


def _reading_time(view: NodeView) -> str | None:
    if not view.snapshot_ns:
        return None
    import datetime as dt

    t = dt.datetime.fromtimestamp(view.snapshot_ns / 1e9, dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snapshot_time(view: NodeView) -> str | None:
    """The node's timestamp of the newest snapshot, to the microsecond (tells every frame apart)."""
    if not view.snapshot_ns:
        return None
    import datetime as dt

    secs, ns = divmod(view.snapshot_ns, 1_000_000_000)
    t = dt.datetime.fromtimestamp(secs, dt.UTC).replace(microsecond=ns // 1000)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def sensor(view: NodeView, sid: str) -> dict[str, Any] | None:
    spec = next((s for s in sensor_specs(view) if s.id == sid), None)
    if spec is None:
        return None
    reading = num(spec.reading, spec.digits)
    if spec.digits == 0 and reading is not None:
        reading = int(reading)
    state = "Enabled" if view.online else "UnavailableOffline"
    out: dict[str, Any] = {
        "@odata.type": _type("Sensor"),
        "@odata.id": sensor_uri(view.node, sid),
        "Id": sid,
        "Name": spec.name,
        "ReadingType": spec.reading_type,
        "ReadingUnits": spec.units,
        "Reading": reading,
        "PhysicalContext": spec.context,
        "Status": {"State": state, "Health": "OK" if reading is not None else "Warning"},
    }
    when = _reading_time(view)
    if when is not None:
        out["ReadingTime"] = when
    if sid.startswith("Pump"):
        out["RelatedItem"] = [link(pump_uri(view.node, sid.removeprefix("Pump").removesuffix("Speed")))]
    return out


# --- power, thermal, controls ----------------------------------------------------------------------


def power_subsystem(view: NodeView) -> dict[str, Any]:
    uri = f"{chassis_uri(view.node)}/PowerSubsystem"
    out: dict[str, Any] = {
        "@odata.type": _type("PowerSubsystem"),
        "@odata.id": uri,
        "Id": "PowerSubsystem",
        "Name": f"Power subsystem of module {view.node}",
        "Status": {"State": state_of(view), "Health": "OK"},
    }
    if view.limits is not None:
        out["CapacityWatts"] = num(view.limits.max_w)
    if view.snapshot is not None:
        out["Allocation"] = {"AllocatedWatts": num(view.snapshot.power_cap_w)}
    return out


def thermal_subsystem(view: NodeView) -> dict[str, Any]:
    uri = f"{chassis_uri(view.node)}/ThermalSubsystem"
    return {
        "@odata.type": _type("ThermalSubsystem"),
        "@odata.id": uri,
        "Id": "ThermalSubsystem",
        "Name": f"Thermal subsystem of module {view.node}",
        "Pumps": link(f"{uri}/Pumps"),
        "CoolantConnectors": link(f"{uri}/CoolantConnectors"),
        "ThermalMetrics": link(f"{uri}/ThermalMetrics"),
        "Status": {"State": state_of(view), "Health": health_of(view)},
    }


def thermal_metrics(view: NodeView) -> dict[str, Any]:
    uri = f"{chassis_uri(view.node)}/ThermalSubsystem/ThermalMetrics"
    temps = [s for s in sensor_specs(view) if s.reading_type == "Temperature"]
    out: dict[str, Any] = {
        "@odata.type": _type("ThermalMetrics"),
        "@odata.id": uri,
        "Id": "ThermalMetrics",
        "Name": f"Thermal metrics of module {view.node}",
        "TemperatureReadingsCelsius": [
            {"Reading": num(s.reading), "DeviceName": s.name, "DataSourceUri": sensor_uri(view.node, s.id)}
            for s in temps
        ],
    }
    dies = [s for s in temps if s.id.startswith("Die") and num(s.reading) is not None]
    if dies:
        hottest = max(dies, key=lambda s: s.reading or 0.0)
        out["TemperatureSummaryCelsius"] = {
            "Internal": {"Reading": num(hottest.reading), "DataSourceUri": sensor_uri(view.node, hottest.id)}
        }
    return out


def pump_uri(node: int, index: int | str) -> str:
    return f"{chassis_uri(node)}/ThermalSubsystem/Pumps/{index}"


def pumps(view: NodeView) -> dict[str, Any]:
    n = len(view.snapshot.pumps) if view.snapshot is not None else 0
    return collection(
        "PumpCollection",
        f"{chassis_uri(view.node)}/ThermalSubsystem/Pumps",
        f"Pumps of module {view.node}",
        (pump_uri(view.node, i) for i in range(n)),
    )


def pump(view: NodeView, index: int) -> dict[str, Any] | None:
    s = view.snapshot
    if s is None or not 0 <= index < len(s.pumps):
        return None
    p = s.pumps[index]
    flags = PumpFlags(p.flags)
    name = view.pump_names[index] if index < len(view.pump_names) else str(index)
    if not view.online:
        state = "UnavailableOffline"
    elif PumpFlags.RUNNING in flags:
        state = "Enabled"
    else:
        state = "StandbySpare"  # the lag pump, waiting to take over
    ext: dict[str, Any] = {"Lead": PumpFlags.LEAD in flags}
    when = snapshot_time(view)
    if when is not None:
        ext["SnapshotTime"] = when
    return {
        "@odata.type": _type("Pump"),
        "@odata.id": pump_uri(view.node, index),
        "Id": str(index),
        "Name": f"Pump {name}",
        "PumpType": "Liquid",
        "Status": {"State": state, "Health": "Critical" if PumpFlags.FAULT in flags else "OK"},
        "PumpSpeedPercent": {"SpeedRPM": p.rpm, "DataSourceUri": sensor_uri(view.node, f"Pump{index}Speed")},
        "Oem": oem("Pump", ext),
    }


COLD_PLATE = "ColdPlate"  # the id of the module's coolant connector


def coolant_connectors(view: NodeView) -> dict[str, Any]:
    uri = f"{chassis_uri(view.node)}/ThermalSubsystem/CoolantConnectors"
    return collection(
        "CoolantConnectorCollection", uri, f"Coolant connectors of module {view.node}", [f"{uri}/{COLD_PLATE}"]
    )


def coolant_connector(view: NodeView) -> dict[str, Any]:
    """The module's cold plate on the coolant loop: supply (inlet) and return (outlet)
    temperatures, their difference and the flow, with the sensors they come from."""
    uri = coolant_connector_uri(view.node)
    out: dict[str, Any] = {
        "@odata.type": _type("CoolantConnector"),
        "@odata.id": uri,
        "Id": COLD_PLATE,
        "Name": f"Cold plate of module {view.node}",
        "CoolantConnectorType": "Closed",
        "Status": {"State": state_of(view), "Health": health_of(view)},
        "Links": {"ConnectedCoolingLoop": link(cooling_loop_uri(view.node))},
    }
    s = view.snapshot
    if s is not None:
        out["SupplyTemperatureCelsius"] = {
            "Reading": num(s.inlet_c),
            "DataSourceUri": sensor_uri(view.node, "CoolantInletTemp"),
        }
        out["ReturnTemperatureCelsius"] = {
            "Reading": num(s.outlet_c),
            "DataSourceUri": sensor_uri(view.node, "CoolantOutletTemp"),
        }
        out["DeltaTemperatureCelsius"] = {"Reading": num(s.outlet_c - s.inlet_c)}
        out["FlowLitersPerMinute"] = {"Reading": num(s.flow_lpm), "DataSourceUri": sensor_uri(view.node, "CoolantFlow")}
    return out


def coolant_connector_uri(node: int) -> str:
    return f"{chassis_uri(node)}/ThermalSubsystem/CoolantConnectors/{COLD_PLATE}"


# --- thermal equipment: the modules' coolant loops -------------------------------------------------
# DMTF's CoolingLoop lives only under /redfish/v1/ThermalEquipment/CoolingLoops: one loop a module
# (its Id the module's), linked both ways with the module's Chassis (Links.Chassis,
# Links.ConnectedCoolingLoops) and with its cold plate (PrimaryCoolantConnectors,
# Links.ConnectedCoolingLoop), where the loop's readings (supply, return, flow) are.


def cooling_loop_uri(node: int) -> str:
    return f"{THERMAL_EQUIPMENT}/CoolingLoops/{node}"


def thermal_equipment() -> dict[str, Any]:
    return {
        "@odata.type": _type("ThermalEquipment"),
        "@odata.id": THERMAL_EQUIPMENT,
        "Id": "ThermalEquipment",
        "Name": "Cooling equipment of the modules",
        "Status": {"State": "Enabled"},
        "CoolingLoops": link(f"{THERMAL_EQUIPMENT}/CoolingLoops"),
    }


def cooling_loops(fleet: FleetView) -> dict[str, Any]:
    """One loop a module, listed as the Chassis collection lists the modules (no module's frame is
    read)."""
    return collection(
        "CoolingLoopCollection",
        f"{THERMAL_EQUIPMENT}/CoolingLoops",
        "Coolant loops of the modules",
        (cooling_loop_uri(n) for n in sorted(fleet.nodes)),
    )


def cooling_loop(view: NodeView) -> dict[str, Any]:
    """The module's coolant loop: its state and health are the module's (``status``), its
    readings those of its cold plate (``PrimaryCoolantConnectors``); the module reports no coolant
    type, level, quality or rating, so none is shown."""
    uri = cooling_loop_uri(view.node)
    out: dict[str, Any] = {
        "@odata.type": _type("CoolingLoop"),
        "@odata.id": uri,
        "Id": str(view.node),
        "Name": f"Coolant loop of module {view.node}",
        "Status": status(view),
        "PrimaryCoolantConnectors": link(f"{uri}/PrimaryCoolantConnectors"),
        "Links": {"Chassis": link(chassis_uri(view.node))},
    }
    when = snapshot_time(view)
    if when is not None:
        out["Oem"] = oem("CoolingLoop", {"SnapshotTime": when})
    return out


def cooling_loop_connectors(view: NodeView) -> dict[str, Any]:
    """The loop's connectors: the module's cold plate (served under its Chassis)."""
    return collection(
        "CoolantConnectorCollection",
        f"{cooling_loop_uri(view.node)}/PrimaryCoolantConnectors",
        f"Coolant connectors of the loop of module {view.node}",
        [coolant_connector_uri(view.node)],
    )


def controls(view: NodeView) -> dict[str, Any]:
    n = len(view.snapshot.valves) if view.snapshot is not None else 0
    uri = f"{chassis_uri(view.node)}/Controls"
    return collection(
        "ControlCollection",
        uri,
        f"Controls of module {view.node}",
        [f"{uri}/{POWER_LIMIT}", *(f"{uri}/Valve{i}" for i in range(n))],
    )


def valve_index(view: NodeView, cid: str) -> int | None:
    """The valve a Control id (``Valve{i}``) names, None when the module has no such valve."""
    digits = cid.removeprefix("Valve")
    if view.snapshot is None or not cid.startswith("Valve") or not digits.isdigit() or str(int(digits)) != digits:
        return None
    i = int(digits)
    return i if i < len(view.snapshot.valves) else None


def valve_control(view: NodeView, index: int) -> dict[str, Any]:
    """A coolant valve of the module as a Control (ControlType Valve, % open): ControlMode
    Automatic while the module's controller drives it, Override while it is held at ``SetPoint``
    (``ctl set-valve``, or a PATCH here); the position it is at is ``Sensor``."""
    assert view.snapshot is not None
    v = view.snapshot.valves[index]
    held = ValveFlags.MANUAL in ValveFlags(v.flags)
    uri = f"{chassis_uri(view.node)}/Controls/Valve{index}"
    return {
        "@odata.type": _type("Control"),
        "@odata.id": uri,
        "Id": f"Valve{index}",
        "Name": f"Coolant valve {index} of module {view.node}",
        "PhysicalContext": "CoolingSubsystem",
        "ControlType": "Valve",
        "ControlMode": "Override" if held else "Automatic",
        "SetPointUnits": "%",
        "SetPoint": num(view.valve_setpoints.get(index)) if held else None,
        "AllowableMin": 0,
        "AllowableMax": 100,
        "Sensor": {"Reading": num(v.position_pct), "DataSourceUri": sensor_uri(view.node, f"Valve{index}Position")},
        "Status": {"State": state_of(view), "Health": "OK"},
    }


RESET_ACTION_INFO = "ResetActionInfo"
RESET_TYPES = ("ForceRestart",)  # the module reset (RESET, 0x0022)


def reset_action_info(view: NodeView) -> dict[str, Any]:
    return {
        "@odata.type": _type("ActionInfo"),
        "@odata.id": f"{chassis_uri(view.node)}/{RESET_ACTION_INFO}",
        "Id": RESET_ACTION_INFO,
        "Name": f"Reset of module {view.node}",
        "Parameters": [
            {"Name": "ResetType", "Required": False, "DataType": "String", "AllowableValues": list(RESET_TYPES)}
        ],
    }


def power_limit_control(view: NodeView) -> dict[str, Any]:
    """The module's power limit as the baseboard management controller sets it (the out-of-band
    limit of docs/protocol.md, "Power limits"): ``SetPoint`` is that limit, null while none is
    set; the limit enforced (the lowest of those set) is in ``Oem.McmEmu``."""
    uri = f"{chassis_uri(view.node)}/Controls/{POWER_LIMIT}"
    out: dict[str, Any] = {
        "@odata.type": _type("Control"),
        "@odata.id": uri,
        "Id": POWER_LIMIT,
        "Name": f"Power limit of module {view.node}",
        "PhysicalContext": "Chassis",
        "ControlType": "Power",
        "ControlMode": "Automatic",
        "SetPointUnits": "W",
        "SetPoint": None,
        "Status": {"State": state_of(view), "Health": "OK"},
    }
    lim = view.limits
    if lim is not None:
        out["SetPoint"] = num(lim.out_of_band_w)
        out["AllowableMin"] = num(lim.min_w)
        out["AllowableMax"] = num(lim.max_w)
    s = view.snapshot
    if s is not None:
        out["Sensor"] = {"Reading": num(s.power_w), "DataSourceUri": sensor_uri(view.node, "TotalPower")}
        ext: dict[str, Any] = {
            "EnforcedWatts": num(s.power_cap_w),
            "EnforcedBy": {0: "Default", 1: "InBand", 2: "OutOfBand"}.get(s.power_limit_source, "Unknown"),
        }
        if lim is not None:
            ext.update(DefaultWatts=num(lim.default_w), InBandWatts=num(lim.in_band_w))
        out["Oem"] = oem("Control", ext)
    return out


# --- memory ----------------------------------------------------------------------------------------


def memory_uri(node: int, stack: int) -> str:
    return f"{chassis_uri(node)}/Memory/HBM{stack}"


def memory_stack(view: NodeView, mid: str) -> int | None:
    """The HBM stack a Memory id (``HBM{i}``) names, None when the module has no such stack."""
    s = view.snapshot
    digits = mid.removeprefix("HBM")
    if s is None or not mid.startswith("HBM") or not digits.isdigit() or str(int(digits)) != digits:
        return None
    i = int(digits)
    return i if i < len(s.hbm) else None


def memory_collection(view: NodeView) -> dict[str, Any]:
    n = len(view.snapshot.hbm) if view.snapshot is not None else 0
    return collection(
        "MemoryCollection",
        f"{chassis_uri(view.node)}/Memory",
        f"HBM stacks of module {view.node}",
        (memory_uri(view.node, i) for i in range(n)),
    )


def memory_health(view: NodeView, stack: int) -> str:
    """Critical when a row remap of the stack failed; Warning while one waits for a reset, after an
    uncorrectable error since the controller booted or with its temperature sensor failed. The
    stack of a remap is named by its event, the module's flags say whether it still holds."""
    assert view.snapshot is not None
    h = view.snapshot.hbm[stack]
    flags = SnapshotFlags(view.snapshot.flags)
    if stack in view.remap_failed and SnapshotFlags.REMAP_FAILED in flags:
        return "Critical"
    pending = stack in view.remap_pending and SnapshotFlags.REMAP_PENDING in flags
    return "Warning" if pending or h.ue > 0 or math.isnan(h.temp_c) else "OK"


def memory(view: NodeView, stack: int) -> dict[str, Any]:
    """One HBM stack of the module: its health (``memory_health``), its metrics apart."""
    uri = memory_uri(view.node, stack)
    health = memory_health(view, stack)
    return {
        "@odata.type": _type("Memory"),
        "@odata.id": uri,
        "Id": f"HBM{stack}",
        "Name": f"HBM stack {stack} of module {view.node}",
        "MemoryType": "DRAM",
        "MemoryDeviceType": "HBM",
        "Status": {"State": "Enabled" if view.online else "UnavailableOffline", "Health": health},
        "Metrics": link(f"{uri}/MemoryMetrics"),
    }


def memory_metrics(view: NodeView, stack: int) -> dict[str, Any]:
    """The ECC errors of one HBM stack since its controller booted (the snapshot's volatile counts
    per stack) and whether an uncorrectable one tripped; what the snapshot counts for the whole
    module (lifetime counts, rows remapped) is in the Chassis' ``Oem.McmEmu``."""
    assert view.snapshot is not None
    h = view.snapshot.hbm[stack]
    return {
        "@odata.type": _type("MemoryMetrics"),
        "@odata.id": f"{memory_uri(view.node, stack)}/MemoryMetrics",
        "Id": "MemoryMetrics",
        "Name": f"Metrics of HBM stack {stack} of module {view.node}",
        "CurrentPeriod": {"CorrectableECCErrorCount": h.ce, "UncorrectableECCErrorCount": h.ue},
        "HealthData": {"AlarmTrips": {"UncorrectableECCError": h.ue > 0}},
    }


# --- message registries ------------------------------------------------------------------------------

REGISTRY_PUBLICATION = "https://redfish.dmtf.org/registries/{}.json"


def registries(names: Iterable[str]) -> dict[str, Any]:
    return collection(
        "MessageRegistryFileCollection", f"{ROOT}/Registries", "Message registries",
        (f"{ROOT}/Registries/{n.split('.')[0]}" for n in names),
    )  # fmt: skip


def registry_file(name: str, *, local: bool) -> dict[str, Any]:
    """The MessageRegistryFile of a registry (``name``: prefix.major.minor.errata); ``local``: the
    service serves its JSON (its own registry), else DMTF publishes it."""
    prefix = name.split(".")[0]
    uri = f"{ROOT}/Registries/{prefix}"
    where: dict[str, str] = {"Language": "en"}
    if local:
        where["Uri"] = f"{uri}/{name}.json"
    else:
        where["PublicationUri"] = REGISTRY_PUBLICATION.format(name)
    return {
        "@odata.type": _type("MessageRegistryFile"),
        "@odata.id": uri,
        "Id": prefix,
        "Name": f"{prefix} message registry",
        "Registry": name.rsplit(".", 1)[0],
        "Languages": ["en"],
        "Location": [where],
    }


# --- aggregation (DSP0266 "Aggregation"; AggregationService, AggregationSource, Aggregate) -----------
# The service aggregates one fleet: the broker it reaches the fleet's modules through is its one
# AggregationSource (ConnectionMethod: the binary protocol over MQTT, an OEM method), and the fleet
# is one Aggregate whose elements are the modules' Chassis.

CONNECTION_METHOD = "MQTT"  # the id of the one ConnectionMethod
CONNECTION_VARIANT = "mcm-emu binary protocol v1 over MQTT (docs/protocol.md)"


def aggregation_service(fleet: str) -> dict[str, Any]:
    return {
        "@odata.type": _type("AggregationService"),
        "@odata.id": AGGREGATION,
        "Id": "AggregationService",
        "Name": "Aggregation Service",
        "Description": f"The modules of fleet {fleet}, reached through its broker",
        "ServiceEnabled": True,
        "Status": {"State": "Enabled", "Health": "OK"},
        "AggregationSources": link(f"{AGGREGATION}/AggregationSources"),
        "Aggregates": link(f"{AGGREGATION}/Aggregates"),
        "ConnectionMethods": link(f"{AGGREGATION}/ConnectionMethods"),
    }


def connection_methods() -> dict[str, Any]:
    uri = f"{AGGREGATION}/ConnectionMethods"
    return collection("ConnectionMethodCollection", uri, "Connection methods", [f"{uri}/{CONNECTION_METHOD}"])


def connection_method(fleet: str) -> dict[str, Any]:
    return {
        "@odata.type": _type("ConnectionMethod"),
        "@odata.id": f"{AGGREGATION}/ConnectionMethods/{CONNECTION_METHOD}",
        "Id": CONNECTION_METHOD,
        "Name": "The modules' binary protocol over MQTT",
        "ConnectionMethodType": "OEM",
        "ConnectionMethodVariant": CONNECTION_VARIANT,
        "Links": {"AggregationSources": [link(f"{AGGREGATION}/AggregationSources/{fleet}")]},
    }


def aggregation_sources(fleet: str) -> dict[str, Any]:
    uri = f"{AGGREGATION}/AggregationSources"
    return collection("AggregationSourceCollection", uri, "Aggregation sources", [f"{uri}/{fleet}"])


def aggregation_source(view: FleetView, broker: str | None, online: bool) -> dict[str, Any]:
    """The fleet's broker as the source of the aggregated modules: ``broker`` its URL (no
    credentials), ``online`` whether the service is connected to it now."""
    out: dict[str, Any] = {
        "@odata.type": _type("AggregationSource"),
        "@odata.id": f"{AGGREGATION}/AggregationSources/{view.fleet}",
        "Id": view.fleet,
        "Name": f"Broker of fleet {view.fleet}",
        "AggregationType": "Full",
        "Status": {"State": "Enabled" if online else "UnavailableOffline", "Health": "OK" if online else "Critical"},
        "Links": {
            "ConnectionMethod": link(f"{AGGREGATION}/ConnectionMethods/{CONNECTION_METHOD}"),
            "ResourcesAccessed": [link(chassis_uri(n)) for n in sorted(view.nodes)],
        },
    }
    if broker is not None:
        out["HostName"] = broker
    return out


def aggregates(fleet: str) -> dict[str, Any]:
    uri = f"{AGGREGATION}/Aggregates"
    return collection("AggregateCollection", uri, "Aggregates", [f"{uri}/{fleet}"])


def aggregate(view: FleetView) -> dict[str, Any]:
    """The fleet as an Aggregate: its modules' Chassis."""
    elements = [link(chassis_uri(n)) for n in sorted(view.nodes)]
    return {
        "@odata.type": _type("Aggregate"),
        "@odata.id": f"{AGGREGATION}/Aggregates/{view.fleet}",
        "Id": view.fleet,
        "Name": f"Modules of fleet {view.fleet}",
        "ElementsCount": len(elements),
        "Elements@odata.count": len(elements),
        "Elements": elements,
    }
