"""The telemetry counter's compiled walk counts a broker's stream exactly as its Python path does."""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcm_firmware.host.tlm_count import TelemetryCount
from mcm_firmware.kernel import stream
from mcm_firmware.transport import mqtt_wire as wire
from mcm_firmware.transport.mqtt_fast import FastSubscriber

FLEET = "f1"


def frame(body: bytes, *, good: bool) -> bytes:
    crc = zlib.crc32(body) ^ (0 if good else 1)
    return body + crc.to_bytes(4, "little")


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["node", "node", "node", "other", "control", "qos1"]))
    if kind == "control":
        return draw(st.sampled_from([wire.PINGREQ_PACKET.replace(b"\xc0", b"\xd0"), b"\x90\x03\x00\x01\x00"]))
    node = draw(st.one_of(st.integers(0, 3000), st.integers(0, 99_999_999)))
    topic = {
        "node": f"mcm/v1/{FLEET}/{node}/tlm",
        "qos1": f"mcm/v1/{FLEET}/{node}/tlm",
        "other": draw(st.sampled_from([f"mcm/v1/{FLEET}/x{node}/tlm", f"mcm/v1/other/{node}/tlm", "a", ""])),
    }[kind]
    body = draw(st.one_of(st.binary(min_size=23, max_size=400), st.binary(max_size=26)))
    payload = frame(body, good=draw(st.booleans())) if len(body) >= 23 else body
    if kind == "qos1":
        return wire.publish_qos1(topic, draw(st.integers(1, 0xFFFF)), payload)
    return wire.publish(topic, payload)


def subscriber(count: TelemetryCount, *, compiled: bool) -> FastSubscriber:
    return FastSubscriber(
        host="127.0.0.1",
        port=1,
        client_id="t",
        topic_filter=f"mcm/v1/{FLEET}/+/tlm",
        on_publish=count.add,
        bulk=count.walk if compiled else None,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packets(), max_size=40), st.data())
def test_the_compiled_walk_counts_a_stream_as_the_python_path_does(pkts: list[bytes], data: st.DataObject) -> None:
    assert stream.compiled() is not None, "numba is a dependency: the compiled walk must load"
    raw = b"".join(pkts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    counted = {}
    for compiled in (True, False):
        count = TelemetryCount(FLEET)
        sub = subscriber(count, compiled=compiled)
        for chunk in chunks:
            sub.data_received(chunk)
        counted[compiled] = (sub.packets, count.per_node, count.damaged, count.received, bytes(sub._buffer))
    assert counted[True] == counted[False]
    publishes = sum(1 for p in pkts if p[0] & 0xF0 == wire.PUBLISH)
    assert counted[True][0] == publishes
    assert counted[True][3] == publishes


@settings(max_examples=60, deadline=None)
@given(st.lists(packets(), max_size=20))
def test_the_compiled_walk_equals_its_python_reference(pkts: list[bytes]) -> None:
    fn = stream.compiled()
    assert fn is not None
    buf = np.frombuffer(b"".join(pkts), np.uint8)
    prefix = np.frombuffer(f"mcm/v1/{FLEET}/".encode(), np.uint8)
    table = stream.crc_table()
    results = []
    for walk in (fn, stream.walk):
        counts, extra, start, out = np.zeros(4000, np.int64), np.zeros(3, np.int64), 0, []
        while start < len(buf):
            start, got, status = walk(buf, start, prefix, counts, extra, table)
            out.append((start, got, status))
            if status == stream.GROW:
                counts = np.zeros(int(extra[2]) + 1, np.int64)  # fresh: only the walk's order is compared
            elif status == stream.CONTROL:
                start += 2 + int(buf[start + 1])  # the test's control packets are short
            else:
                break
        results.append((out, counts.tolist(), extra.tolist()))
    assert results[0] == results[1]


@given(st.binary(max_size=300))
def test_the_sliced_crc_is_zlibs(data: bytes) -> None:
    buf = np.frombuffer(b"\x00\x01" + data, np.uint8)
    assert stream.crc32(buf, 2, len(buf), stream.crc_table()) == zlib.crc32(data)


def test_node_ids_beyond_the_array_grow_it_and_strange_topics_count_apart() -> None:
    count = TelemetryCount(FLEET)
    good = frame(b"h" * 40, good=True)
    raw = b"".join(
        [
            wire.publish(f"mcm/v1/{FLEET}/5/tlm", good),
            wire.publish(f"mcm/v1/{FLEET}/250000/tlm", good),  # past the first array
            wire.publish(f"mcm/v1/{FLEET}/123456789/tlm", good),  # more digits than a node id has
            wire.publish(f"mcm/v1/{FLEET}/7/tlm", frame(b"h" * 40, good=False)),
            wire.publish(f"mcm/v1/{FLEET}/8/tlm", b"short"),
        ]
    )
    sub = subscriber(count, compiled=True)
    sub.data_received(raw)
    assert sub.packets == 5
    assert count.per_node == {5: 1, 250000: 1, -1: 1, 7: 1, 8: 1}
    assert count.damaged == 2
    assert count.as_json(1.0)["walk"] == "compiled"
    assert count.as_json(1.0)["nodes"] == 4
