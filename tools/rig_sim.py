#!/usr/bin/env python3
"""``mcm-emu rig-sim`` (mcm_firmware/cli/rigsim.py) for a checkout: the same arguments, e.g.

.venv/bin/python tools/rig_sim.py /dev/pts/7 --rig bench-tc-valve [--seconds S] [--seed N]
"""

from __future__ import annotations

import sys

from mcm_firmware.cli.rigsim import main

if __name__ == "__main__":
    sys.exit(main())
