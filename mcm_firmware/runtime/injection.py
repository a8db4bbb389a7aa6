"""Applying and clearing faults (:mod:`mcm_firmware.faults`) on a running node.

Hardware faults change the plant's inputs, the sensors or the HBM store of the node's row in its
shard; link faults change the node's own link layer; crash and reboot end the controller's life.
Every fault is checked against the node's profile first; nothing changes if it does not apply.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..faults import (
    SPECS,
    ClearSpec,
    Fault,
    FaultError,
    FaultKind,
    address_of,
    index_in,
    pump_index,
    sensor_of,
)
from ..plant.sensors import SensorFault

if TYPE_CHECKING:
    from .node import Node

_SENSOR_FAULTS = {
    FaultKind.SENSOR_STUCK: SensorFault.STUCK,
    FaultKind.SENSOR_DRIFT: SensorFault.DRIFT,
    FaultKind.SENSOR_NOISE: SensorFault.NOISE,
    FaultKind.SENSOR_DROPOUT: SensorFault.DROPOUT,
    FaultKind.SENSOR_FAILED: SensorFault.FAILED,
}
_LINK = {
    FaultKind.LINK_DROP: "drop",
    FaultKind.LINK_CORRUPT: "corrupt",
    FaultKind.LINK_DUPLICATE: "duplicate",
    FaultKind.LINK_DELAY: "delay",
    FaultKind.LINK_REORDER: "jitter",
}


def _counts(node: Node) -> dict[str, int]:
    p = node.profile
    return {"die": p.die.count, "hbm": p.hbm.count, "flow": p.cooling.valves, "rpm": len(p.cooling.pumps)}


def _pumps(node: Node) -> list[str]:
    return [pp.name for pp in node.profile.cooling.pumps]


def canonical_target(node: Node, fault: Fault) -> str:
    """The target as the node names it (pump ``0`` -> ``A``), checked against the profile."""
    spec = SPECS[fault.kind]
    if spec.target is None:
        return ""
    if spec.target == "pump":
        return _pumps(node)[pump_index(fault.target, _pumps(node))]
    if spec.target == "valve":
        return str(index_in(fault.target, node.profile.cooling.valves, "valve"))
    if spec.target == "sensor":
        bank, idx = sensor_of(fault.target, _counts(node))
        return f"{bank}:{idx}"
    if spec.target == "stack":
        return str(index_in(fault.target, node.profile.hbm.count, "HBM stack"))
    if spec.target == "address":
        addr = address_of(fault.target)
        if not node.shard.ras_cfg.geometry.valid(addr):
            raise FaultError(f"HBM address {addr:#x} is outside this module's memory")
        return f"{addr:#x}"
    raise AssertionError(spec.target)


def apply_fault(node: Node, fault: Fault) -> Fault:
    """Inject ``fault`` into the node; returns it with its target in canonical form."""
    fault = Fault(fault.kind, canonical_target(node, fault), fault.value, fault.value2)
    shard, row, k = node.shard, node.row, fault.kind
    u = shard.inputs
    if k is FaultKind.PUMP_FAIL:
        u.pump_failed[row, _pumps(node).index(fault.target)] = True
    elif k is FaultKind.PUMP_OVERCURRENT:
        u.pump_overcurrent[row, _pumps(node).index(fault.target)] = True
    elif k is FaultKind.VALVE_STUCK:
        v = int(fault.target)
        if not math.isnan(fault.value):
            shard.plant.valve_pos[row, v] = fault.value
        u.valve_stuck[row, v] = True
    elif k in _SENSOR_FAULTS:
        bank, idx = fault.target.split(":")
        param = 0.0 if math.isnan(fault.value) else fault.value
        shard.set_sensor_fault(bank, row, int(idx), _SENSOR_FAULTS[k], param)
    elif k is FaultKind.VRM_OVERCURRENT:
        u.vrm_factor[row] = fault.value
    elif k is FaultKind.INLET_STEP:
        u.inlet_offset_c[row] = fault.value
    elif k is FaultKind.POWER_BRAKE:
        shard.dvfs.brake[row] = True
    elif k is FaultKind.HBM_FLIP:
        ctl = shard.ras[row]
        nbits = int(fault.value)
        width = ctl.store.bits_per_word_codeword
        if nbits > width:
            raise FaultError(f"hbm-flip: a codeword here has {width} bits, cannot flip {nbits}")
        bits = ctl.rng.sample(range(width), nbits)
        ctl.inject(int(fault.target, 0), bits, stuck=bool(fault.value2))
    elif k is FaultKind.HBM_DEVICE:
        ctl = shard.ras[row]
        dev = int(fault.value)
        if dev >= ctl.store.devices:
            raise FaultError(f"hbm-device: no device {dev} (devices 0..{ctl.store.devices - 1} per stack)")
        ctl.fail_device(int(fault.target), dev)
    elif k is FaultKind.CE_STORM:
        shard.set_ce_storm(row, int(fault.target), fault.value)
    elif k in _LINK:
        node.set_link_fault(_LINK[k], fault.value, after_answer=True)
    elif k is FaultKind.CRASH:
        node.crash(reboot_after=fault.value)
        return fault
    elif k is FaultKind.REBOOT:
        node.reboot()
        return fault
    else:  # pragma: no cover - SPECS and this function cover the same kinds
        raise FaultError(f"{k.label} is not implemented")
    node.faults[(int(k), fault.target)] = fault
    return fault


def _undo(node: Node, fault: Fault) -> None:
    shard, row, k = node.shard, node.row, fault.kind
    u = shard.inputs
    if k is FaultKind.PUMP_FAIL:
        u.pump_failed[row, _pumps(node).index(fault.target)] = False
    elif k is FaultKind.PUMP_OVERCURRENT:
        u.pump_overcurrent[row, _pumps(node).index(fault.target)] = False
    elif k is FaultKind.VALVE_STUCK:
        u.valve_stuck[row, int(fault.target)] = False
    elif k in _SENSOR_FAULTS:
        bank, idx = fault.target.split(":")
        shard.set_sensor_fault(bank, row, int(idx), SensorFault.OK)
    elif k is FaultKind.VRM_OVERCURRENT:
        u.vrm_factor[row] = 1.0
    elif k is FaultKind.INLET_STEP:
        u.inlet_offset_c[row] = 0.0
    elif k is FaultKind.POWER_BRAKE:
        shard.dvfs.brake[row] = False
    elif k is FaultKind.HBM_FLIP:
        shard.ras[row].store.unstick(int(fault.target, 0))
    elif k is FaultKind.HBM_DEVICE:
        shard.ras[row].store.repair_device(int(fault.target), int(fault.value))
    elif k is FaultKind.CE_STORM:
        shard.set_ce_storm(row, int(fault.target), 0.0)
    elif k in _LINK:
        node.set_link_fault(_LINK[k], None)


def clear_faults(node: Node, spec: ClearSpec) -> list[Fault]:
    """Clear the matching injected faults; returns them (an empty list clears nothing)."""
    target = ""
    if spec.kind is not None and spec.target:
        target = canonical_target(node, Fault(spec.kind, spec.target))
    cleared = []
    for key, fault in list(node.faults.items()):
        if spec.kind is not None and fault.kind is not spec.kind:
            continue
        if target and fault.target != target:
            continue
        _undo(node, fault)
        del node.faults[key]
        cleared.append(fault)
    return cleared
