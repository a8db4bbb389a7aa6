"""The telemetry fast path's MQTT packets are byte for byte what paho-mqtt (the library under
aiomqtt) encodes for the same call: CONNECT, PUBLISH at QoS 0 and 1, SUBSCRIBE, PINGREQ, DISCONNECT."""

from __future__ import annotations

import socket

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcm_firmware.transport import mqtt_wire as w


def _paho(client_id: str = "ref", clean: bool = True) -> tuple[paho.Client, socket.socket, socket.socket]:
    """A paho client that only queues what it would send (its socket set, its writer disarmed)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=paho.MQTTv311)
    a, b = socket.socketpair()
    a.setblocking(False)
    c._sock = a
    c.on_socket_register_write = lambda client, userdata, sock: None
    return c, a, b


def _queued(c: paho.Client) -> list[bytes]:
    return [bytes(p["packet"]) for p in c._out_packet]


def paho_publish(topic: str, payload: bytes) -> bytes:
    c, a, b = _paho()
    try:
        assert c.publish(topic, payload, qos=0, retain=False).rc == paho.MQTT_ERR_SUCCESS
        (packet,) = _queued(c)
        return packet
    finally:
        a.close()
        b.close()


topics = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="+#\0"), min_size=1, max_size=80)


@given(topics, st.binary(max_size=600))
def test_publish_equals_paho(topic, payload):
    assert w.publish(topic, payload) == paho_publish(topic, payload)


@pytest.mark.parametrize("size", [127, 128, 16_383, 16_384, 2_097_151, 2_097_152])
def test_publish_at_remaining_length_boundaries_equals_paho(size):
    topic = "mcm/v1/default/1/tlm"
    payload = bytes(size - 2 - len(topic))
    assert w.publish(topic, payload) == paho_publish(topic, payload)


@given(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40), st.integers(0, 65535), st.booleans()
)
def test_connect_equals_paho(client_id, keepalive, clean):
    c, a, b = _paho(client_id, clean)
    try:
        c._keepalive = keepalive
        c._send_connect(keepalive)
        (packet,) = _queued(c)
    finally:
        a.close()
        b.close()
    assert w.connect(client_id, keepalive=keepalive, clean_session=clean) == packet


def test_connect_with_credentials_equals_paho():
    c, a, b = _paho("node")
    try:
        c.username_pw_set("fleet-host", "s3cret")
        c._send_connect(10)
        (packet,) = _queued(c)
    finally:
        a.close()
        b.close()
    assert w.connect("node", keepalive=10, username="fleet-host", password=b"s3cret") == packet


def test_ping_and_disconnect_equal_paho():
    c, a, b = _paho()
    try:
        c._send_pingreq()
        c._send_disconnect()
        assert _queued(c) == [w.PINGREQ_PACKET, w.DISCONNECT_PACKET]
    finally:
        a.close()
        b.close()


def test_packets_are_split_off_a_stream_as_they_complete():
    buf = bytearray(b"\x20\x02\x00\x00" + b"\xd0\x00" + w.publish("t", bytes(200))[:50])
    assert w.split_packets(buf) == [(0x20, b"\x00\x00"), (0xD0, b"")]
    assert len(buf) == 50  # the incomplete PUBLISH waits for the rest
    assert w.parse_connack(b"\x20\x02\x00\x05") == 5
    with pytest.raises(w.WireError, match="expected CONNACK"):
        w.parse_connack(b"\xd0\x00")
    with pytest.raises(ValueError, match="remaining length"):
        w.remaining_length(w.MAX_REMAINING + 1)


@given(st.integers(1, 65535), topics, st.sampled_from([0, 1]))
def test_subscribe_equals_paho(mid, topic_filter, qos):
    c, a, b = _paho()
    try:
        c._last_mid = mid - 1
        c.subscribe(topic_filter, qos)
        (packet,) = _queued(c)
    finally:
        a.close()
        b.close()
    assert w.subscribe(mid, topic_filter, qos) == packet


@given(st.integers(1, 65535), topics, st.binary(max_size=600))
def test_qos1_publish_equals_paho(mid, topic, payload):
    c, a, b = _paho()
    try:
        c._last_mid = mid - 1
        assert c.publish(topic, payload, qos=1, retain=False).mid == mid
        (packet,) = _queued(c)
    finally:
        a.close()
        b.close()
    assert w.publish_qos1(topic, mid, payload) == packet


def test_qos1_publish_refuses_packet_id_zero():
    with pytest.raises(ValueError, match="packet id 0"):
        w.publish_qos1("t", 0, b"")


@given(topics, st.binary(max_size=300))
def test_a_publish_reads_back(topic, payload):
    buf = bytearray(w.publish(topic, payload))
    ((first, body),) = w.split_packets(buf)
    assert w.parse_publish(first, body) == (topic, payload)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40, unique=True), st.integers(0, 300), st.data())
def test_a_topic_set_assembles_the_same_packets_for_any_subset(nodes, size, data):
    import numpy as np

    topics = [f"mcm/v1/f/{n}/tlm" for n in nodes]
    ts = w.TopicSet(topics, size)
    rows = np.array(sorted(data.draw(st.sets(st.integers(0, len(nodes) - 1)))), np.intp)
    payloads = np.frombuffer(
        data.draw(st.binary(min_size=len(rows) * size, max_size=len(rows) * size)), np.uint8
    ).reshape(len(rows), size)
    packets = ts.encode(rows, payloads)
    # one packet per row, each what paho encodes (grouped by header length, order kept within a group)
    expected = {paho_publish(topics[r], payloads[i].tobytes()) for i, r in enumerate(rows)}
    buf = bytearray(packets)
    got = [bytes((first,)) + w.remaining_length(len(body)) + body for first, body in w.split_packets(buf)]
    assert not buf and len(got) == len(rows) and set(got) == expected
