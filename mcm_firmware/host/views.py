"""Plain-data (JSON-ready) and one-line text views of messages, for the CLI and fleet tools."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from enum import IntEnum
from typing import Any

from ..protocol import (
    Birth,
    Command,
    CoolingMode,
    Death,
    EccMode,
    Event,
    EventCode,
    FrameFlags,
    Link,
    LinkFaultCounts,
    Message,
    NodeState,
    PowerLimitSource,
    PumpFlags,
    RasFlags,
    RasResult,
    RecoveryAction,
    Response,
    Samples,
    Severity,
    Snapshot,
    SnapshotFlags,
    StatsResult,
    Status,
    StatusResult,
    Telemetry,
    ValveFlags,
    reason_names,
)
from ..protocol.messages import to_container
from ..transport import Address
from ..transport.topics import topic


def _num(x: float) -> float | None:
    """JSON has no NaN: a failed sensor reads null."""
    return None if isinstance(x, float) and not math.isfinite(x) else round(x, 3) if isinstance(x, float) else x


def _name(value: int, cls: type[IntEnum]) -> str | int:
    try:
        return cls(value).name
    except ValueError:
        return value


def _label(value: int, cls: type[PowerLimitSource]) -> str | int:
    try:
        return cls(value).label
    except ValueError:
        return value


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    pstates = [d.pstate for d in s.dies]
    return {
        "state": _name(s.state, NodeState),
        "mode": _name(s.mode, CoolingMode),
        "uptime_s": round(s.uptime_ns / 1e9, 3),
        "failsafe": bool(s.flags & SnapshotFlags.FAILSAFE),
        "clocks_locked": bool(s.flags & SnapshotFlags.CLOCKS_LOCKED),
        "power_w": _num(s.power_w),
        "power_cap_w": _num(s.power_cap_w),
        "inlet_c": _num(s.inlet_c),
        "outlet_c": _num(s.outlet_c),
        "flow_lpm": _num(s.flow_lpm),
        "vrm_current_a": _num(s.vrm_current_a),
        "rx_rejected": s.rx_rejected,
        "energy_mj": s.energy_mj,
        "viol_power_ms": s.viol_power_ms,
        "viol_thermal_ms": s.viol_thermal_ms,
        "viol_hbm_thermal_ms": s.viol_hbm_thermal_ms,
        "viol_hw_slowdown_ms": s.viol_hw_slowdown_ms,
        "power_limit_source": _label(s.power_limit_source, PowerLimitSource),
        "pcie": {
            "replays": s.pcie_replays,
            "aer_correctable": s.pcie_aer_correctable,
            "aer_uncorrectable": s.pcie_aer_uncorrectable,
        },
        "pstate": min(pstates) if pstates else None,
        "ras": {
            "ce": sum(h.ce for h in s.hbm),
            "ue": sum(h.ue for h in s.hbm),
            "remap_pending": bool(s.flags & SnapshotFlags.REMAP_PENDING),
            "remap_failed": bool(s.flags & SnapshotFlags.REMAP_FAILED),
            "ce_storm": bool(s.flags & SnapshotFlags.CE_STORM),
            "recovery_action": _name(s.recovery_action, RecoveryAction),
            "remapped_correctable": s.remapped_correctable,
            "remapped_uncorrectable": s.remapped_uncorrectable,
            "ce_aggregate": s.ecc_ce_aggregate,
            "ue_aggregate": s.ecc_ue_aggregate,
        },
        "dies": [
            {
                "temp_c": _num(d.temp_c),
                "power_w": _num(d.power_w),
                "clock_mhz": d.clock_mhz,
                "voltage_mv": d.voltage_mv,
                "pstate": d.pstate,
                "util_pct": d.util_pct,
                "reasons": d.reasons,
                "reason_names": reason_names(d.reasons),
            }
            for d in s.dies
        ],
        "hbm": [{"temp_c": _num(h.temp_c), "ce": h.ce, "ue": h.ue} for h in s.hbm],
        "valves": [
            {
                "position_pct": _num(v.position_pct),
                "manual": bool(v.flags & ValveFlags.MANUAL),
                "external": bool(v.flags & ValveFlags.EXTERNAL),
            }
            for v in s.valves
        ],
    }


def pumps_json(s: Snapshot, names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, p in enumerate(s.pumps):
        out.append(
            {
                "name": names[i] if names and i < len(names) else str(i),
                "running": bool(p.flags & PumpFlags.RUNNING),
                "lead": bool(p.flags & PumpFlags.LEAD),
                "fault": bool(p.flags & PumpFlags.FAULT),
                "rpm": p.rpm,
            }
        )
    return out


def stats_json(st: StatsResult) -> dict[str, Any]:
    """The runtime figures of STATS: telemetry, drops, tick lateness (ms), loop lag (ms), GC."""
    return {
        "telemetry": {"due": st.tlm_due, "sent": st.tlm_sent, "dropped": st.tlm_dropped, "decimated": st.tlm_decimated},
        "dropped": {"responses": st.rsp_dropped, "events": st.evt_dropped},
        "refused": {"commands": st.cmd_refused, "bad_argument": st.cmd_bad_argument, "auth": st.auth_refused},
        "rx_duplicates": st.rx_duplicates,
        "tx_queued": st.tx_queued,
        "tick_late_ms": {
            "ticks": st.ticks,
            "p50": st.tick_late_p50_us / 1e3,
            "p99": st.tick_late_p99_us / 1e3,
            "max": st.tick_late_max_us / 1e3,
        },
        "periods_late": st.periods_late,
        "loop_lag_ms": {"p99": st.loop_lag_p99_us / 1e3, "max": st.loop_lag_max_us / 1e3},
        "gc_ms": st.gc_ms,
        "link_faults": {way: _link_fault_json(getattr(st, f"link_{way}")) for way in ("out", "in")},
    }


def _link_fault_json(n: LinkFaultCounts) -> dict[str, int]:
    return {"dropped": n.dropped, "corrupted": n.corrupted, "duplicated": n.duplicated, "delayed": n.delayed}


def status_json(node: int, st: StatusResult, stats: StatsResult | None = None) -> dict[str, Any]:
    """STATUS as data; with the node's STATS (``ctl status`` asks for both) under ``runtime``."""
    snap = snapshot_json(st.snapshot)
    out: dict[str, Any] = {
        "node": node,
        "state": snap.pop("state"),
        "profile": st.profile,
        "firmware": st.firmware,
        "boot_count": st.boot_count,
        "uptime_s": snap.pop("uptime_s"),
        "seq": st.tx_seq,
    }
    out.update(snap)
    lim = st.power_limits
    out["power_limits"] = {
        "enforced_w": snap["power_cap_w"],
        "source": snap.pop("power_limit_source"),
        "default_w": _num(lim.default_w),
        "in_band_w": _num(lim.in_band_w),
        "out_of_band_w": _num(lim.out_of_band_w),
        "min_w": _num(lim.min_w),
        "max_w": _num(lim.max_w),
    }
    out["pumps"] = pumps_json(st.snapshot, st.pump_names)
    out["faults"] = list(st.faults)
    out["counters"] = {
        "rx_frames": st.rx_frames,
        "rx_rejected": st.snapshot.rx_rejected,
        "tx_frames": st.tx_frames,
        "tx_dropped": st.tx_dropped,
        "reconnects": st.reconnects,
    }
    out["link_util_pct"] = st.link_util_permille / 10
    if stats is not None:
        out["runtime"] = stats_json(stats)
    return out


