"""Probe a device (identity, CPU clusters, clocks, temperatures, power, runtimes) and find devices.

:func:`probe` runs the commands of :data:`~.device_state.STATE_COMMANDS` over any transport,
without a return-code check, asks the device's Python which runtimes it can import
(:data:`RUNTIME_SCRIPT`) and, when a profile names one, whether the benchmark program is there
(``test -x PATH``): all in one shell call, each part's output and exit code between marker
lines (one by one, each with its own timeout, on a device that cannot run that script). A command the device lacks
(``getprop`` off Android, ``vcgencmd`` off a Raspberry Pi, no Python at all) is named in
``missing``; only a lost link, or a device on which not even ``sh`` and ``uname`` run,
raises.

Finding devices (``hwnas devices``: configured profiles checked over their transports, the devices an
adb server lists) lives in :mod:`.discovery`; its names are re-exported here for older callers.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from . import runtimes
from .device_state import (
    STATE_COMMANDS,
    android_props,
    parse_cpuinfo,
    parse_device_state,
    parse_getprop,
    parse_sysfs_dump,
    parse_thermal_zones,
)

# finding devices lives in .discovery; its names stay importable from here (hwnas devices, tests)
from .discovery import (
    ADB_SERVER_DEFAULT,
    AdbDevice,
    adb_server_address,
    adb_server_devices,
    check_reachable,
    list_devices,
    parse_adb_devices,
)
from .errors import DeviceError, DeviceTimeout, LinkLost
from .profiles import DeviceProfile
from .transport import Transport, open_transport, shell_join

log = logging.getLogger(__name__)

__all__ = [
    "ADB_SERVER_DEFAULT",
    "RUNTIME_SCRIPT",
    "AdbDevice",
    "adb_server_address",
    "adb_server_devices",
    "check_reachable",
    "fingerprint",
    "freq_paths",
    "list_devices",
    "parse_adb_devices",
    "probe",
    "probe_profile",
    "temperature_paths",
]

#: Seconds each state command may take (a slow sensor read included).
COMMAND_TIMEOUT_S = 20.0
#: Seconds the runtime detection may take (importing onnxruntime on a slow board's Python).
RUNTIME_TIMEOUT_S = 90.0

_RUNTIMES_MARK = "@@hwnas-runtimes@@"

#: Run as ``[python, "-c", RUNTIME_SCRIPT]`` on the device: which runtimes import, with versions.
#: Python 3.5+ syntax, standard library only; prints one marked JSON line (other output, such as
#: a runtime's warnings, is ignored).
RUNTIME_SCRIPT = (
    "import json, sys\n"
    "out = {'python': sys.version.split()[0], 'executable': sys.executable, 'modules': {}}\n"
    "for name, dist in (('onnxruntime', 'onnxruntime'), ('ai_edge_litert', 'ai-edge-litert'),\n"
    "                   ('tflite_runtime', 'tflite-runtime')):\n"
    "    try:\n"
    "        mod = __import__(name)\n"
    "    except Exception as exc:\n"
    "        out['modules'][name] = {'error': '%s: %s' % (type(exc).__name__, exc)}\n"
    "        continue\n"
    "    version = getattr(mod, '__version__', None)\n"
    "    if version is None:\n"
    "        try:\n"
    "            from importlib.metadata import version as dist_version\n"
    "            version = dist_version(dist)\n"
    "        except Exception:\n"
    "            pass\n"
    "    info = {'version': version}\n"
    "    if name == 'onnxruntime':\n"
    "        try:\n"
    "            info['providers'] = list(mod.get_available_providers())\n"
    "        except Exception:\n"
    "            pass\n"
    "    out['modules'][name] = info\n"
    f"print('{_RUNTIMES_MARK} ' + json.dumps(out))\n"
)

# Python modules behind each profile runtime, in the runner's order of preference.
_RUNTIME_MODULES: dict[str, tuple[str, ...]] = {name: r.modules for name, r in runtimes.REGISTRY.items() if r.python}
# Programs a profile's benchmark_binary may name, by runtime.
_BENCHMARK_RUNTIMES = runtimes.BINARY_RUNTIMES


# --------------------------------------------------------------------------- probing


def _run_part(
    transport: Transport, name: str, argv: Sequence[str], *, timeout: float
) -> tuple[str | None, str | None]:
    """Run one probe command: ``(stdout, None)`` on exit code 0, else ``(None, why)``.

    LinkLost propagates (the device is gone); everything else a device may lack becomes a reason.
    """
    try:
        res = transport.run(list(argv), description=f"probe {name}", timeout=timeout, check=False)
    except LinkLost:
        raise
    except DeviceTimeout:
        return None, f"no answer within {timeout:g} s"
    except DeviceError as exc:  # the local transport: the program does not exist
        return None, exc.message
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or [""]
        return None, f"exit code {res.returncode}" + (f": {tail[0][:200]}" if tail[0] else "")
    return res.stdout, None


def _binary_part(benchmark_runtime: str | None) -> str:
    """The probe part (and ``runtimes`` key) of a profile's benchmark program."""
    return benchmark_runtime if benchmark_runtime in _BENCHMARK_RUNTIMES else "benchmark_binary"


