"""The parts without I/O: the Base registry messages as published, accounts files, readings."""

from __future__ import annotations

import json
import math
import re

import pytest

from mcm_firmware.redfish import resources as rs
from mcm_firmware.redfish.auth import AccountError, Authority, load_accounts
from mcm_firmware.redfish.registry import BASE, REGISTRY, STANDARD_REGISTRIES, error

from .conftest import VENDORED, shared

SCHEMA = re.compile(r'Uri="http://redfish\.dmtf\.org/schemas/v1/([A-Za-z]+_v1\.xml)"')


def test_exactly_the_schemas_and_registries_the_service_references_are_vendored():
    """The tests read DMTF's files from the repository: a schema the service references that is not
    vendored fails here (and would fail the validator), one vendored but not referenced too."""
    referenced = set(SCHEMA.findall(rs.metadata_document())) | set(SCHEMA.findall(rs.oem_schema()))
    assert "Chassis_v1.xml" in referenced and "RedfishExtensions_v1.xml" in referenced
    assert {p.name for p in (VENDORED / "csdl").iterdir()} == referenced
    assert {p.name for p in (VENDORED / "registries").iterdir()} == {f"{r}.json" for r in STANDARD_REGISTRIES}
    assert "BSD 3-Clause" in (VENDORED / "LICENSE.md").read_text()
    # each names the versions the service serves
    for kind, version in rs.TYPES.items():
        assert f'Namespace="{version}"' in (VENDORED / "csdl" / f"{kind}_v1.xml").read_text(), kind


def test_the_base_messages_are_dmtfs():
    published = json.loads((shared("registries") / f"{REGISTRY}.json").read_text())["Messages"]
    for key, msg in BASE.items():
        ref = published[key]
        assert (msg.text, msg.args, msg.severity, msg.resolution) == (
            ref["Message"],
            ref.get("NumberOfArgs", 0),
            ref["MessageSeverity"],
            ref["Resolution"],
        ), key
    e = error("PropertyValueOutOfRange", 5, "SetPoint")["error"]
    assert e["message"] == "The value '5' for the property SetPoint is not in the supported range of acceptable values."
    with pytest.raises(ValueError, match="takes 2 arguments"):
        error("PropertyValueOutOfRange", 5)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[accounts.a]\nrole = "Admin"\npassword = "longenough"\n', "role must be one of ReadOnly, Operator"),
        ('[accounts.a]\nrole = "Operator"\npassword = "short"\n', "8 characters or more"),
        ('[accounts.a]\nrole = "Operator"\n', "give password or password_file"),
        ('[accounts.a]\nrole = "Operator"\npassword = "longenough"\ncolour = 1\n', "unknown key 'colour'"),
        ('[accounts.a]\nrole = "Operator"\npassword_file = "missing"\n', "password_file"),
        ("[users]\n", "unknown key 'users'"),
        ("accounts = [", "accounts.toml"),
    ],
)
def test_an_accounts_file_that_cannot_be_used_is_named(tmp_path, text, says):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(AccountError, match=says) as e:
        load_accounts(path)
    assert str(path) in str(e.value)


def test_sessions_expire_when_idle_and_passwords_are_checked():
    auth = Authority(load_accounts_from({"op": ("Operator", "op-password")}), session_timeout=10)
    assert auth.check_password("op", "nope") is None and auth.check_password("nobody", "op-password") is None
    acct = auth.check_password("op", "op-password")
    assert acct is not None and acct.can_write
    s = auth.open(acct, now=0.0)
    assert s is not None and auth.by_token(s.token, now=5.0) is s
    assert auth.by_token(s.token, now=14.0) is s  # used at 5: idle 9 s
    assert auth.by_token(s.token, now=25.0) is None and not auth.sessions


def load_accounts_from(table: dict[str, tuple[str, str]]):
    from mcm_firmware.redfish.auth import Account

    return {u: Account(u, role, pw) for u, (role, pw) in table.items()}


