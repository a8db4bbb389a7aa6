"""``mcm-emu wireshark``: the Lua dissector; ``mcm-emu record to-pcap``: a recording as a capture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from .common import EXIT_OK, BadInput


def add_parser(sub: Any) -> None:
    ws = sub.add_parser(
        "wireshark",
        help="write the Wireshark dissector (Lua) generated from the protocol declarations",
        description="Write the Lua plugin that dissects mcm frames on MQTT (topics mcm/v1/...) and on "
        "serial lines (DSP0253, MCTP, vendor-defined messages). Load it with "
        "'tshark -X lua_script:FILE' or copy it to ~/.local/lib/wireshark/plugins/. See docs/wireshark.md.",
    )
    ws.add_argument(
        "-o", "--output", metavar="FILE", default="mcm.lua", help="where to write it; '-' for stdout (default mcm.lua)"
    )
    ws.set_defaults(func=cmd_wireshark)

    rec = sub.add_parser("record", help="work with recordings (run --record)")
    rsub = rec.add_subparsers(dest="record_command", required=True, metavar="SUBCOMMAND")
    to = rsub.add_parser(
        "to-pcap",
        help="convert a recording to a pcap Wireshark opens",
        description="Write every frame of a recording as the MQTT PUBLISH a subscriber received from the "
        "broker (one TCP stream, 127.0.0.1:1883 to :40000), at its recorded time.",
    )
    to.add_argument("file", metavar="RECORDING", help="a recording of 'mcm-emu run --record' (.jsonl.gz)")
    to.add_argument("output", metavar="OUT.pcap", help="the capture to write")
    to.set_defaults(func=cmd_to_pcap)


def cmd_wireshark(args: argparse.Namespace) -> int:
    from ..protocol.wireshark import dissector
    from ..transport.topics import PREFIX

    text = dissector(__version__, PREFIX + "/")
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as e:
        raise BadInput(f"--output {args.output}: {e.strerror or e}") from None
    print(f"wrote {args.output}: load it with tshark -X lua_script:{args.output} (see docs/wireshark.md)", flush=True)
    return EXIT_OK


def cmd_to_pcap(args: argparse.Namespace) -> int:
    from ..host.record import RecordError, read_record
    from ..transport.pcap import mqtt_capture
    from ..transport.topics import topic

    try:  # the whole recording is checked before anything is written
        header, frames = read_record(args.file)
        recorded = list(frames)
    except RecordError as e:
        raise BadInput(str(e)) from None
    try:
        n = mqtt_capture(args.output, ((r.t_ns, topic(r.address), r.frame, r.retain) for r in recorded))
    except OSError as e:
        raise BadInput(f"{args.output}: {e.strerror or e}") from None
    print(f"wrote {len(recorded)} frames of fleet {header.get('fleet')!r} to {args.output} ({n} packets)", flush=True)
    return EXIT_OK
