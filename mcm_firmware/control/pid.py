"""A PID controller in the style of OpenBMC phosphor-pid-control (``pid/ec/pid.cpp``), vectorised.

One call computes every loop of an array (one per module, zone or valve)::

    error    = input - setpoint            (reverse acting: more input, more output)
               or setpoint - input         (direct acting)
    P        = kp * error
    I        = clamp(I + ki * error * ts, integral_limit)
    FF       = ff_offset + ff_gain * setpoint
    out      = clamp(P + I + FF, output_limit)
    out      = clamp(out, last - slew_neg * ts, last + slew_pos * ts)   (when slew limits are set)

Integral limits keep windup bounded; when the output saturates, the integrator is not advanced in
the saturating direction (conditional integration). Pure numpy, no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PidConfig:
    kp: float
    ki: float
    integral_min: float
    integral_max: float
    out_min: float
    out_max: float
    ff_offset: float = 0.0
    ff_gain: float = 0.0
    slew_neg: float = 0.0  # max decrease per second (0: unlimited)
    slew_pos: float = 0.0  # max increase per second (0: unlimited)
    reverse: bool = True  # error = input - setpoint

    def __post_init__(self) -> None:
        if self.ki < 0 or self.kp < 0:
            raise ValueError("gains are non-negative; the direction is set by `reverse`")


class PidState:
    def __init__(self, shape: tuple[int, ...], initial_output: float, *, integral: float = 0.0) -> None:
        self.integral = np.full(shape, float(integral))
        self.last = np.full(shape, float(initial_output))

    def reset(self, mask: np.ndarray, output: float) -> None:
        self.integral[mask] = 0.0
        self.last[mask] = output


def pid_step(cfg: PidConfig, st: PidState, setpoint: np.ndarray | float, value: np.ndarray, ts: float) -> np.ndarray:
    """One controller period of ``ts`` seconds; returns the new outputs (and keeps them)."""
    error = (value - setpoint) if cfg.reverse else (setpoint - value)
    p = cfg.kp * error
    integral = np.minimum(np.maximum(st.integral + cfg.ki * ts * error, cfg.integral_min), cfg.integral_max)
    base = p if not (cfg.ff_offset or cfg.ff_gain) else p + (cfg.ff_offset + cfg.ff_gain * np.asarray(setpoint))
    raw = base + integral
    # conditional integration: do not wind further into a saturated output (ki >= 0 here)
    wind = ((raw > cfg.out_max) & (error > 0)) | ((raw < cfg.out_min) & (error < 0))
    st.integral = np.where(wind, st.integral, integral)
    out = np.minimum(np.maximum(base + st.integral, cfg.out_min), cfg.out_max)
    if cfg.slew_neg > 0:
        out = np.maximum(out, st.last - cfg.slew_neg * ts)
    if cfg.slew_pos > 0:
        out = np.minimum(out, st.last + cfg.slew_pos * ts)
    st.last = out
    return out
