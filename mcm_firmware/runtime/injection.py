"""Applying and clearing faults (:mod:`mcm_firmware.faults`) on a running node.

Each fault kind has one :class:`Effect`: what injecting it does, and what clearing it undoes.
Hardware faults change the plant's inputs, the sensors or the HBM of the node's row in its shard;
link faults change the node's own link layer; crash and reboot end the controller's life (they
have nothing to undo). Every fault is checked against the node's profile first; nothing changes if
it does not apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..faults import (
    SPECS,
    ClearSpec,
    Fault,
    FaultError,
    FaultKind,
    address_of,
    index_in,
    link_direction,
    pump_index,
    sensor_of,
)
from ..plant.sensors import SensorFault
from ..transport.link_faults import LinkFaultParam

if TYPE_CHECKING:
    from .node import Node

Action = Callable[["Node", Fault], None]


@dataclass(frozen=True)
class Effect:
    apply: Action
    undo: Action | None = None
    """None: the fault ends the controller's life and is not kept as in force."""


EFFECTS: dict[FaultKind, Effect] = {}


def _pump(node: Node, fault: Fault) -> int:
    return [p.name for p in node.profile.cooling.pumps].index(fault.target)


def _pump_flag(table: str) -> Effect:
    def set_to(value: bool) -> Action:
        def act(node: Node, fault: Fault) -> None:
            getattr(node.shard.inputs, table)[node.row, _pump(node, fault)] = value

        return act

    return Effect(set_to(True), set_to(False))


EFFECTS[FaultKind.PUMP_FAIL] = _pump_flag("pump_failed")
EFFECTS[FaultKind.PUMP_OVERCURRENT] = _pump_flag("pump_overcurrent")


def _valve_stuck(node: Node, fault: Fault) -> None:
    v = int(fault.target)
    if not math.isnan(fault.value):
        node.shard.plant.valve_pos[node.row, v] = fault.value
    node.shard.inputs.valve_stuck[node.row, v] = True


def _valve_free(node: Node, fault: Fault) -> None:
    node.shard.inputs.valve_stuck[node.row, int(fault.target)] = False


EFFECTS[FaultKind.VALVE_STUCK] = Effect(_valve_stuck, _valve_free)


def _sensor(mode: SensorFault) -> Effect:
    def apply(node: Node, fault: Fault) -> None:
        bank, idx = fault.target.split(":")
        param = 0.0 if math.isnan(fault.value) else fault.value
        node.shard.set_sensor_fault(bank, node.row, int(idx), mode, param)

    def undo(node: Node, fault: Fault) -> None:
        bank, idx = fault.target.split(":")
        node.shard.set_sensor_fault(bank, node.row, int(idx), SensorFault.OK)

    return Effect(apply, undo)


EFFECTS[FaultKind.SENSOR_STUCK] = _sensor(SensorFault.STUCK)
EFFECTS[FaultKind.SENSOR_DRIFT] = _sensor(SensorFault.DRIFT)
EFFECTS[FaultKind.SENSOR_NOISE] = _sensor(SensorFault.NOISE)
EFFECTS[FaultKind.SENSOR_DROPOUT] = _sensor(SensorFault.DROPOUT)
EFFECTS[FaultKind.SENSOR_FAILED] = _sensor(SensorFault.FAILED)


def _module_input(table: str, normal: float) -> Effect:
    """A module-wide plant input set to the fault's value, and back to ``normal``."""

    def apply(node: Node, fault: Fault) -> None:
        getattr(node.shard.inputs, table)[node.row] = fault.value

    def undo(node: Node, fault: Fault) -> None:
        getattr(node.shard.inputs, table)[node.row] = normal

    return Effect(apply, undo)


EFFECTS[FaultKind.VRM_OVERCURRENT] = _module_input("vrm_factor", 1.0)
EFFECTS[FaultKind.INLET_STEP] = _module_input("inlet_offset_c", 0.0)


def _brake(value: bool) -> Action:
    def act(node: Node, fault: Fault) -> None:
        node.shard.dvfs.brake[node.row] = value

    return act


EFFECTS[FaultKind.POWER_BRAKE] = Effect(_brake(True), _brake(False))


def _hbm_flip(node: Node, fault: Fault) -> None:
    ctl = node.shard.ras[node.row]
    nbits = int(fault.value)
    width = ctl.store.bits_per_word_codeword
    if nbits > width:
        raise FaultError(f"hbm-flip: a codeword here has {width} bits, cannot flip {nbits}")
    bits = ctl.rng.sample(range(width), nbits)
    ctl.inject(int(fault.target, 0), bits, stuck=bool(fault.value2))


def _hbm_unstick(node: Node, fault: Fault) -> None:
    node.shard.hbm[node.row].unstick(int(fault.target, 0))


