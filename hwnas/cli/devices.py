"""`hwnas devices` (configured profiles and attached ADB devices) and `hwnas probe DEVICE`.

Every string a device or a profile supplies goes through :func:`~hwnas.cli._app.shown` (control characters
stripped, Rich markup escaped) before it reaches the terminal.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hwnas.cli._app import JsonOption, app, emit, shown


@app.command("devices")
def devices(
    timeout: float = typer.Option(
        10.0, "--timeout", min=0.1, help="Seconds each reachability check may take."
    ),
    as_json: bool = JsonOption,
) -> int:
    """List configured device profiles and attached ADB devices, reachable or not.

    Example: hwnas devices
    """
    from hwnas.agents.probe import list_devices

    result = list_devices(timeout=timeout)
    emit(result, as_json, _show_devices)
    return 0


def _show_devices(result: dict[str, Any]) -> None:
    out = Console()
    table = Table(title="devices", title_justify="left")
    for column in ("name", "transport", "address", "reachable"):
        table.add_column(column, overflow="fold")
    table.add_column("note", overflow="fold", min_width=30)
    for dev in result["devices"]:
        reachable = "[green]yes[/green]" if dev["reachable"] else "[red]no[/red]"
        # The table keeps the first clause of an error; --json has all of it.
        note = (dev.get("error") or "").removeprefix(f"{dev['name']}: ").split("; hint:")[0]
        if dev.get("profile") is None:
            note = f"adb: {dev.get('state')} {dev.get('model') or ''}; no profile names it".strip()
        elif dev.get("adb_state"):
            note = f"adb: {dev['adb_state']}" + (f"; {note}" if note else "")
        table.add_row(shown(dev["name"]), shown(dev["transport"]), shown(dev["address"]), reachable, shown(note))
    out.print(table)
    server = result["adb_server"]
    if server["running"]:
        out.print(f"adb server at {shown(server['address'])}: running", highlight=False)
    elif server.get("adb"):
        out.print(
            f"adb server at {shown(server['address'])}: not running (start it with `adb start-server` to list USB phones)",
            highlight=False,
        )
    if not [d for d in result["devices"] if d["name"] != "local" and d["reachable"]]:
        out.print(_NEXT_STEPS, highlight=False)


#: What `hwnas devices` says while no device but this machine answers (a fresh machine).
_NEXT_STEPS = (
    "No device but this machine (`local`) answers yet. Next:\n"
    "  - try the whole pipeline here first: `hwnas demo`;\n"
    "  - a board over SSH: copy the repository's example `device_profiles/rpi4.yaml` to "
    "`device_profiles/NAME.yaml`, set its `transport: ssh:` host, user and key, then `hwnas probe NAME`;\n"
    "  - a phone: enable USB debugging, plug it in and accept the prompt (`adb devices` lists it), copy "
    "`device_profiles/pixel-usb.yaml` to `device_profiles/NAME.yaml` with its serial, then `hwnas probe NAME`."
)


@app.command("probe")
def probe(
    device: str = typer.Argument(..., help="A profile name or the path of a profile YAML."),
    noise: bool = typer.Option(True, "--noise/--no-noise", help="Also measure the device's noise floor (a few seconds)."),
    as_json: bool = JsonOption,
) -> int:
    """Fingerprint a device: model, SoC, ABI, CPU clusters, governors, temperatures, runtimes, noise floor.

    Example: hwnas probe local
    """
    from hwnas.agents.probe import probe_profile
    from hwnas.agents.profiles import load_profile

    profile = load_profile(device)
    result = probe_profile(profile)
    if noise:
        from hwnas.profiler.noise import probe_noise_floor

        floor = probe_noise_floor(profile)
        result["noise_floor"] = floor["noise_floor"]
        if floor.get("noise_error"):
            result["noise_error"] = floor["noise_error"]
    emit(result, as_json, _show_probe)
    return 0


def _cpus(cpus: list[int]) -> str:
    return (
        f"{cpus[0]}-{cpus[-1]}"
        if len(cpus) > 1 and cpus == list(range(cpus[0], cpus[-1] + 1))
        else ",".join(str(c) for c in cpus)
    )


def _show_probe(result: dict[str, Any]) -> None:
    table = Table(
        title=shown(f"probe {result['device']} ({result['address']})"),
        title_justify="left",
        show_header=False,
    )
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in ("model", "manufacturer", "soc", "abi", "os", "cores"):
        table.add_row(key, "-" if result.get(key) is None else shown(result[key]))
    if result.get("core_types"):
        table.add_row("core types", shown(", ".join(map(str, result["core_types"]))))
    clusters = [
        f"cpu {_cpus(c['cpus'])}: max {c['max_mhz']:g} MHz, {'/'.join(c['governors']) or '?'} (mask {c['mask']})"
        if c.get("max_mhz") is not None
        else f"cpu {_cpus(c['cpus'])}: max unknown"
        for c in result.get("clusters") or []
    ]
    table.add_row("clusters", "\n".join(shown(c) for c in clusters) or "-")
    temps = result.get("temperatures_c") or {}
    table.add_row("temperatures", shown(", ".join(f"{k} {v:.1f} °C" for k, v in temps.items())) or "-")
    runtimes = [
        f"{name} {info.get('version') or ''} ({info.get('module') or info.get('path')})".replace("  ", " ")
        for name, info in (result.get("runtimes") or {}).items()
    ]
    table.add_row("runtimes", "\n".join(shown(r) for r in runtimes) or "-")
    if "noise_floor" in result:
        floor = result["noise_floor"]
        table.add_row("noise floor", f"{floor:.1%}" if floor is not None else shown(result.get("noise_error") or "-"))
    if result.get("battery"):
        b = result["battery"]
        table.add_row(
            "battery", shown(f"{b.get('level')}/{b.get('scale')}, {b.get('status')}, {b.get('temperature_c')} °C")
        )
    if result.get("throttled"):
        t = result["throttled"]
        table.add_row("throttled", shown(f"{t['raw']} {', '.join(map(str, t['flags'])) or 'none'}"))
    if result.get("power_mode"):
        table.add_row("power mode", shown(f"{result['power_mode']['name']} ({result['power_mode']['mode_id']})"))
    table.add_row("missing", shown(", ".join(map(str, result.get("missing") or []))) or "-")
    Console().print(table, highlight=False)