def ras_json(node: int, r: RasResult) -> dict[str, Any]:
    return {
        "node": node,
        "ecc": _name(r.ecc, EccMode),
        "ce": r.ce,
        "ue": r.ue,
        "remap_pending": bool(r.flags & RasFlags.REMAP_PENDING),
        "remap_failed": bool(r.flags & RasFlags.REMAP_FAILED),
        "ce_storm": bool(r.flags & RasFlags.CE_STORM),
        "recovery_action": _name(r.recovery_action, RecoveryAction),
        "remapped_rows": r.remapped_rows,
        "spare_rows_free": r.spare_rows_free,
        # nvmlDeviceGetRemappedRows (pending rows counted) and nvmlDeviceGetRowRemapperHistogram
        "remapped_correctable": r.remapped_correctable,
        "remapped_uncorrectable": r.remapped_uncorrectable,
        "bank_availability": {
            "max": r.banks_max,
            "high": r.banks_high,
            "partial": r.banks_partial,
            "low": r.banks_low,
            "none": r.banks_none,
        },
        "last_xid": r.last_xid,
        "scrub_passes": r.scrub_passes,
        "scrubbed_words": r.scrubbed_words,
        "stacks": [
            {
                "ce": sum(st.ce),
                "ue": sum(st.ue),
                "channels": [{"ce": c, "ue": u} for c, u in zip(st.ce, st.ue, strict=True)],
                "failed_devices": list(st.failed_devices),
            }
            for st in r.stacks
        ],
        "pending": [{"stack": p.stack, "channel": p.channel, "bank": p.bank, "row": p.row} for p in r.pending],
    }