def test_a_failed_sensor_reads_null_never_nan():
    assert rs.num(float("nan")) is None and rs.num(float("inf")) is None and rs.num(1.23456) == 1.235
    assert "Chassis_v1.xml" in rs.metadata_document() and rs.odata_document()["value"][0]["url"] == "/redfish/v1/"


def snapshot(**kw):
    from mcm_firmware.protocol.telemetry import DieTelemetry, HbmTelemetry, PumpTelemetry, Snapshot, ValveTelemetry

    base = dict.fromkeys(Snapshot._fields, 0)
    base.update(
        state=1,
        mode=0,
        power_w=900.0,
        power_cap_w=1300.0,
        inlet_c=30.0,
        outlet_c=40.0,
        flow_lpm=8.0,
        dies=(DieTelemetry(60.0, 220.0, 1800, 850, 0, 0, 90),) * 2,
        hbm=(HbmTelemetry(55.0, 0, 0),),
        pumps=(PumpTelemetry(3000, 0x3), PumpTelemetry(0, 0)),
        valves=(ValveTelemetry(50.0, 0),),
    )
    base.update(kw)
    return Snapshot(**base)


def node(**kw):
    from mcm_firmware.protocol import Birth, Death, DeathReason
    from mcm_firmware.redfish.state import NodeView

    birth = Birth(
        node_id=3, seq=1, timestamp_ns=0, profile="p", firmware="f", capabilities=0, boot_count=1, bdseq=1,
        dies=2, hbm_stacks=1, pumps=2, valves=1,
    )  # fmt: skip
    view = NodeView(3, birth=birth, decoded=snapshot(**kw), last_seen=0.0)
    view.judge(1.0, 3.0)
    return view, Death(node_id=3, seq=2, timestamp_ns=0, boot_count=1, bdseq=1, reason=DeathReason.SHUTDOWN)


@pytest.mark.parametrize(
    ("change", "health"),
    [
        ({}, "OK"),
        ({"state": 2}, "Critical"),  # dice powered off by a protection
        ({"mode": 2}, "Critical"),  # natural convection
        ({"flags": 0x10}, "Critical"),  # a row remap failed
        ({"recovery_action": 2}, "Critical"),
        ({"mode": 1}, "Warning"),
        ({"flags": 0x08}, "Warning"),  # remaps pending
        ({"inlet_c": float("nan")}, "Warning"),  # a failed sensor
    ],
)
def test_the_health_of_a_module(change, health):
    view, _ = node(**change)
    assert rs.health_of(view) == health and rs.chassis(view)["Status"]["HealthRollup"] == health


HEALTH_CHANGES = [
    {},
    {"state": 2},
    {"state": 0},
    {"mode": 2},
    {"mode": 1},
    {"flags": 0x10},
    {"flags": 0x08},
    {"flags": 0x20},
    {"recovery_action": 2},
    {"inlet_c": float("nan")},
    {"outlet_c": float("inf")},
    {"flow_lpm": float("nan")},
]


def _variants():
    from mcm_firmware.protocol.telemetry import DieTelemetry, HbmTelemetry, PumpTelemetry

    out = list(HEALTH_CHANGES)
    out.append({"dies": (DieTelemetry(60.0, 220.0, 1800, 850, 0, 0, 90), DieTelemetry(float("nan"), 1, 1, 1, 0, 0, 0))})
    out.append({"hbm": (HbmTelemetry(float("nan"), 0, 0),)})
    out.append({"pumps": (PumpTelemetry(3000, 0x3 | 0x4), PumpTelemetry(0, 0))})
    out.append({"pumps": (PumpTelemetry(0, 0x2), PumpTelemetry(3000, 0x1))})  # the lag pump took over
    out.append({"power_w": 1234.5, "inlet_c": 31.0, "uptime_ns": 99})  # readings only: the same key
    return out


