"""Building blocks of the frame bodies: counted text and the telemetry snapshot.

All integers and floats are little-endian. Declared with ``construct``; :mod:`.frames` assembles
the bodies from these, :mod:`.ops` the arguments and answers of the commands.
"""

from __future__ import annotations

import construct as c
from construct import this

_READ_EXACT = """
def read_exact(io, n):
    data = io.read(n)
    if len(data) != n:
        raise StreamError("stream read less than specified amount, expected %d, found %d" % (n, len(data)))
    return data
"""


def _text8() -> c.Construct:
    """A UTF-8 string after a u8 byte count: ``PascalString(Int8ul, "utf8")``, except that its
    compiled parser checks the count against the bytes present (construct 2.10's compiled
    PascalString reads ``io.read(n)`` unchecked and so accepts a count that overruns the payload,
    where the uncompiled parser raises StreamError)."""
    macro = c.PascalString(c.Int8ul, "utf8")

    def _emitparse(code: c.CodeGen) -> str:
        code.append(_READ_EXACT)
        return f"read_exact(io, {c.Int8ul._compileparse(code)}).decode('utf8')"

    macro._emitparse = _emitparse
    return macro


Text8 = _text8()

DieTlm = c.Struct(
    "temp_c" / c.Float32l,
    "power_w" / c.Float32l,
    "clock_mhz" / c.Int16ul,
    "voltage_mv" / c.Int16ul,
    "reasons" / c.Int32ul,  # ClockReason bits (NVML clock-event reasons)
    "pstate" / c.Int8ul,
    "util_pct" / c.Int8ul,
)

HbmTlm = c.Struct(
    "temp_c" / c.Float32l,
    "ce" / c.Int32ul,
    "ue" / c.Int32ul,
)

PumpTlm = c.Struct(
    "rpm" / c.Int16ul,
    "flags" / c.Int8ul,  # PumpFlags
)

ValveTlm = c.Struct(
    "position_pct" / c.Float32l,
    "flags" / c.Int8ul,  # ValveFlags
)

DieSample = c.Struct(
    "temp_c" / c.Float32l,
    "power_w" / c.Float32l,
)

Sample = c.Struct(
    "power_w" / c.Float32l,  # module power at the sample
    "n_dies" / c.Int8ul,
    "dies" / c.Array(this.n_dies, DieSample),
)

SAMPLES_LAYOUT = 1
"""Version of the SAMPLES body's layout; a decoder that meets another refuses the frame."""

# The telemetry body. Counts come first so that a reader knows the whole layout after 4 bytes
# of it; an array field ``x`` is always sized by a count field named ``n_x``.
Snapshot = c.Struct(
    "uptime_ns" / c.Int64ul,
    "state" / c.Int8ul,  # NodeState
    "mode" / c.Int8ul,  # CoolingMode
    "flags" / c.Int16ul,  # SnapshotFlags
    "power_w" / c.Float32l,
    "power_cap_w" / c.Float32l,
    "inlet_c" / c.Float32l,
    "outlet_c" / c.Float32l,
    "flow_lpm" / c.Float32l,
    "vrm_current_a" / c.Float32l,
    "rx_rejected" / c.Int32ul,
    "recovery_action" / c.Int8ul,  # RecoveryAction
    "energy_mj" / c.Int64ul,  # energy drawn since the controller booted (NVML total energy consumption)
    "viol_power_ms" / c.Int32ul,  # time the power cap held the clocks, since boot (NVML violation time)
    "viol_thermal_ms" / c.Int32ul,  # ... a die's thermal slowdown (software or hardware)
    "viol_hbm_thermal_ms" / c.Int32ul,  # ... the memory's temperature (HBM above hbm_max_c)
    "viol_hw_slowdown_ms" / c.Int32ul,  # ... a hardware slowdown (VRM over-current, power brake, over-temperature)
    "power_limit_source" / c.Int8ul,  # PowerLimitSource of power_cap_w, the lowest limit set
    "remapped_correctable" / c.Int32ul,  # rows remapped for CEs, pending included (nvmlDeviceGetRemappedRows)
    "remapped_uncorrectable" / c.Int32ul,  # ... for UEs
    "ecc_ce_aggregate" / c.Int64ul,  # corrected errors over the module's life (NVML's aggregate ECC count)
    "ecc_ue_aggregate" / c.Int64ul,  # uncorrected errors over the module's life
    "pcie_replays" / c.Int32ul,  # PCIe replays since boot (nvmlDeviceGetPcieReplayCounter)
    "pcie_aer_correctable" / c.Int32ul,  # AER correctable errors since boot
    "pcie_aer_uncorrectable" / c.Int32ul,  # AER uncorrectable (non-fatal) errors since boot
    "n_dies" / c.Int8ul,
    "n_hbm" / c.Int8ul,
    "n_pumps" / c.Int8ul,
    "n_valves" / c.Int8ul,
    "dies" / c.Array(this.n_dies, DieTlm),
    "hbm" / c.Array(this.n_hbm, HbmTlm),
    "pumps" / c.Array(this.n_pumps, PumpTlm),
    "valves" / c.Array(this.n_valves, ValveTlm),
)