def message_json(address: Address | None, msg: Message) -> dict[str, Any]:
    """Topic, node, type, seq and every decoded field of a message."""
    out: dict[str, Any] = {
        "topic": topic(address) if address else None,
        "node": msg.node_id,
        "type": msg.TYPE.name,
        "seq": msg.seq,
        "timestamp_ns": msg.timestamp_ns,
        "flags": msg.flags,
    }
    if isinstance(msg, (Telemetry, Samples)):
        out.update(snapshot_json(msg.snapshot))
        out["pumps"] = pumps_json(msg.snapshot)
        if isinstance(msg, Samples):
            out["period_us"] = msg.period_us
            out["samples"] = typed_json(msg.samples)
    elif isinstance(msg, Event):
        out.update(
            severity=_name(msg.severity, Severity),
            code=_name(msg.code, EventCode),
            subject=msg.subject,
            value=_num(msg.value),
            text=msg.text,
        )
    elif isinstance(msg, Response):
        out.update(request_id=msg.request_id, op=_op_name(msg.op), status=msg.status.name, message=msg.message)
        if isinstance(msg.data, StatusResult):
            out["data"] = status_json(msg.node_id, msg.data)
        elif isinstance(msg.data, RasResult):
            out["data"] = ras_json(msg.node_id, msg.data)
        elif msg.data is not None:
            out["data"] = plain(to_container(msg.data))
    else:  # BIRTH, DEATH, COMMAND
        for key, value in plain(to_container(msg)).items():
            field = getattr(msg, key, None)
            out[key] = field.name if isinstance(field, IntEnum) else value
    return out


def _op_name(op: int) -> str | int:
    return op.name if isinstance(op, IntEnum) else op


def plain(x: Any) -> Any:
    """A construct container as JSON-ready data: counts dropped, NaN as null."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items() if not k.startswith("n_")}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if isinstance(x, float):
        return _num(x)
    return x


def typed_json(x: Any) -> Any:
    """A typed value (answer data, arguments) as JSON-ready data: enum values by name, NaN as
    null, records as objects."""
    if isinstance(x, IntEnum):
        return x.name
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: typed_json(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return {k: typed_json(v) for k, v in zip(x._fields, x, strict=True)}
    if isinstance(x, (tuple, list)):
        return [typed_json(v) for v in x]
    return _num(x) if isinstance(x, float) else x


def clock_text(timestamp_ns: int) -> str:
    """A frame's timestamp as ``HH:MM:SS.mmm`` (UTC), for lines that follow a stream."""
    secs, ns = divmod(timestamp_ns, 1_000_000_000)
    try:
        return time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{ns // 1_000_000:03d}"
    except (OverflowError, OSError, ValueError):
        return f"t={timestamp_ns}ns"


def _fields_text(value: Any) -> str:
    """The scalar fields of an operation's arguments or answer, ``name=value`` (lists counted)."""
    if value is None or not dataclasses.is_dataclass(value):
        return ""
    parts = []
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if isinstance(v, float):
            parts.append(f"{f.name}={v:g}")
        elif isinstance(v, (int, str)):
            parts.append(f"{f.name}={v}")
        elif isinstance(v, tuple):
            parts.append(f"{f.name}={_items_text(v)}")
        elif dataclasses.is_dataclass(v):  # a record of counts: name:value pairs
            parts.append(f"{f.name}=" + ",".join(f"{g.name}:{getattr(v, g.name)}" for g in dataclasses.fields(v)))
    return " ".join(parts)


def _items_text(items: tuple[Any, ...], most: int = 8) -> str:
    """A list of records of scalars as ``A:x:y,B:z`` (enum values by name, empty fields left out),
    up to ``most`` of them; others as a count ``[n]``."""

    def scalar(v: Any) -> str | None:
        if isinstance(v, IntEnum):
            return v.name
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, (int, str)):
            return str(v)
        return None

    shown = []
    for item in items[:most]:
        if not dataclasses.is_dataclass(item):
            return f"[{len(items)}]"
        values = [scalar(getattr(item, f.name)) for f in dataclasses.fields(item)]
        if any(v is None for v in values):
            return f"[{len(items)}]"
        shown.append(":".join(v for v in values if v))
    return ",".join(shown) + (f",...({len(items)})" if len(items) > most else "") if items else "-"


