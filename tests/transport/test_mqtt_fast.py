"""The telemetry fast path against a real Mosquitto: a slot of frames assembled in one pass and
written at once arrives as the same frames on their own topics; a publisher without a broker
refuses slots (counted) and reconnects when the broker comes back."""

from __future__ import annotations

import asyncio

import numpy as np

from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import MsgType, Samples, decode
from mcm_firmware.protocol.codec import frame_block
from mcm_firmware.runtime.shard import Shard
from mcm_firmware.transport.mqtt_fast import FastPublisher, FastSubscriber

NODES = 12


def _block(profile: str) -> tuple[MsgType, np.ndarray, np.ndarray]:
    sh = Shard(load_profile(profile), NODES, seed=2, start_t=0.0)
    for _ in range(25):
        sh.tick()
    rows = np.arange(NODES)
    mtype, rec = sh.telemetry_records(rows)
    return mtype, rows, frame_block(mtype, rows.astype(np.uint32), sh.seq[rows], 5_000_000_000, rec)


async def _until(cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_a_slot_of_samples_frames_arrives_byte_for_byte_on_each_nodes_topic(mosquitto):
    mtype, _, block = _block("colossus-mcm-batched")
    assert mtype is MsgType.SAMPLES
    got: list[tuple[bytes, bytes]] = []
    sub = FastSubscriber(
        host="127.0.0.1",
        port=mosquitto.port,
        client_id="t-sub",
        topic_filter="mcm/v1/f/+/tlm",
        on_publish=lambda t, p: got.append((t, bytes(p))),
    )
    await sub.start()
    pub = FastPublisher(host="127.0.0.1", port=mosquitto.port, client_id="t-pub")
    pub.start()
    try:
        await pub.wait_up(10)
        topics = pub.prepare([f"mcm/v1/f/{n}/tlm" for n in range(NODES)], block.shape[1])
        pick = np.array([0, 3, 4, 11])
        assert pub.send_prepared(topics, pick, block[pick])
        await _until(lambda: len(got) == len(pick))
    finally:
        await pub.close()
        sub.close()
    assert [t.decode() for t, _ in got] == [f"mcm/v1/f/{n}/tlm" for n in pick]
    assert [p for _, p in got] == [block[i].tobytes() for i in pick]
    msgs = [decode(p) for _, p in got]
    assert all(isinstance(m, Samples) and len(m.samples) == 10 and m.period_us == 100_000 for m in msgs)
    assert [m.node_id for m in msgs] == list(pick)
    assert pub.sent_packets == len(pick) and pub.refused_down == pub.refused_backlog == 0


async def test_without_a_broker_slots_are_refused_and_counted_then_sent_once_it_is_back(mosquitto):
    _, rows, block = _block("colossus-mcm")
    mosquitto.stop()
    pub = FastPublisher(host="127.0.0.1", port=mosquitto.port, client_id="t-pub")
    pub.start()
    try:
        topics = pub.prepare([f"mcm/v1/f/{n}/tlm" for n in range(NODES)], block.shape[1])
        assert not pub.send_prepared(topics, rows, block)
        assert pub.refused_down == 1 and not pub.up
        mosquitto.start()
        await pub.wait_up(30)  # the backoff retries until the broker answers
        got: list[bytes] = []
        sub = FastSubscriber(
            host="127.0.0.1",
            port=mosquitto.port,
            client_id="t-sub",
            topic_filter="mcm/v1/f/+/tlm",
            on_publish=lambda t, p: got.append(bytes(p)),
        )
        await sub.start()
        assert pub.send_prepared(topics, rows, block)
        await _until(lambda: len(got) == NODES)
        sub.close()
    finally:
        await pub.close()
    assert got == [block[i].tobytes() for i in rows]
    assert pub.connects == 1 and pub.refused_down == 1
