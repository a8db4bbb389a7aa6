#!/usr/bin/env python3
"""Print the golden frames of docs/protocol.md (hex, 32 bytes a line) from mcm_firmware.testing.golden."""

from __future__ import annotations

import textwrap

from mcm_firmware.protocol import encode
from mcm_firmware.testing.golden import GOLDEN


def hex_block(data: bytes) -> str:
    return "\n".join(textwrap.wrap(data.hex(" "), 32 * 3 - 1))


def main() -> None:
    for name, msg in GOLDEN.items():
        frame = encode(msg)
        print(f"<!-- golden: {name} -->")
        print("```hex")
        print(hex_block(frame))
        print("```")
        print()


if __name__ == "__main__":
    main()