def _status_summary(st: StatusResult) -> str:
    """A STATUS answer in a few fields: state, cooling mode, power against the limit enforced,
    the hottest die, clocks, flow, profile, boot count, faults in force (``ctl status`` has all)."""
    s = st.snapshot
    temps = [d.temp_c for d in s.dies if math.isfinite(d.temp_c)]
    hot = f"{max(temps):.1f}C" if temps else "n/a"
    clocks = "/".join(str(d.clock_mhz) for d in s.dies)
    return (
        f"state={_name(s.state, NodeState)} mode={_name(s.mode, CoolingMode)} "
        f"P={s.power_w:.0f}/{s.power_cap_w:.0f}W Tmax={hot} f={clocks}MHz flow={s.flow_lpm:.2f}L/min "
        f"profile={st.profile} firmware={st.firmware} boot={st.boot_count} faults={len(st.faults)}"
    )


def message_line(address: Address | None, msg: Message) -> str:
    """One human line per message, for ``monitor`` without ``--json``: the frame's time (UTC), the
    node, the type, the sequence number and the decoded fields that matter for each type."""
    head = f"{clock_text(msg.timestamp_ns)} {msg.node_id:>5} {msg.TYPE.name:<9} seq={msg.seq:<8}"
    if isinstance(msg, (Telemetry, Samples)):
        s = msg.snapshot
        temps = [d.temp_c for d in s.dies]
        hot = max((t for t in temps if math.isfinite(t)), default=float("nan"))
        clocks = "/".join(str(d.clock_mhz) for d in s.dies)
        line = (
            f"{head} {_name(s.state, NodeState)} {_name(s.mode, CoolingMode)} "
            f"P={s.power_w:.0f}/{s.power_cap_w:.0f}W Tmax={hot:.1f}C f={clocks}MHz "
            f"flow={s.flow_lpm:.2f}L/min"
        )
        if isinstance(msg, Samples) and msg.samples:
            powers = [x.power_w for x in msg.samples]
            line += f" samples={len(powers)}x{msg.period_us / 1000:g}ms P={min(powers):.0f}..{max(powers):.0f}W"
        return line
    if isinstance(msg, Event):
        return (
            f"{head} {_name(msg.severity, Severity)} {_name(msg.code, EventCode)} "
            f"subject={msg.subject} value={msg.value:g} {msg.text}"
        )
    if isinstance(msg, Birth):
        return f"{head} profile={msg.profile} firmware={msg.firmware} boot={msg.boot_count} bdseq={msg.bdseq}"
    if isinstance(msg, Death):
        return f"{head} {msg.reason.name} boot={msg.boot_count} bdseq={msg.bdseq}"
    if isinstance(msg, Link):
        ranges = ",".join(f"{r.first}-{r.last}" for r in msg.ranges)
        return f"{head} {msg.condition.name} link={msg.link} bdseq={msg.bdseq} nodes={ranges}"
    if isinstance(msg, Response):
        status = msg.status.name if isinstance(msg.status, Status) else str(msg.status)
        detail = _status_summary(msg.data) if isinstance(msg.data, StatusResult) else _fields_text(msg.data)
        return " ".join(
            x for x in (f"{head} request={msg.request_id} {_op_name(msg.op)} {status}", msg.message, detail) if x
        )
    if isinstance(msg, Command):
        retry = " RETRY" if msg.flags & FrameFlags.RETRY else ""
        return f"{head} request={msg.request_id} {_op_name(msg.op)}{retry} {_fields_text(msg.args)}".rstrip()
    return f"{head} {json.dumps(message_json(address, msg))}"


