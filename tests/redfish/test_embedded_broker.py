"""``mcm-emu redfish`` in front of the broker ``mcm-emu run`` embeds (amqtt): amqtt replays, on each
connect, the retained messages that match *other* clients' filters, so the service's telemetry
connection is sent every node's retained BIRTH when something else (a monitor) subscribes to the
fleet's state. Such a frame is not of the topic subscribed and is not taken: taken as live, its
sequence number (the node's first) made every later telemetry frame look like it followed a gap of
all the frames the node had sent since it was born."""

from __future__ import annotations

import re
import signal

import pytest

from ..conftest import free_port


@pytest.mark.slow
def test_redfish_on_the_embedded_broker_counts_no_frame_missed(cli_process):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    run = cli_process("run", "--nodes", "2", "--embedded-port", str(port))
    run.wait_line("up: 2 nodes")
    monitor = cli_process("monitor", "--broker", url)  # a client subscribed to the fleet's state
    monitor.wait_line("TELEMETRY seq=40 ")  # the nodes are far past the sequence number of their BIRTH
    gw = cli_process("redfish", "--broker", url, "--port", "0", "--duration", "2")
    assert gw.wait() == 0
    summary = gw.wait_line(" missed (gaps in sequence numbers)")
    counts = re.search(
        r"(\d+) frames of 2 nodes taken in \((\d+) telemetry frames received.* (\d+) missed .*, (\d+) unsolicited",
        summary,
    )
    assert counts, summary
    frames, telemetry, missed, unsolicited = map(int, counts.groups())
    assert telemetry >= 2 and frames >= telemetry, summary
    monitor.signal(signal.SIGTERM)
    monitor.wait()
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    # what the nodes could not send (a loaded machine may drop a frame honestly) bounds the gaps
    sent = re.search(r"run: .* telemetry (\d+)/(\d+) sent", "\n".join(run.lines))
    assert sent, run.lines[-3:]
    assert missed <= int(sent.group(2)) - int(sent.group(1)), summary
    assert unsolicited >= 2, f"amqtt replayed no retained BIRTH: the case is not exercised ({summary})"
