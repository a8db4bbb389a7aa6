"""The physical model of a shard of modules: power, temperature and coolant flow.

Plain numpy over arrays with one row per module (``N``) and one column per die (``D``), HBM stack
(``H``), valve (``V``) or pump (``P``); it behaves the same for one module and for thousands.
``step`` advances the state in place by ``dt`` seconds. No asyncio, no I/O; randomness comes only
from the generator the caller passes.

Power of a die (W)::

    P = C_eff * V^2 * f * activity  +  P_leak_ref * (V / V_0) * 2^((T - T_ref) / T_double)  +  P_uncore

``P_uncore`` is drawn whenever the die is powered, whatever its clock: fabric, I/O and memory PHYs,
caches, board losses. With the leakage at a low voltage it is most of the idle power.

Thermal network per die region (one cold-plate region per die, HBM stacks beside it)::

    die --R_dp-- plate --G_pc(flow)-- coolant inlet
                   |
    hbm --R_hp-----+

``G_pc`` is the forced-convection film conductance (growing with flow^0.8) in series with the
coolant's own heat-capacity rate, plus a small natural-convection path that remains when no pump
runs. While coolant flows it carries all the plates' heat, so at steady state the outlet is
``T_in + P / (q * c_p)``. Each node is integrated by exponential relaxation towards its equilibrium with its
neighbours' present temperatures, which is stable for any ``dt``.

Coolant: pumps spin up and down with a first-order lag; the loop's flow capacity is shared among
the valves by their equal-percentage characteristic ``Cv = Cv_max * R^(x - 1)``; valve stems move
towards their command at a limited slew rate (or stay put when stuck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..profile import Profile

F = np.float64
PUMP_TAU_S = 0.5  # pump spin-up/down time constant
FLOW_EXPONENT = 0.8  # film conductance ~ flow^0.8 (turbulent forced convection)
VALVE_SHUT_PCT = 0.5  # below this stem position a valve passes no flow


@dataclass
class PlantParams:
    """Per-shard constants, shaped to broadcast against the state arrays."""

    n: int
    dies: int
    hbm: int
    valves: int
    pumps: int
    c_eff: np.ndarray  # [N,D] F, effective switched capacitance (with manufacturing spread)
    leak_w: np.ndarray  # [N,D] W at the reference temperature and V_0
    uncore_w: float  # W per powered die, independent of clock and activity
    v0: float  # V of P0
    leak_ref_c: float
    leak_doubling_c: float
    c_die: float
    r_die_plate: float
    hbm_power_w: float
    c_hbm: float
    r_hbm_plate: float
    hbm_region: np.ndarray  # [H] plate region (die) each stack sits beside
    hbm_to_region: np.ndarray  # [H,D] one-hot of hbm_region
    hbm_per_region: np.ndarray  # [D] stacks beside each die
    c_plate: float
    g_plate_nom: float  # W/K plate->coolant film at nominal branch flow
    g_natural: float  # W/K left with no flow
    valve_of_die: np.ndarray  # [D]
    dies_per_valve: np.ndarray  # [V]
    one_die_per_valve: bool
    pump_flow_lpm: np.ndarray  # [P]
    pump_rpm_nom: np.ndarray  # [P]
    q_branch_nom: float  # L/min through one fully open valve with the lead pump at speed
    rangeability: float
    valve_slew: float  # %/s
    cp_coolant: float  # J/(L K)

    @classmethod
    def from_profile(cls, profile: Profile, n: int, rng: np.random.Generator) -> PlantParams:
        die, hbm, cool = profile.die, profile.hbm, profile.cooling
        p0 = die.pstates[0]
        v0 = p0.mv / 1000.0
        dyn_w = max(die.tdp_w - die.leakage_w - die.uncore_w, 1.0)
        c_eff = dyn_w / (v0 * v0 * p0.mhz * 1e6)
        # Process spread: +-3 % dynamic, +-15 % leakage, fixed per die by the seed.
        spread_dyn = 1.0 + 0.03 * rng.uniform(-1, 1, (n, die.count))
        spread_leak = 1.0 + 0.15 * rng.uniform(-1, 1, (n, die.count))
        valve_of_die = np.arange(die.count) % cool.valves
        dies_per_valve = np.bincount(valve_of_die, minlength=cool.valves).astype(F)
        dies_per_valve[dies_per_valve == 0] = 1.0
        hbm_region = (np.arange(hbm.count) * die.count) // max(hbm.count, 1)
        g_nom = 1.0 / cool.r_plate_coolant_c_per_w
        return cls(
            n=n,
            dies=die.count,
            hbm=hbm.count,
            valves=cool.valves,
            pumps=len(cool.pumps),
            c_eff=c_eff * spread_dyn,
            leak_w=die.leakage_w * spread_leak,
            uncore_w=die.uncore_w,
            v0=v0,
            leak_ref_c=die.leakage_ref_c,
            leak_doubling_c=die.leakage_doubling_c,
            c_die=die.heat_capacity_j_per_k,
            r_die_plate=die.r_die_plate_c_per_w,
            hbm_power_w=hbm.power_w,
            c_hbm=hbm.heat_capacity_j_per_k,
            r_hbm_plate=hbm.r_stack_plate_c_per_w,
            hbm_region=hbm_region,
            hbm_to_region=np.eye(die.count)[hbm_region] if hbm.count else np.zeros((0, die.count)),
            hbm_per_region=np.bincount(hbm_region, minlength=die.count).astype(F),
            c_plate=cool.plate_heat_capacity_j_per_k,
            g_plate_nom=g_nom,
            g_natural=cool.natural_convection_fraction * g_nom,
            valve_of_die=valve_of_die,
            dies_per_valve=dies_per_valve,
            one_die_per_valve=die.count == cool.valves,
            pump_flow_lpm=np.array([p.flow_lpm for p in cool.pumps], F),
            pump_rpm_nom=np.array([p.nominal_rpm for p in cool.pumps], F),
            q_branch_nom=cool.pumps[0].flow_lpm / cool.valves,
            rangeability=cool.valve_rangeability,
            valve_slew=cool.valve_slew_pct_per_s,
            cp_coolant=cool.coolant_heat_capacity_j_per_l_k,
        )


@dataclass
class PlantInputs:
    """What acts on the plant: the controller's actuators, the workload and the faults."""

    mhz: np.ndarray  # [N,D]
    mv: np.ndarray  # [N,D]
    powered: np.ndarray  # [N] bool: dice supplied (False after a shutdown)
    activity: np.ndarray  # [N,D] switching activity 0..1
    hbm_util: np.ndarray  # [N,H] bandwidth utilisation 0..1
    valve_cmd: np.ndarray  # [N,V] %
    pump_on: np.ndarray  # [N,P] bool: commanded to run
    # faults
    pump_failed: np.ndarray  # [N,P] bool: the pump cannot run (seized, no supply)
    pump_overcurrent: np.ndarray  # [N,P] bool: the pump draws far too much current
    valve_stuck: np.ndarray  # [N,V] bool: the stem does not move
    inlet_offset_c: np.ndarray  # [N] added to the profile's inlet temperature
    vrm_factor: np.ndarray  # [N] the VRM current is this many times what the dice draw (a fault)

    @classmethod
    def idle(cls, params: PlantParams, profile: Profile) -> PlantInputs:
        n, d, h, v, p = params.n, params.dies, params.hbm, params.valves, params.pumps
        low = profile.die.pstates[-1]
        pump_on = np.zeros((n, p), bool)
        pump_on[:, 0] = True
        return cls(
            mhz=np.full((n, d), float(low.mhz)),
            mv=np.full((n, d), float(low.mv)),
            powered=np.ones(n, bool),
            activity=np.zeros((n, d)),
            hbm_util=np.zeros((n, h)),
            valve_cmd=np.full((n, v), 100.0),
            pump_on=pump_on,
            pump_failed=np.zeros((n, p), bool),
            pump_overcurrent=np.zeros((n, p), bool),
            valve_stuck=np.zeros((n, v), bool),
            inlet_offset_c=np.zeros(n),
            vrm_factor=np.ones(n),
        )