def ras_text(obj: dict[str, Any]) -> str:
    """``ctl ras`` as text, from :func:`ras_json`."""
    lines = [
        f"node {obj['node']}: ecc={obj['ecc']} ce={obj['ce']} ue={obj['ue']} "
        f"remap_pending={_yes(obj['remap_pending'])} remap_failed={_yes(obj['remap_failed'])} "
        f"ce_storm={_yes(obj['ce_storm'])} recovery_action={obj['recovery_action']} "
        f"remapped_rows={obj['remapped_rows']} spare_rows_free={obj['spare_rows_free']} "
        f"scrub_passes={obj['scrub_passes']}",
        f"  remapped rows: correctable={obj['remapped_correctable']} uncorrectable={obj['remapped_uncorrectable']} "
        f"pending={_yes(obj['remap_pending'])} failure={_yes(obj['remap_failed'])} last_xid={obj['last_xid'] or 'none'}",
        "  banks by spare rows available: " + " ".join(f"{k}={v}" for k, v in obj["bank_availability"].items()),
    ]
    for i, st in enumerate(obj["stacks"]):
        dev = f" failed_devices={st['failed_devices']}" if st["failed_devices"] else ""
        lines.append(f"  stack {i}: ce={st['ce']} ue={st['ue']}{dev}")
    for p in obj["pending"]:
        lines.append(f"  pending: stack {p['stack']} channel {p['channel']} bank {p['bank']} row {p['row']}")
    return "\n".join(lines)


