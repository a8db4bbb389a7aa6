"""Golden messages: one or more per message type and per command operation, with fixed values.

Every operation has a golden COMMAND (``command-<name>``), and every operation with a result a
golden RESPONSE (``response-<name>``): written out below where one was chosen by hand, otherwise
made from the example arguments and result of the operation's spec in
:mod:`mcm_firmware.protocol.ops`.

``docs/protocol.md`` lists their frames in hex (``python tools/golden_frames.py`` prints them);
``tests/protocol/test_codec.py`` checks that each hex block decodes to the message here and that the
message encodes to exactly that hex.
"""

from __future__ import annotations

from ..protocol import (
    OPS,
    Birth,
    Command,
    CoolingMode,
    Death,
    DeathReason,
    DieSample,
    DieTelemetry,
    Event,
    EventCode,
    FaultKind,
    FrameFlags,
    HbmTelemetry,
    InjectArgs,
    Link,
    LinkCondition,
    Message,
    NodeRange,
    NodeState,
    Op,
    PendingRow,
    PowerCapArgs,
    PowerLimits,
    PumpTelemetry,
    RasResult,
    Response,
    Sample,
    Samples,
    SetValveArgs,
    Severity,
    Snapshot,
    StackErrors,
    Status,
    StatusResult,
    Telemetry,
    ValveTelemetry,
    encode,
)
from ..protocol.mctp import VENDOR_RETAIN, ChannelCode, Kind, VendorMessage, encode_frame, fragment

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns

SNAPSHOT = Snapshot(
    uptime_ns=12_500_000_000,
    state=NodeState.RUNNING,
    mode=CoolingMode.NORMAL,
    flags=0,
    power_w=1100.5,
    power_cap_w=1300.0,
    inlet_c=30.0,
    outlet_c=36.75,
    flow_lpm=2.25,
    vrm_current_a=1150.5,
    rx_rejected=1,
    recovery_action=1,
    energy_mj=13_756_250,
    viol_power_ms=2_400,
    viol_thermal_ms=0,
    viol_hbm_thermal_ms=0,
    viol_hw_slowdown_ms=100,
    power_limit_source=1,
    remapped_correctable=0,
    remapped_uncorrectable=1,
    ecc_ce_aggregate=17,
    ecc_ue_aggregate=1,
    pcie_replays=6,
    pcie_aer_correctable=6,
    pcie_aer_uncorrectable=0,
    dies=(
        DieTelemetry(70.0, 270.25, 2000, 900, 0x0, 0, 85),
        DieTelemetry(71.5, 268.0, 1850, 860, 0x4, 1, 92),
    ),
    hbm=(HbmTelemetry(55.25, 3, 0),),
    pumps=(PumpTelemetry(3600, 0x03), PumpTelemetry(0, 0x00)),
    valves=(ValveTelemetry(62.5, 0),),
)

GOLDEN: dict[str, Message] = {
    "birth": Birth(
        node_id=3,
        seq=1,
        timestamp_ns=T0,
        profile="colossus-mcm",
        firmware="0.1.0",
        capabilities=0x0F,
        boot_count=1,
        bdseq=1,
        dies=4,
        hbm_stacks=8,
        pumps=2,
        valves=4,
    ),
    "death-will": Death(node_id=3, seq=0, timestamp_ns=T0, boot_count=1, bdseq=1, reason=DeathReason.CONNECTION_LOST),
    "telemetry": Telemetry(node_id=3, seq=42, timestamp_ns=T0 + 100_000_000, snapshot=SNAPSHOT),
    "command-ping": Command(
        node_id=3, seq=7, timestamp_ns=T0, flags=int(FrameFlags.HOST), request_id=0x01020304, op=Op.PING
    ),
    "response-ping": Response(
        node_id=3, seq=43, timestamp_ns=T0 + 1_000_000, request_id=0x01020304, op=Op.PING, status=Status.OK
    ),
    "response-status": Response(
        node_id=3,
        seq=44,
        timestamp_ns=T0 + 2_000_000,
        request_id=0x01020305,
        op=Op.STATUS,
        status=Status.OK,
        data=StatusResult(
            profile="colossus-mcm",
            firmware="0.1.0",
            boot_count=1,
            tx_seq=44,
            rx_frames=2,
            tx_frames=44,
            tx_dropped=0,
            reconnects=0,
            link_util_permille=125,
            pump_names=("A", "B"),
            faults=("pump-fail A",),
            power_limits=PowerLimits(
                default_w=1300.0, in_band_w=1300.0, out_of_band_w=1400.0, min_w=500.0, max_w=1400.0
            ),
            snapshot=SNAPSHOT,
        ),
    ),
    "response-unknown-op": Response(
        node_id=3, seq=45, timestamp_ns=T0, request_id=9, op=0x7777, status=Status.UNKNOWN_OP, message="unknown op"
    ),
    "command-set-power-cap": Command(
        node_id=3,
        seq=8,
        timestamp_ns=T0,
        flags=int(FrameFlags.HOST),
        request_id=0x01020306,
        op=Op.SET_POWER_CAP,
        args=PowerCapArgs(watts=800.0),
    ),
    "command-set-valve": Command(
        node_id=3,
        seq=9,
        timestamp_ns=T0,
        flags=int(FrameFlags.HOST | FrameFlags.RETRY),
        request_id=0x01020307,
        op=Op.SET_VALVE,
        args=SetValveArgs(valve=2, auto=0, pct=62.5),
    ),
    "response-ras": Response(
        node_id=3,
        seq=47,
        timestamp_ns=T0,
        request_id=0x01020308,
        op=Op.RAS,
        status=Status.OK,
        data=RasResult(  # a contained UE: XID 48, its row recorded for remapping (XID 63), XID 94
            ecc=1,
            flags=0x1,
            recovery_action=0,
            ce=3,
            ue=1,
            remapped_rows=0,
            spare_rows_free=8191,
            remapped_correctable=0,
            remapped_uncorrectable=1,
            banks_max=2047,
            banks_high=1,
            banks_partial=0,
            banks_low=0,
            banks_none=0,
            last_xid=94,
            scrub_passes=12,
            scrubbed_words=4096,
            stacks=(
                StackErrors(ce=(2, 1), ue=(0, 1), failed_devices=()),
                StackErrors(ce=(0, 0), ue=(0, 0), failed_devices=(7,)),
            ),
            pending=(PendingRow(stack=0, channel=1, bank=5, row=1234),),
        ),
    ),
    "response-bad-argument": Response(
        node_id=3,
        seq=48,
        timestamp_ns=T0,
        request_id=0x01020309,
        op=Op.SET_POWER_CAP,
        status=Status.BAD_ARGUMENT,
        message="power cap 2000 W outside 500..1400 W",
    ),
    "command-inject": Command(
        node_id=3,
        seq=10,
        timestamp_ns=T0,
        flags=int(FrameFlags.HOST),
        request_id=0x0102030A,
        op=Op.INJECT,
        args=InjectArgs(kind=int(FaultKind.SENSOR_STUCK), target="die:2", value=95.0, value2=0.0),
    ),
    "samples": Samples(
        node_id=3,
        seq=49,
        timestamp_ns=T0 + 1_000_000_000,
        period_us=100_000,
        samples=(
            Sample(1090.5, (DieSample(69.5, 268.25), DieSample(71.0, 266.5))),
            Sample(1101.0, (DieSample(70.0, 270.25), DieSample(71.5, 268.0))),
        ),
        snapshot=SNAPSHOT,
    ),
    "link-lost": Link(
        node_id=0,
        seq=0,
        timestamp_ns=T0,
        link="mcm-default-link-0-9999",
        bdseq=3,
        condition=LinkCondition.LOST,
        ranges=(NodeRange(first=0, last=9999),),
    ),
    "event": Event(
        node_id=3,
        seq=46,
        timestamp_ns=T0,
        severity=Severity.WARNING,
        code=int(EventCode.FAILSAFE_ENTER),
        subject=2,
        value=0.0,
        text="zone 2 enters failsafe",
    ),
}