def _run_parts(
    transport: Transport, parts: Mapping[str, tuple[Sequence[str], float]]
) -> dict[str, tuple[str | None, str | None]]:
    """Run the probe's commands in one shell call (a round trip each is most of a remote probe's time),
    each one's output between marker lines. ``parts`` maps a name to ``(argv, timeout)``; returns
    ``{name: (stdout, None) or (None, why)}`` as :func:`_run_part` gives. A device that cannot run the
    combined script (no ``sh``, a command hung past the script's timeout, markers missing) gets the
    commands one by one instead, each with its own timeout.
    """
    token = "@@hwnas-part-" + secrets.token_hex(6)
    lines = []
    for name, (argv, _) in parts.items():
        lines.append(f"printf '\\n%s %s\\n' {token} {name}; printf '%s %s\\n' {token} {name} >&2")
        lines.append(f"{shell_join(argv)} </dev/null")
        lines.append(f"printf '\\n%s rc %s\\n' {token} \"$?\"")
    try:
        # the slowest part's timeout and one more: a device slower than that is probed part by part
        budget = max(t for _, t in parts.values()) + min(t for _, t in parts.values())
        res = transport.run(["sh", "-c", "\n".join(lines)], description="probe the device", timeout=budget, check=False)
    except LinkLost:
        raise
    except DeviceError as exc:  # includes DeviceTimeout
        log.debug("%s: combined probe failed (%s); one command at a time", transport.device, exc)
        res = None
    found: dict[str, tuple[str | None, str | None]] = {}
    if res is not None and res.returncode == 0:
        errs: dict[str, str] = {}
        for m in re.finditer(rf"(?m)^{token} (\S+)\r?\n(.*?)(?=^{token} |\Z)", res.stderr, re.S):
            errs[m.group(1)] = m.group(2)
        for m in re.finditer(rf"\r?\n{token} (\S+)\r?\n(.*?)\r?\n{token} rc (\d+)", res.stdout, re.S):
            name, out, rc = m.group(1), m.group(2), int(m.group(3))
            if rc == 0:
                found[name] = (out, None)
            else:
                tail = (errs.get(name, "").strip() or out.strip()).splitlines()[-1:] or [""]
                found[name] = (None, f"exit code {rc}" + (f": {tail[0][:200]}" if tail[0] else ""))
    if set(found) != set(parts):
        found = {name: _run_part(transport, name, argv, timeout=t) for name, (argv, t) in parts.items()}
    return found