def _shown(value: Any, digits: int = 1, unit: str = "") -> str:
    """A reading for people: fixed decimals, ``n/a`` for one not taken (NaN or missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _limits_text(lim: dict[str, Any] | None) -> list[str]:
    """``power limit 650 W (out-of-band) of: default 700, in-band 680, out-of-band 650; range 200..700 W``."""
    if lim is None:
        return []
    shown = ", ".join(
        f"{name} {_shown(lim[key], 0) if lim[key] is not None else '-'}"
        for key, name in (("default_w", "default"), ("in_band_w", "in-band"), ("out_of_band_w", "out-of-band"))
    )
    return [
        f"  power limit {_shown(lim['enforced_w'], 0)} W enforced ({lim['source']}); limits set: {shown}; "
        f"range {_shown(lim['min_w'], 0)}..{_shown(lim['max_w'], 0)} W"
    ]


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def status_text(obj: dict[str, Any]) -> str:
    """``ctl status`` as text, from :func:`status_json`: every figure of it, booleans as yes/no."""
    ras, c = obj["ras"], obj.get("counters", {})
    lines = [
        f"node {obj['node']}: {obj['state']} {obj['mode']} profile={obj['profile']} firmware={obj.get('firmware', '-')} "
        f"boot={obj['boot_count']} uptime={_shown(obj['uptime_s'], 1, ' s')} seq={obj.get('seq', '-')}",
        f"  power {_shown(obj['power_w'], 1)}/{_shown(obj['power_cap_w'], 0)} W P{obj['pstate']} "
        f"vrm {_shown(obj['vrm_current_a'], 1, ' A')} failsafe={_yes(obj['failsafe'])} "
        f"clocks locked={_yes(obj.get('clocks_locked'))}",
        *_limits_text(obj.get("power_limits")),
        f"  coolant: inlet {_shown(obj['inlet_c'], 1, ' C')} outlet {_shown(obj['outlet_c'], 1, ' C')} "
        f"flow {_shown(obj['flow_lpm'], 2, ' L/min')}",
        f"  energy {_shown(obj['energy_mj'] / 3.6e6, 3, ' Wh')} since boot; clocks held by: "
        + ", ".join(
            f"{what} {_shown(obj[f'viol_{key}_ms'] / 1e3, 1, ' s')}"
            for key, what in (
                ("power", "power cap"),
                ("thermal", "thermal"),
                ("hbm_thermal", "HBM temperature"),
                ("hw_slowdown", "hardware slowdown"),
            )
        ),
        f"  ras: ce={ras['ce']} ue={ras['ue']} (aggregate ce={ras['ce_aggregate']} ue={ras['ue_aggregate']}) "
        f"remapped rows correctable={ras['remapped_correctable']} uncorrectable={ras['remapped_uncorrectable']} "
        f"remap pending={_yes(ras['remap_pending'])} remap failed={_yes(ras['remap_failed'])} "
        f"ce storm={_yes(ras.get('ce_storm'))} recovery_action={ras['recovery_action']}",
        f"  pcie: replays={obj['pcie']['replays']} aer correctable={obj['pcie']['aer_correctable']} "
        f"uncorrectable={obj['pcie']['aer_uncorrectable']}",
        f"  faults in force: {', '.join(obj.get('faults', [])) or 'none'}",
        f"  link: rx {c.get('rx_frames', 0)} frames ({c.get('rx_rejected', obj['rx_rejected'])} rejected), "
        f"tx {c.get('tx_frames', 0)} ({c.get('tx_dropped', 0)} dropped), {c.get('reconnects', 0)} reconnects, "
        f"utilisation {_shown(obj.get('link_util_pct'), 1, ' %')}",
    ]
    for i, d in enumerate(obj["dies"]):
        lines.append(
            f"  die {i}: {_shown(d['temp_c'], 1, ' C')} {_shown(d['power_w'], 1, ' W')} {d['clock_mhz']} MHz "
            f"{d['voltage_mv']} mV P{d['pstate']} util={d['util_pct']}% "
            f"reasons={','.join(d['reason_names']) or '-'} (0x{d['reasons']:x})"
        )
    for i, h in enumerate(obj["hbm"]):
        lines.append(f"  hbm {i}: {_shown(h['temp_c'], 1, ' C')} ce={h['ce']} ue={h['ue']}")
    for p in obj["pumps"]:
        lines.append(
            f"  pump {p['name']}: {'running' if p['running'] else 'stopped'} {p['rpm']} rpm"
            f"{' lead' if p['lead'] else ''}{' FAULT' if p['fault'] else ''}"
        )
    for i, v in enumerate(obj["valves"]):
        held = [w for w, on in (("manual", v["manual"]), ("external", v.get("external"))) if on]
        lines.append(f"  valve {i}: {_shown(v['position_pct'], 1, ' %')}{''.join(' ' + w for w in held)}")
    rt = obj.get("runtime")
    if rt is not None:
        t, late, lag = rt["telemetry"], rt["tick_late_ms"], rt["loop_lag_ms"]
        refused = rt["refused"]
        lines.append(
            f"  runtime: telemetry {t['sent']}/{t['due']} sent (dropped {t['dropped']}, decimated {t['decimated']}); "
            f"responses dropped {rt['dropped']['responses']}, events dropped {rt['dropped']['events']}; "
            f"commands refused {refused['commands']}, bad arguments {refused['bad_argument']}"
            + (f", refused by frame authentication {refused['auth']}" if "auth" in refused else "")
            + f"; duplicates answered from the cache {rt['rx_duplicates']}, frames queued {rt['tx_queued']}"
        )
        lines.append(
            f"  timing: tick late p50/p99/max {late['p50']:.1f}/{late['p99']:.1f}/{late['max']:.1f} ms over "
            f"{late['ticks']} ticks, {rt['periods_late']} periods late; loop lag p99/max {lag['p99']:.1f}/"
            f"{lag['max']:.1f} ms; gc {rt['gc_ms']} ms"
        )
        lf = rt["link_faults"]
        if any(any(lf[way].values()) for way in lf):  # what an emulated link fault did
            lines.append(
                "  link faults: "
                + "; ".join(
                    f"{way} dropped {n['dropped']}, corrupted {n['corrupted']}, duplicated {n['duplicated']}, "
                    f"delayed {n['delayed']}"
                    for way, n in lf.items()
                )
            )
        else:
            lines.append("  emulated link: no frame dropped, corrupted, duplicated or delayed, in or out")
    return "\n".join(lines)


__all__ = [
    "message_json",
    "message_line",
    "plain",
    "ras_json",
    "ras_text",
    "snapshot_json",
    "status_json",
    "status_text",
]
