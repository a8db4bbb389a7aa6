"""Capture files Wireshark opens (pcap, written with scapy).

* :class:`SerialCapture`: the bytes of a serial line, one DSP0253 frame (flags included) per
  record, link type ``USER0`` (147); ``mcm-emu run --serial ... --capture FILE.pcap`` writes one.
* :func:`mqtt_capture`: frames with their MQTT topics as the PUBLISH packets a subscriber would
  have received from the broker, in one TCP stream (127.0.0.1:1883 to 127.0.0.1:40000, Ethernet
  link type); ``mcm-emu record to-pcap`` converts a recording with it.

``mcm-emu wireshark`` writes the dissector for both (docs/wireshark.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

USER0 = 147
"""pcap link type of serial captures (``LINKTYPE_USER0``)."""
ETHERNET = 1
BROKER_PORT = 1883
SUBSCRIBER_PORT = 40000
MAX_SEGMENT = 65_000
"""TCP payload per packet; a longer MQTT packet is split over several segments (Wireshark
reassembles them)."""


def _writer(path: str | Path, linktype: int) -> Any:
    from scapy.utils import RawPcapWriter

    w = RawPcapWriter(str(path), linktype=linktype, nano=True, sync=False)
    w.write_header(None)  # a capture with no packets is still a pcap file
    return w


def _write(w: Any, data: bytes, t_ns: int) -> None:
    w.write_packet(data, sec=t_ns // 1_000_000_000, usec=t_ns % 1_000_000_000)


class SerialCapture:
    """A pcap of one serial line: :meth:`frame` per DSP0253 frame, or per run of bytes the
    decoder dropped (Wireshark shows those as malformed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._w = _writer(self.path, USER0)
        self.records = 0

    def frame(self, data: bytes, t_ns: int | None = None) -> None:
        _write(self._w, data, time.time_ns() if t_ns is None else t_ns)
        self.records += 1

    def close(self) -> None:
        self._w.close()


def mqtt_capture(path: str | Path, frames: Iterable[tuple[int, str, bytes, bool]]) -> int:
    """Write ``(t_ns, topic, frame, retain)`` as MQTT PUBLISH packets (QoS 0) of one TCP stream
    from the broker to a subscriber; the number of packets written."""
    from scapy.contrib.mqtt import MQTT, MQTTPublish
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    w = _writer(path, ETHERNET)
    seq = 1
    n = 0
    try:
        for t_ns, topic, frame, retain in frames:
            mqtt = bytes(MQTT(QOS=0, RETAIN=int(retain)) / MQTTPublish(topic=topic.encode(), value=frame))
            for off in range(0, len(mqtt), MAX_SEGMENT):
                chunk = mqtt[off : off + MAX_SEGMENT]
                pkt = (
                    Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                    / IP(src="127.0.0.1", dst="127.0.0.1")
                    / TCP(sport=BROKER_PORT, dport=SUBSCRIBER_PORT, flags="PA", seq=seq, ack=1, window=65535)
                    / chunk
                )
                _write(w, bytes(pkt), t_ns)
                seq += len(chunk)
                n += 1
    finally:
        w.close()
    return n