def _detect_runtimes(
    outputs: Mapping[str, tuple[str | None, str | None]],
    *,
    python: str,
    benchmark_binary: str | None,
    benchmark_runtime: str | None,
    reasons: dict[str, str],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    runtimes: dict[str, dict[str, Any]] = {}
    python_info: dict[str, Any] | None = None
    out, why = outputs["runtimes"]
    report: dict[str, Any] | None = None
    for line in (out or "").splitlines():
        if line.startswith(_RUNTIMES_MARK + " "):
            try:
                report = json.loads(line[len(_RUNTIMES_MARK) + 1 :])
            except json.JSONDecodeError:
                report = None
    if report is None or not isinstance(report.get("modules"), dict):
        reasons["python"] = why or f"{python} printed no runtime report"
        for runtime in _RUNTIME_MODULES:
            reasons[f"runtime:{runtime}"] = f"no usable Python ({python})"
    else:
        python_info = {
            "path": python,
            "version": report.get("python"),
            "executable": report.get("executable"),
        }
        modules: dict[str, Any] = report["modules"]
        for runtime, candidates in _RUNTIME_MODULES.items():
            found = next((m for m in candidates if "error" not in (modules.get(m) or {"error": ""})), None)
            if found is None:
                errors = "; ".join(
                    str((modules.get(m) or {}).get("error", "not reported")) for m in candidates
                )
                reasons[f"runtime:{runtime}"] = errors
                continue
            info = dict(modules[found])
            runtimes[runtime] = {
                "version": info.pop("version", None),
                "module": found,
                "python": python,
                **info,
            }
    if benchmark_binary:
        runtime = _binary_part(benchmark_runtime)
        _, why = outputs[runtime]
        if why is None:
            runtimes[runtime] = {"version": None, "path": benchmark_binary}
        else:
            reasons[f"runtime:{runtime}"] = f"{benchmark_binary} is not an executable file on the device"
    return runtimes, python_info


def probe(
    transport: Transport,
    *,
    runtime_python: str = "python3",
    benchmark_binary: str | None = None,
    benchmark_runtime: str | None = None,
    timeout: float = COMMAND_TIMEOUT_S,
    runtime_timeout: float = RUNTIME_TIMEOUT_S,
) -> dict[str, Any]:
    """Probe the device behind ``transport``; a JSON-ready dict.

    The DESIGN fields come first (``model, soc, abi, cores, clusters, governors,
    temperatures_c, runtimes``), then ``manufacturer, os, core_types, android, battery,
    throttled, power_mode, thermal_zones, python, missing, missing_reasons, seconds``.
    ``runtimes`` maps a profile runtime name (``onnxruntime``, ``litert``, ``tflite-benchmark``,
    ``onnxruntime-perf-test``) to ``{version, ...}`` for each one the device has; ``missing``
    names each part the device lacks (a :data:`STATE_COMMANDS` key, ``cpufreq``,
    ``thermal_zones``, ``python`` or ``runtime:NAME``) and ``missing_reasons`` says why.

    Raises:
        LinkLost: the link dropped while probing.
        DeviceError: not even ``sh`` and ``uname`` run on the device.
    """
    start = time.perf_counter()
    parts: dict[str, tuple[Sequence[str], float]] = {name: (argv, timeout) for name, argv in STATE_COMMANDS.items()}
    parts["runtimes"] = ([runtime_python, "-c", RUNTIME_SCRIPT], runtime_timeout)
    if benchmark_binary:
        parts[_binary_part(benchmark_runtime)] = (["test", "-x", benchmark_binary], COMMAND_TIMEOUT_S)
    ran = _run_parts(transport, parts)
    outputs: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for name in STATE_COMMANDS:
        outputs[name], why = ran[name]
        if why is not None:
            reasons[name] = why
            log.debug("%s: probe %s: %s", transport.device, name, why)
    if outputs.get("sysfs") is None and outputs.get("uname") is None:
        raise DeviceError(
            "cannot read anything on the device (sh and uname both failed)",
            device=transport.device,
            output=f"sysfs: {reasons.get('sysfs')}; uname: {reasons.get('uname')}",
            hint="check that the device gives a POSIX shell to this transport",
        )
    state = parse_device_state(outputs).to_dict()
    dump = parse_sysfs_dump(outputs.get("sysfs") or "")
    if state["model"] is None:  # a PC or a VM without DMI: its CPU names it
        cpuinfo = parse_cpuinfo(dump.get("/proc/cpuinfo"))
        state["model"] = (cpuinfo.model_name if cpuinfo else None) or state["soc"]
    if not state["clusters"]:
        reasons["cpufreq"] = "no readable /sys/devices/system/cpu/cpu*/cpufreq"
    zones = parse_thermal_zones(dump)
    if not any(z.temp_c is not None for z in zones):
        reasons["thermal_zones"] = "no readable /sys/class/thermal/thermal_zone*/temp"
    props = parse_getprop(outputs.get("getprop") or "")
    runtimes, python_info = _detect_runtimes(
        ran, python=runtime_python, benchmark_binary=benchmark_binary, benchmark_runtime=benchmark_runtime,
        reasons=reasons,
    )
    return {
        "model": state["model"],
        "soc": state["soc"],
        "abi": state["abi"],
        "cores": state["cores"],
        "clusters": state["clusters"],
        "governors": state["governors"],
        "temperatures_c": state["temperatures_c"],
        "runtimes": runtimes,
        "manufacturer": state["manufacturer"],
        "os": state["os"],
        "core_types": state["core_types"],
        "android": android_props(props).to_dict() if props else None,
        "battery": state["battery"],
        "throttled": state["throttled"],
        "power_mode": state["power_mode"],
        "thermal_zones": [
            {**asdict(z), "path": f"/sys/class/thermal/thermal_zone{z.zone}/temp"} for z in zones
        ],
        "python": python_info,
        "missing": list(reasons),
        "missing_reasons": reasons,
        "seconds": time.perf_counter() - start,
    }


def probe_profile(profile: DeviceProfile, *, transport: Transport | None = None) -> dict[str, Any]:
    """Probe the device a profile names (opening, and closing, its transport unless given one).

    The local device's ``python3`` is hwnas's own interpreter, as for the runner. The result
    also holds ``device``, ``transport`` and ``address``. Raises as :func:`probe` and
    :func:`~.transport.open_transport` do.
    """
    python = profile.python
    if profile.transport == "local" and python == "python3":
        python = sys.executable
    own = transport is None
    link = transport or open_transport(
        profile.transport, profile.transport_settings, device=profile.name, workdir=profile.workdir
    )
    try:
        state = probe(
            link,
            runtime_python=python,
            benchmark_binary=profile.benchmark_binary,
            benchmark_runtime=profile.runtime,
        )
    finally:
        if own:
            link.close()
    return {"device": profile.name, "transport": profile.transport, "address": profile.address, **state}


def fingerprint(state: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The device fingerprint kept in a LUT's metadata: model, SoC, ABI, cores, governor(s).

    ``state`` is a :func:`probe` dict (or a :class:`~.device_state.DeviceState`). ``governor``
    is the one governor, or the distinct ones joined by ``,``, or None where unknown.
    """
    data = state.to_dict() if hasattr(state, "to_dict") else dict(state)
    governors = [str(g) for g in data.get("governors") or []]
    return {
        "model": data.get("model"),
        "soc": data.get("soc"),
        "abi": data.get("abi"),
        "cores": data.get("cores"),
        "governor": ",".join(governors) or None,
        "governors": governors,
    }


_CPU_ZONE_RE = re.compile(r"cpu|soc|cluster|x86_pkg|k10temp|coretemp|tsens|big|mid|little", re.IGNORECASE)
_CUR_FREQ_RE = re.compile(r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/scaling_cur_freq$")


def temperature_paths(state_or_dump: Mapping[str, Any], *, cpu_only: bool = True) -> list[str]:
    """Thermal-zone ``temp`` files with a reading, for the runner's ``temp_paths``.

    ``state_or_dump`` is a :func:`probe` dict or a :func:`~.device_state.parse_sysfs_dump`
    result. With ``cpu_only`` the zones whose type names a CPU or SoC sensor (``cpu-thermal``,
    ``soc_thermal``, ``x86_pkg_temp``, ...) are kept, or every zone when none does: the runner
    gates on the hottest of them, and a phone's skin or battery zone is not the CPU.
    """
    if "thermal_zones" in state_or_dump:
        zones = [
            (str(z["path"]), z.get("type") or "")
            for z in state_or_dump["thermal_zones"] or []
            if z.get("temp_c") is not None
        ]
    else:
        zones = [
            (f"/sys/class/thermal/thermal_zone{z.zone}/temp", z.type or "")
            for z in parse_thermal_zones(state_or_dump)
            if z.temp_c is not None
        ]
    if cpu_only:
        cpu = [(p, t) for p, t in zones if _CPU_ZONE_RE.search(t)]
        zones = cpu or zones
    return [p for p, _ in zones]


def freq_paths(state_or_dump: Mapping[str, Any]) -> list[str]:
    """``scaling_cur_freq`` files with a reading, by CPU, for the runner's ``state_paths``.

    ``state_or_dump`` is a :func:`probe` dict or a :func:`~.device_state.parse_sysfs_dump` result.
    """
    cpus: list[int] = []
    if "clusters" in state_or_dump:
        for cluster in state_or_dump["clusters"] or []:
            cur = list(cluster.get("cur_khz") or [])
            cpus += [cpu for i, cpu in enumerate(cluster["cpus"]) if i < len(cur) and cur[i] is not None]
    else:
        for path, value in state_or_dump.items():
            m = _CUR_FREQ_RE.match(path)
            if m and value is not None and value.strip().isdigit():
                cpus.append(int(m.group(1)))
    return [f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq" for cpu in sorted(set(cpus))]