@dataclass
class PlantState:
    t_die: np.ndarray  # [N,D] °C
    t_plate: np.ndarray  # [N,D] °C
    t_hbm: np.ndarray  # [N,H] °C
    t_inlet: np.ndarray  # [N] °C
    valve_pos: np.ndarray  # [N,V] % stem position
    pump_rpm: np.ndarray  # [N,P]
    # results of the last step
    p_die: np.ndarray  # [N,D] W
    p_hbm: np.ndarray  # [N,H] W
    p_total: np.ndarray  # [N] W
    vrm_current: np.ndarray  # [N] A
    flow_valve: np.ndarray  # [N,V] L/min
    flow_total: np.ndarray  # [N] L/min
    t_outlet: np.ndarray  # [N] °C

    @classmethod
    def initial(cls, params: PlantParams, profile: Profile) -> PlantState:
        n = params.n
        t0 = profile.cooling.inlet_c
        s = cls(
            t_die=np.full((n, params.dies), t0),
            t_plate=np.full((n, params.dies), t0),
            t_hbm=np.full((n, params.hbm), t0),
            t_inlet=np.full(n, t0),
            valve_pos=np.full((n, params.valves), 100.0),
            pump_rpm=np.zeros((n, params.pumps)),
            p_die=np.zeros((n, params.dies)),
            p_hbm=np.zeros((n, params.hbm)),
            p_total=np.zeros(n),
            vrm_current=np.zeros(n),
            flow_valve=np.zeros((n, params.valves)),
            flow_total=np.zeros(n),
            t_outlet=np.full(n, t0),
        )
        s.pump_rpm[:, 0] = params.pump_rpm_nom[0]
        return s


def die_power(
    params: PlantParams, mhz: np.ndarray, mv: np.ndarray, activity: np.ndarray, t_die: np.ndarray
) -> np.ndarray:
    """Dynamic plus temperature-dependent leakage power of each die, W."""
    v = mv * 1e-3
    dyn = params.c_eff * v * v * (mhz * 1e6) * activity
    leak = params.leak_w * (v / params.v0) * np.exp2((t_die - params.leak_ref_c) / params.leak_doubling_c)
    return dyn + leak