EFFECTS[FaultKind.HBM_FLIP] = Effect(_hbm_flip, _hbm_unstick)


def _hbm_device(node: Node, fault: Fault) -> None:
    ctl = node.shard.ras[node.row]
    dev = int(fault.value)
    if dev >= ctl.store.devices:
        raise FaultError(f"hbm-device: no device {dev} (devices 0..{ctl.store.devices - 1} per stack)")
    ctl.fail_device(int(fault.target), dev)


def _hbm_repair(node: Node, fault: Fault) -> None:
    node.shard.hbm[node.row].repair_device(int(fault.target), int(fault.value))


EFFECTS[FaultKind.HBM_DEVICE] = Effect(_hbm_device, _hbm_repair)


def _storm(node: Node, fault: Fault) -> None:
    node.shard.set_ce_storm(node.row, int(fault.target), fault.value)


def _calm(node: Node, fault: Fault) -> None:
    node.shard.set_ce_storm(node.row, int(fault.target), 0.0)


EFFECTS[FaultKind.CE_STORM] = Effect(_storm, _calm)


def _pcie_errors(node: Node, fault: Fault) -> None:
    node.shard.pcie.rate[node.row] = (fault.value, fault.value2)


def _pcie_clean(node: Node, fault: Fault) -> None:
    node.shard.pcie.rate[node.row] = 0.0


EFFECTS[FaultKind.PCIE_ERRORS] = Effect(_pcie_errors, _pcie_clean)


def _link(param: LinkFaultParam) -> Effect:
    """A link fault: set from just after the answer to the command that set it, so the answer
    still leaves on a clean link."""

    def apply(node: Node, fault: Fault) -> None:
        node.set_link_fault(param, fault.value, direction=fault.target, after_answer=True)

    def undo(node: Node, fault: Fault) -> None:
        node.set_link_fault(param, None, direction=fault.target)

    return Effect(apply, undo)


EFFECTS[FaultKind.LINK_DROP] = _link("drop")
EFFECTS[FaultKind.LINK_CORRUPT] = _link("corrupt")
EFFECTS[FaultKind.LINK_DUPLICATE] = _link("duplicate")
EFFECTS[FaultKind.LINK_DELAY] = _link("delay")
EFFECTS[FaultKind.LINK_REORDER] = _link("jitter")
EFFECTS[FaultKind.CRASH] = Effect(lambda node, fault: node.crash(reboot_after=fault.value))
EFFECTS[FaultKind.REBOOT] = Effect(lambda node, fault: node.reboot())

if set(EFFECTS) != set(FaultKind):
    raise TypeError(f"fault kinds without an effect: {sorted(k.label for k in set(FaultKind) - set(EFFECTS))}")
for _kind, _effect in EFFECTS.items():
    if (_effect.undo is not None) != SPECS[_kind].clearable:
        raise TypeError(f"{_kind.label}: clearable in faults.SPECS but not here, or the other way round")


def _pumps(node: Node) -> list[str]:
    return [pp.name for pp in node.profile.cooling.pumps]


def canonical_target(node: Node, fault: Fault) -> str:
    """The target as the node names it (pump ``0`` -> ``A``), checked against the profile."""
    spec = SPECS[fault.kind]
    p = node.profile
    if spec.target is None:
        return ""
    if spec.target == "pump":
        return _pumps(node)[pump_index(fault.target, _pumps(node))]
    if spec.target == "valve":
        return str(index_in(fault.target, p.cooling.valves, "valve"))
    if spec.target == "sensor":
        counts = {"die": p.die.count, "hbm": p.hbm.count, "flow": p.cooling.valves, "rpm": len(p.cooling.pumps)}
        bank, idx = sensor_of(fault.target, counts)
        return f"{bank}:{idx}"
    if spec.target == "stack":
        return str(index_in(fault.target, p.hbm.count, "HBM stack"))
    if spec.target == "direction":
        return link_direction(fault.target or spec.default_target or "")
    if spec.target == "address":
        addr = address_of(fault.target)
        if not node.shard.ras_cfg.geometry.valid(addr):
            raise FaultError(f"HBM address {addr:#x} is outside this module's memory")
        return f"{addr:#x}"
    raise AssertionError(spec.target)


def apply_fault(node: Node, fault: Fault) -> Fault:
    """Inject ``fault`` into the node; returns it with its target in canonical form."""
    fault = Fault(fault.kind, canonical_target(node, fault), fault.value, fault.value2)
    effect = EFFECTS[fault.kind]
    effect.apply(node, fault)
    if effect.undo is not None:
        node.faults[(int(fault.kind), fault.target)] = fault
    return fault


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
        undo = EFFECTS[fault.kind].undo
        if undo is not None:
            undo(node, fault)
        del node.faults[key]
        cleared.append(fault)
    return cleared
