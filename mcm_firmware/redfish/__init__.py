"""A Redfish service (DMTF DSP0266) in front of an emulated fleet: every module a Chassis with its
Sensors, power and thermal subsystems and a power-limit Control, over the binary protocol like any
host. ``resources`` builds the JSON (pure), ``gateway`` keeps the fleet's state and sends commands,
``server`` is the HTTP side (aiohttp); docs/redfish.md."""