def test_the_health_key_read_raw_changes_whenever_the_health_can():
    """The fields read from a raw telemetry payload (one struct call) hold every input of a
    module's health: two payloads with the same key have the same health, whatever else differs."""
    from mcm_firmware.protocol.codec import snapshot_payload
    from mcm_firmware.redfish.state import health_key

    seen: dict[tuple, str] = {}
    keys = []
    for change in _variants():
        view, _ = node(**change)
        key = health_key(snapshot_payload(view.snapshot))
        health = rs.health_of(view)
        assert seen.setdefault(key, health) == health, change
        keys.append(key)
    assert keys[0] == keys[-1]  # readings alone change no key
    assert len(set(keys)) == len(keys) - 1  # each input of the health changes it


def test_telemetry_is_kept_raw_and_decoded_once_when_read():
    from mcm_firmware.protocol.codec import FrameError, snapshot_payload
    from mcm_firmware.redfish.state import FleetView

    fleet = FleetView("f")
    one, two = snapshot(power_w=800.0), snapshot(power_w=801.0, inlet_c=float("nan"))
    view, changed = fleet.take_telemetry(3, 10, 5, memoryview(snapshot_payload(one)), now=1.0)
    assert changed and view.raw is not None and view.decoded is None and view.has_telemetry
    assert view.snapshot == one and view.raw is None and view.snapshot is view.decoded  # decoded once
    _, changed = fleet.take_telemetry(3, 11, 6, memoryview(snapshot_payload(one._replace(power_w=1.0))), now=2.0)
    assert not changed and fleet.missed == 0
    _, changed = fleet.take_telemetry(3, 14, 7, memoryview(snapshot_payload(two)), now=3.0)
    assert changed and fleet.missed == 2 and view.snapshot_ns == 7 and view.seq == 14  # 12 and 13 not seen
    fleet.seen(3, 12)  # an answer that came on the command connection, late: not missing
    fleet.seen(99, 1)  # a node not known: nothing
    assert fleet.missed == 1 and view.seq == 14
    fleet.seen(3, 7_000_000)  # the node started again (its numbers jumped): nothing missed
    assert fleet.missed == 1 and view.seq == 7_000_000
    assert math.isnan(view.snapshot.inlet_c) and rs.health_of(view) == "Warning"
    payload = snapshot_payload(one)
    for bad, reason in ((payload[:-1], "counts need"), (payload[:50], "shorter"),
                        (payload[:8] + b"\x09" + payload[9:], "state 9")):  # fmt: skip
        with pytest.raises(FrameError, match=reason):
            fleet.take_telemetry(3, 15, 8, memoryview(bad), now=4.0)
    assert view.seq == 7_000_000 and fleet.frames == 3  # nothing taken from a bad payload


def test_state_power_state_pumps_and_sensors_of_a_module():
    from mcm_firmware.protocol.telemetry import PumpTelemetry

    view, death = node()
    assert rs.state_of(view) == "Enabled" and rs.power_state(view) == "On"
    assert (
        rs.pump(view, 0)["Status"] == {"State": "Enabled", "Health": "OK"} and rs.pump(view, 0)["Oem"]["McmEmu"]["Lead"]
    )
    assert rs.pump(view, 1)["Status"]["State"] == "StandbySpare" and rs.pump(view, 2) is None
    assert rs.sensor(view, "Die1Clock")["Reading"] == 1800000000 and rs.sensor(view, "Nope") is None
    assert len(rs.sensors(view)["Members"]) == 6 + 4 * 2 + 1 + 2 + 1
    failed, _ = node(inlet_c=float("nan"), pumps=(PumpTelemetry(0, 0x4),))
    assert rs.sensor(failed, "CoolantInletTemp")["Reading"] is None
    assert rs.sensor(failed, "CoolantInletTemp")["Status"]["Health"] == "Warning"
    assert rs.pump(failed, 0)["Status"]["Health"] == "Critical"
    for state, power in ((0, "PoweringOn"), (2, "Off"), (3, "PoweringOff")):
        assert rs.power_state(node(state=state)[0]) == power
    view.death = death
    assert rs.state_of(view) == "UnavailableOffline" and rs.power_state(view) == "Off"
    assert rs.chassis(view)["Oem"]["McmEmu"]["DeathReason"] == "SHUTDOWN"
    silent, _ = node()
    silent.judge(10.0, 3.0)
    assert rs.state_of(silent) == "UnavailableOffline" and rs.power_state(silent) is None
    with pytest.raises(ValueError, match="declares no"):
        rs.oem("Pump", {"Colour": "red"})