def valve_flow_fraction(pos_pct: np.ndarray, rangeability: float) -> np.ndarray:
    """Equal-percentage characteristic: Cv/Cv_max = R^(x-1), x the stem position 0..1; shut below 0.5 %."""
    frac = np.power(rangeability, pos_pct / 100.0 - 1.0)
    return np.where(pos_pct > VALVE_SHUT_PCT, frac, 0.0)


def loop_capacity(params: PlantParams, pump_rpm: np.ndarray) -> np.ndarray:
    """Flow (L/min) the running pumps push through fully open valves: the strongest pump plus a
    quarter of the others (parallel pumps on one loop add little flow)."""
    q = params.pump_flow_lpm * np.minimum(np.maximum(pump_rpm / params.pump_rpm_nom, 0.0), 1.2)
    best = q.max(axis=1)
    return best + 0.25 * (q.sum(axis=1) - best)


def step(params: PlantParams, state: PlantState, inputs: PlantInputs, dt: float, inlet_c: float) -> None:
    """Advance the plant by ``dt`` seconds, in place."""
    s, u = state, inputs
    # --- pumps and valves
    target_rpm = np.where(u.pump_on & ~u.pump_failed, params.pump_rpm_nom, 0.0)
    s.pump_rpm += (target_rpm - s.pump_rpm) * -math.expm1(-dt / PUMP_TAU_S)
    move = np.minimum(np.maximum(u.valve_cmd, 0.0), 100.0) - s.valve_pos
    limit = params.valve_slew * dt
    s.valve_pos += np.where(u.valve_stuck, 0.0, np.minimum(np.maximum(move, -limit), limit))
    q_valve = (loop_capacity(params, s.pump_rpm)[:, None] / params.valves) * valve_flow_fraction(
        s.valve_pos, params.rangeability
    )
    s.flow_valve = q_valve
    s.flow_total = q_valve.sum(axis=1)
    s.t_inlet = inlet_c + u.inlet_offset_c

    # --- power
    on = u.powered[:, None]
    p_die = np.where(on, die_power(params, u.mhz, u.mv, u.activity, s.t_die) + params.uncore_w, 0.0)
    p_hbm = np.where(on, params.hbm_power_w * (0.25 + 0.75 * u.hbm_util), 0.0)
    s.p_die, s.p_hbm = p_die, p_hbm
    s.p_total = p_die.sum(axis=1) + p_hbm.sum(axis=1)
    s.vrm_current = (p_die / np.maximum(u.mv * 1e-3, 0.1)).sum(axis=1) * u.vrm_factor

    # --- heat transfer coefficients per die region
    q_die = (
        q_valve
        if params.one_die_per_valve
        else (np.take(q_valve, params.valve_of_die, axis=1) / params.dies_per_valve[params.valve_of_die])
    )
    film = params.g_plate_nom * np.power(np.maximum(q_die, 0.0) / params.q_branch_nom, FLOW_EXPONENT)
    cap = 2.0 * q_die * params.cp_coolant / 60.0  # W/K of the coolant stream (mean temperature)
    forced = np.where(q_die > 1e-6, film * cap / np.maximum(film + cap, 1e-12), 0.0)
    g_pc = forced + params.g_natural

    # --- exponential relaxation, die -> hbm -> plate
    t_in = s.t_inlet[:, None]
    tau_die = params.c_die * params.r_die_plate
    eq = s.t_plate + p_die * params.r_die_plate
    s.t_die = eq + (s.t_die - eq) * math.exp(-dt / tau_die)

    # np.take, not [:, index]: that gives F-ordered arrays, whose rows numpy sums in another order
    # (the compiled step, mcm_firmware/kernel, sums rows as numpy does C-ordered ones)
    plate_of_hbm = np.take(s.t_plate, params.hbm_region, axis=1)
    tau_hbm = params.c_hbm * params.r_hbm_plate
    eq = plate_of_hbm + p_hbm * params.r_hbm_plate
    s.t_hbm = eq + (s.t_hbm - eq) * math.exp(-dt / tau_hbm)

    g_dp = 1.0 / params.r_die_plate
    g_hp = 1.0 / params.r_hbm_plate
    hbm_sum = s.t_hbm @ params.hbm_to_region
    g_total = g_dp + params.hbm_per_region * g_hp + g_pc
    eq = (s.t_die * g_dp + hbm_sum * g_hp + g_pc * t_in) / g_total
    s.t_plate = eq + (s.t_plate - eq) * np.exp(-dt * g_total / params.c_plate)

    # While coolant flows, all the heat the plates give off ends in it, the natural-convection
    # path's share too (it warms the coolant in the plate, which the flow carries out); with no
    # flow the coolant stands and the outlet reads the inlet.
    heat_to_coolant = (g_pc * (s.t_plate - t_in)).sum(axis=1)
    rate = s.flow_total * params.cp_coolant / 60.0
    s.t_outlet = s.t_inlet + np.where(rate > 1e-6, heat_to_coolant / np.maximum(rate, 1e-6), 0.0)
