"""A profile that batches samples (``samples_per_frame`` > 1) sends SAMPLES frames: each carries
the samples taken since the node's previous frame, so none is lost between frames."""

from __future__ import annotations

import asyncio
import itertools
import math

import numpy as np
import pytest

from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import Samples, Telemetry, frames
from mcm_firmware.runtime.shard import Shard
from mcm_firmware.transport import Channel

from ..helpers import on_fleet


def test_a_batched_fleet_sends_samples_frames_at_its_frame_rate():
    async def fn(rec, fleet):
        await asyncio.sleep(6.05)
        return rec, {n: node.tlm.copy() for n, node in fleet.nodes.items()}

    rec, tlm = on_fleet(fn, nodes=3, profile="colossus-mcm-batched")
    for node in range(3):
        frames = rec.of(node, Channel.TLM)
        assert frames and all(isinstance(m, Samples) for m in frames)
        assert not any(isinstance(m, Telemetry) for m in frames)
        assert 5 <= len(frames) <= 7  # 1 frame/s for ~6 s
        stamps = [m.timestamp_ns for m in frames]
        assert all(b - a == pytest.approx(1e9, abs=1e6) for a, b in itertools.pairwise(stamps))
        first = frames[0]  # its first frame: the samples from before the controller booted were not taken
        taken = [s for s in first.samples if not math.isnan(s.power_w)]
        assert len(taken) == pytest.approx(first.snapshot.uptime_ns / 100e6, abs=1)
        assert all(math.isnan(s.power_w) for s in first.samples[: 10 - len(taken)])
        for m in frames[1:]:
            assert len(m.samples) == 10 and m.period_us == 100_000
            assert all(len(s.dies) == 4 and s.power_w > 0 for s in m.samples)
            # the snapshot's power is the average since the previous frame; the samples cover the
            # same second, each averaged over its 100 ms: they agree within a sample's worth
            mean = sum(s.power_w for s in m.samples) / 10
            assert mean == pytest.approx(m.snapshot.power_w, rel=0.1)
        assert [m.seq for m in frames] == sorted({m.seq for m in frames})  # no frame twice
    for counts in tlm.values():
        assert counts[0] == counts[1] >= 6  # every frame due was sent


def test_vectorised_samples_records_are_the_bytes_construct_builds():
    sh = Shard(load_profile("colossus-mcm-batched"), 3, seed=4, start_t=0.0)
    for _ in range(30):
        sh.tick()
    _, rec = sh.telemetry_records(np.arange(3))
    for row in rec:
        parsed = frames.Samples.parse(row.tobytes())
        assert frames.Samples.build(parsed) == row.tobytes()
        assert parsed.n_samples == len(parsed.samples) == 10