def test_a_modules_cooling_loop_and_the_loops_of_10000_modules():
    """A loop a module, with the module's status and the frame it comes from; the collection of a
    10,000-module fleet lists the modules as the Chassis collection does, decoding no frame."""
    from mcm_firmware.protocol.codec import snapshot_payload
    from mcm_firmware.protocol.telemetry import PumpTelemetry
    from mcm_firmware.redfish.state import FleetView

    view, death = node()
    loop = rs.cooling_loop(view)
    assert loop["Id"] == "3" and loop["@odata.id"] == rs.cooling_loop_uri(3)
    assert loop["Status"] == rs.status(view) == {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"}
    assert loop["Links"] == {"Chassis": {"@odata.id": rs.chassis_uri(3)}}
    assert rs.chassis(view)["Links"] == {"ConnectedCoolingLoops": [{"@odata.id": rs.cooling_loop_uri(3)}]}
    assert rs.cooling_loop_connectors(view)["Members"] == [{"@odata.id": rs.coolant_connector_uri(3)}]
    assert rs.coolant_connector(view)["Links"] == {"ConnectedCoolingLoop": {"@odata.id": rs.cooling_loop_uri(3)}}
    assert "Oem" not in loop  # no frame: none named
    view.snapshot_ns = 1_700_000_000_123_456_789
    assert rs.cooling_loop(view)["Oem"]["McmEmu"]["SnapshotTime"] == "2023-11-14T22:13:20.123456Z"
    faulty, _ = node(pumps=(PumpTelemetry(0, 0x4),))
    assert rs.cooling_loop(faulty)["Status"]["Health"] == "Warning"
    view.death = death
    assert rs.cooling_loop(view)["Status"]["State"] == "UnavailableOffline"

    fleet = FleetView("f")
    payload = memoryview(snapshot_payload(snapshot()))
    for n in reversed(range(10_000)):
        fleet.take_telemetry(n, 1, 1, payload, now=1.0)
    loops = rs.cooling_loops(fleet)
    assert loops["Members@odata.count"] == 10_000
    ids = [m["@odata.id"].rsplit("/", 1)[1] for m in loops["Members"]]
    assert ids == [m["@odata.id"].rsplit("/", 1)[1] for m in rs.chassis_collection(fleet)["Members"]]
    assert ids[:3] == ["0", "1", "2"]
    assert all(v.raw is not None and v.decoded is None for v in fleet.nodes.values())  # no frame decoded


def test_each_hbm_stack_is_a_memory_with_its_ecc_errors():
    from mcm_firmware.protocol.telemetry import HbmTelemetry

    view, _ = node(
        hbm=(HbmTelemetry(55.0, 0, 0), HbmTelemetry(56.0, 17, 2)),
        flags=0x08,  # remaps pending
        remapped_correctable=3,
        remapped_uncorrectable=1,
        ecc_ce_aggregate=40,
        ecc_ue_aggregate=5,
    )
    uris = [m["@odata.id"] for m in rs.memory_collection(view)["Members"]]
    assert uris == ["/redfish/v1/Chassis/3/Memory/HBM0", "/redfish/v1/Chassis/3/Memory/HBM1"]
    assert [rs.memory_stack(view, m) for m in ("HBM1", "HBM2", "HBM01", "X1", "HBM")] == [1, None, None, None, None]
    assert rs.memory(view, 0)["Status"]["Health"] == "OK" and rs.memory(view, 1)["Status"]["Health"] == "Warning"
    m = rs.memory_metrics(view, 1)
    assert m["CurrentPeriod"] == {"CorrectableECCErrorCount": 17, "UncorrectableECCErrorCount": 2}
    assert m["HealthData"]["AlarmTrips"]["UncorrectableECCError"]
    ext = rs.chassis(view)["Oem"]["McmEmu"]
    assert (ext["MemoryRowsRemappedCorrectable"], ext["MemoryRowsRemappedUncorrectable"]) == (3, 1)
    assert ext["MemoryRowRemapPending"] and not ext["MemoryRowRemapFailed"] and not ext["MemoryCEStorm"]
    assert (ext["MemoryLifetimeCorrectableECCErrorCount"], ext["MemoryLifetimeUncorrectableECCErrorCount"]) == (40, 5)
    # the stack of a remap, from its event; its state from the module's flags
    from mcm_firmware.protocol import Event, EventCode
    from mcm_firmware.redfish.state import FleetView

    fleet = FleetView("f")
    fleet.nodes[3] = view
    fleet.take(Event(node_id=3, severity=2, code=EventCode.REMAP_PENDING, subject=0))
    assert rs.memory(view, 0)["Status"]["Health"] == "Warning"  # flags 0x08: pending
    fleet.take(Event(node_id=3, severity=5, code=EventCode.REMAP_FAILED, subject=0))
    assert rs.memory(view, 0)["Status"]["Health"] == "Warning"  # no REMAP_FAILED flag: not believed
    view.snapshot = view.snapshot._replace(flags=0x10)
    assert rs.memory(view, 0)["Status"]["Health"] == "Critical"
    fleet.take(Event(node_id=3, severity=2, code=EventCode.RESET_DONE))
    view.snapshot = view.snapshot._replace(flags=0)
    assert rs.memory(view, 0)["Status"]["Health"] == "OK" and not view.remap_pending


def test_the_event_messages_are_dmtfs_and_the_log_keeps_the_newest():
    from mcm_firmware.protocol import Event, EventCode
    from mcm_firmware.redfish import events as ev
    from mcm_firmware.redfish.registry import EVENTS

    for registry, msgs in EVENTS.items():
        published = json.loads((shared("registries") / f"{registry}.json").read_text())["Messages"]
        for key, msg in msgs.items():
            ref = published[key]
            assert (msg.text, msg.args, msg.severity, msg.resolution) == (
                ref["Message"], ref.get("NumberOfArgs", 0), ref["MessageSeverity"], ref["Resolution"],
            ), key  # fmt: skip
    oem = ev.oem_registry()["Messages"]
    assert {"PumpFault", "ThermalShutdown", "CeStorm", "UnknownEvent"} <= set(oem)

    view, _ = node()
    view.pump_names = ("A", "B")
    log = ev.NodeLog()

    def event(code: int, **kw) -> ev.Record:
        return ev.from_event(log, view, Event(node_id=3, timestamp_ns=1_700_000_000_000_000_000, code=code, **kw))

    r = event(EventCode.PUMP_FAULT, severity=4, subject=1)
    assert (r.message_id, r.message, r.severity) == ("Environmental.1.4.PumpFailed", "Pump 'B' has failed.", "Critical")
    assert r.origin == "/redfish/v1/Chassis/3/ThermalSubsystem/Pumps/1"
    assert event(EventCode.VRM_OVERCURRENT, severity=4, value=812.5).message_id == "Power.1.2.CurrentCritical"
    assert event(EventCode.UE, severity=3, subject=2).origin == "/redfish/v1/Chassis/3/Memory/HBM2"
    r = event(EventCode.THERMAL_SHUTDOWN, severity=5, value=105.0, text="die 1")
    assert (r.message_id, r.message) == (
        "McmEmu.1.0.ThermalShutdown",
        "The module reported thermal shutdown (subject 65535, value 105): die 1",
    )
    assert event(999, severity=1).message_id == "McmEmu.1.0.UnknownEvent"
    entry = ev.log_entry(r)
    assert entry["Created"] == "2023-11-14T22:13:20.000Z" and entry["EntryType"] == "Event"
    assert [m["@odata.id"].rsplit("/", 1)[1] for m in ev.log_entries(view, log)["Members"]] == ["5", "4", "3", "2", "1"]
    for _ in range(ev.LOG_LIMIT):
        event(EventCode.BOOT, severity=1)
    assert len(log.entries) == ev.LOG_LIMIT and log.entries[0].id == 6 and ev.find(log, "5") is None

    # changes of health and state, none the first time
    assert ev.changes(log, view, 0) == []
    sick, _ = node(mode=1)
    (r,) = ev.changes(log, sick, 0)
    assert (r.message_id, r.args) == (
        "ResourceEvent.1.4.ResourceStatusChangedWarning",
        ("/redfish/v1/Chassis/3", "Warning"),
    )
    sick.judge(100.0, 3.0)
    assert [r.message_id for r in ev.changes(log, sick, 0)] == ["ResourceEvent.1.4.ResourceStateChanged"]


def test_the_sse_filter():
    from mcm_firmware.redfish.events import FilterError, Record, resource_type, sse_filter

    def rec(mid: str, origin: str = "/redfish/v1/Chassis/2") -> Record:
        return Record(2, 1, 0, "OK", mid, "m", (), origin, True)

    pump = rec("Environmental.1.4.PumpFailed", "/redfish/v1/Chassis/2/ThermalSubsystem/Pumps/0")
    health = rec("ResourceEvent.1.4.ResourceStatusChangedWarning")
    oem = rec("McmEmu.1.0.FaultInjected")
    everything = (pump, health, oem)
    for text, wanted in (
        ("MessageId eq 'Environmental.PumpFailed'", [pump]),
        ("MessageId eq Environmental.1.4.PumpFailed", [pump]),
        ("RegistryPrefix eq McmEmu or RegistryPrefix eq 'Environmental'", [pump, oem]),
        ("ResourceType eq 'Pump' or ResourceType eq Chassis and RegistryPrefix eq ResourceEvent", [pump, health]),
        ("(ResourceType eq Pump or ResourceType eq Chassis) and RegistryPrefix eq ResourceEvent", [health]),
        ("OriginResource eq '/redfish/v1/Chassis/2/'", [health, oem]),
        ("EventFormatType eq Event", list(everything)),
        ("EventFormatType eq MetricReport", []),
        ("MetricReportDefinition eq 'x'", []),
        ("MessageId eq 'it''s'", []),
    ):
        assert [r for r in everything if sse_filter(text)(r)] == wanted, text
    assert resource_type("/redfish/v1/Chassis/1/Memory/HBM2") == "Memory"
    for text, part in (
        ("Colour eq red", "Colour"),
        ("MessageId gt 3", "MessageId gt"),
        ("MessageId eq", "MessageId eq"),
        ("MessageId eq )", "MessageId eq )"),
        ("MessageId eq 'open", "'open"),
        ("(MessageId eq x) )", ")"),
        ("   ", "   "),
    ):
        with pytest.raises(FilterError) as e:
            sse_filter(text)
        assert e.value.part == part, (text, e.value)


def test_the_gateways_telemetry_intake():
    """What the telemetry subscriber hands the gateway: TELEMETRY kept raw, SAMPLES decoded, a
    damaged frame rejected and counted, with frame keys a sealed frame taken and an unsealed or
    forged one rejected; nothing raises."""
    import asyncio
    import time

    from mcm_firmware.protocol import Samples, Telemetry, encode
    from mcm_firmware.protocol.auth import FrameAuth
    from mcm_firmware.protocol.telemetry import DieSample, Sample
    from mcm_firmware.redfish.gateway import Gateway
    from mcm_firmware.transport import transport_factory

    now = time.time_ns()
    tlm = encode(Telemetry(node_id=4, seq=1, timestamp_ns=now, snapshot=snapshot()))
    samples = encode(Samples(node_id=5, seq=1, timestamp_ns=now, period_us=10_000,
                             samples=(Sample(900.0, (DieSample(60.0, 220.0),) * 2),), snapshot=snapshot()))  # fmt: skip
    damaged = tlm[:-1] + bytes([tlm[-1] ^ 1])
    again = encode(Telemetry(node_id=4, seq=2, timestamp_ns=now, snapshot=snapshot(power_w=1.0)))
    auth = FrameAuth("f", {1: bytes(range(32))}.get, lambda: 1)

    async def feed() -> tuple[Gateway, Gateway]:
        plain = Gateway(transport_factory("loopback://rf"), "f")
        for frame in (tlm, again, samples, damaged, b"MC", samples[:40]):
            plain._on_telemetry(b"mcm/v1/f/4/tlm", memoryview(frame))
        sealed = Gateway(transport_factory("loopback://rf"), "f", auth=auth)
        good = auth.seal(encode(Telemetry(node_id=4, seq=2, timestamp_ns=now, snapshot=snapshot())), 4)
        forged = good[:-1] + bytes([good[-1] ^ 1])
        for frame in (good, tlm, forged):
            sealed._on_telemetry(b"mcm/v1/f/4/tlm", memoryview(frame))
        return plain, sealed

    plain, sealed = asyncio.run(feed())
    assert plain.tlm_received == 6 and plain.rejected == 3 and sorted(plain.view.nodes) == [4, 5]
    assert plain.view.nodes[4].raw is not None and plain.view.nodes[5].raw is None  # SAMPLES: decoded
    assert plain.view.nodes[5].snapshot == snapshot() and plain.view.nodes[4].snapshot == snapshot(power_w=1.0)
    assert plain.tlm_decoded == 1 and 0 <= plain.tlm_age_max < 5
    assert "6 telemetry frames received, 1 decoded on arrival), 3 rejected" in plain.summary()
    assert sealed.rejected == 2 and sealed.view.nodes[4].seq == 2 and sealed.view.frames == 1


def test_a_patch_waits_for_telemetry_the_node_sent_after_its_answer():
    """Telemetry travels on a connection of its own: a frame the node built before its answer to
    a PATCH may arrive after the answer. The service renders the control from the first frame sent
    after the answer (its sequence number later, modulo 2^32), not from whatever frame comes next."""
    import asyncio
    import time

    from mcm_firmware.protocol import Telemetry, encode
    from mcm_firmware.redfish.gateway import Gateway
    from mcm_firmware.transport import transport_factory

    def frame(seq: int) -> memoryview:
        return memoryview(encode(Telemetry(node_id=4, seq=seq, timestamp_ns=time.time_ns(), snapshot=snapshot())))

    async def scenario(answer: int, frames: list[int]) -> list[tuple[int, bool, bool]]:
        gw = Gateway(transport_factory("loopback://rf"), "f")
        after = asyncio.ensure_future(gw.next_telemetry(4, 1.0, after_seq=answer))
        plain = asyncio.ensure_future(gw.next_telemetry(4, 1.0))
        await asyncio.sleep(0)
        seen = []
        for seq in frames:
            gw._on_telemetry(b"mcm/v1/f/4/tlm", frame(seq))
            for _ in range(5):  # the waiters' tasks see their futures
                await asyncio.sleep(0)
            seen.append((seq, plain.done(), after.done()))
        await asyncio.gather(after, plain)
        return seen

    # frames 9 and 10 were built before the answer (seq 10): only frame 11 is after it
    assert asyncio.run(scenario(10, [9, 10, 11])) == [(9, True, False), (10, True, False), (11, True, True)]
    # across the wrap of the 32-bit sequence number
    assert asyncio.run(scenario(0xFFFFFFFF, [0xFFFFFFFE, 0])) == [(0xFFFFFFFE, True, False), (0, True, True)]
