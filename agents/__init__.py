"""Devices: profiles (``profiles``), transports (``transport``, ``ssh``, ``adb``) and the one wrapper for a
remote command, the device a run works with (``device``: staging files, measuring, its lock, ``lock``), the
runtime registry (``runtimes``), the on-device runner (``runner``, standard library and its runtime only) and
benchmark programs with their output parsers (``bench_binary``, ``parsers``), probing a device (``probe``,
``device_state``) and finding devices (``discovery``). Imports nothing else of hwnas; modules are imported by
name (``from hwnas.agents.device import Device``) so that importing the package stays light."""
