"""ctl ras as text and JSON: the row remapper as NVML reports it (counts by cause, flags, the bank
histogram) and the last XID, from the golden RAS answer; flags as yes/no, as every ctl text shows a boolean."""

from __future__ import annotations

from mcm_firmware.host.views import ras_json, ras_text
from mcm_firmware.protocol import RasResult
from mcm_firmware.testing.golden import GOLDEN


def test_ctl_ras_shows_remap_counts_flags_histogram_and_the_last_xid():
    data = GOLDEN["response-ras"].data
    assert isinstance(data, RasResult)
    obj = ras_json(3, data)
    assert (obj["remapped_correctable"], obj["remapped_uncorrectable"], obj["last_xid"]) == (0, 1, 94)
    assert obj["bank_availability"] == {"max": 2047, "high": 1, "partial": 0, "low": 0, "none": 0}
    assert obj["remap_pending"] is True and obj["remap_failed"] is False and obj["recovery_action"] == "NONE"
    lines = ras_text(obj).splitlines()
    assert lines[1] == "  remapped rows: correctable=0 uncorrectable=1 pending=yes failure=no last_xid=94"
    assert lines[2] == "  banks by spare rows available: max=2047 high=1 partial=0 low=0 none=0"