def _from_specs() -> None:
    for spec in OPS.values():  # sequence numbers and request ids from the op, not the table's order
        GOLDEN.setdefault(
            f"command-{spec.name}",
            Command(
                node_id=3,
                seq=0x100 + int(spec.op),
                timestamp_ns=T0,
                flags=int(FrameFlags.HOST),
                request_id=0x01030000 + int(spec.op),
                op=spec.op,
                args=spec.example,
            ),
        )
        if spec.result is not None and spec.example_result is not None:
            GOLDEN.setdefault(
                f"response-{spec.name}",
                Response(
                    node_id=3,
                    seq=0x200 + int(spec.op),
                    timestamp_ns=T0 + 1_000_000,
                    request_id=0x01030000 + int(spec.op),
                    op=spec.op,
                    status=Status.OK,
                    data=spec.example_result,
                ),
            )


_from_specs()


# --- serial link (MCTP over DSP0253): docs/serial.md ------------------------------------------

SERIAL_GOLDEN: dict[str, tuple[int, int, int, int, VendorMessage | bytes]] = {
    # name: (source EID, destination EID, tag, MTU, message); bytes are a raw MCTP message
    "dsp0253-example": (9, 8, 0, 64, bytes.fromhex("00")),  # an MCTP control message, type 0
    "keepalive": (9, 8, 1, 64, VendorMessage(Kind.KEEPALIVE, 3)),
    "hello": (8, 0xFF, 2, 64, VendorMessage(Kind.HELLO, 0)),
    "command-ping": (8, 9, 3, 64, VendorMessage(Kind.FRAME, 3, ChannelCode.CMD, 0, encode(GOLDEN["command-ping"]))),
    "state-birth": (
        9,
        8,
        4,
        64,
        VendorMessage(Kind.FRAME, 3, ChannelCode.STATE, VENDOR_RETAIN, encode(GOLDEN["birth"])),
    ),
}
"""Golden serial messages, framed by :func:`serial_wire` into the bytes on the line."""


def serial_wire(name: str) -> bytes:
    src, dest, tag, mtu, msg = SERIAL_GOLDEN[name]
    body = msg if isinstance(msg, bytes) else msg.to_bytes()
    return b"".join(encode_frame(p) for p in fragment(body, dest=dest, src=src, tag=tag, mtu=mtu))


AUTH_SECRET = bytes(range(32))
"""Fleet secret of the sealed golden frames (key id 1): 00 01 02 ... 1f."""
AUTH_FLEET = "default"
AUTH_GOLDEN: dict[str, tuple[str, int, int]] = {
    # name: (the golden message sealed, key id, sender)
    "command-ping": ("command-ping", 1, 0x11223344),
    "response-ping": ("response-ping", 1, 0xA5A5A5A5),
}
"""Golden sealed frames (docs/protocol.md, "Frame authentication")."""


def sealed(name: str) -> bytes:
    """The golden frame ``name`` of :data:`AUTH_GOLDEN`, sealed."""
    from ..protocol.auth import node_key, seal

    message, key_id, sender = AUTH_GOLDEN[name]
    msg = GOLDEN[message]
    return seal(encode(msg), node_key(AUTH_SECRET, AUTH_FLEET, msg.node_id), key_id, sender)
