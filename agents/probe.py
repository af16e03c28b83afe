"""Probe a device (identity, CPU clusters, clocks, temperatures, power, runtimes) and find devices.

:func:`probe` runs the commands of :data:`~.device_state.STATE_COMMANDS` over any transport,
without a return-code check, asks the device's Python which runtimes it can import
(:data:`RUNTIME_SCRIPT`) and, when a profile names one, whether the benchmark program is there
(``test -x PATH``): all in one shell call, each part's output and exit code between marker
lines (one by one, each with its own timeout, on a device that cannot run that script). A command the device lacks
(``getprop`` off Android, ``vcgencmd`` off a Raspberry Pi, no Python at all) is named in
``missing``; only a lost link, or a device on which not even ``sh`` and ``uname`` run,
raises.

The second half finds devices for ``hwnas devices``: the configured profiles, each checked
by running ``true`` over its transport (concurrently), and the devices a running adb server
lists (``host:devices-l`` over the adb server's socket protocol, see :func:`adb_server_devices`).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
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
from .errors import AgentError, DeviceError, DeviceTimeout, LinkLost
from .profiles import DeviceProfile, list_profiles
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


# --------------------------------------------------------------------------- attached ADB devices

#: Where ``adb`` clients find the adb server unless ``ADB_SERVER_SOCKET`` or
#: ``ANDROID_ADB_SERVER_ADDRESS``/``ANDROID_ADB_SERVER_PORT`` say otherwise.
ADB_SERVER_DEFAULT = ("127.0.0.1", 5037)
_ADB_INFO_KEYS = ("usb", "product", "model", "device", "transport_id")


@dataclass(frozen=True)
class AdbDevice:
    """One line of the adb server's ``host:devices-l`` answer (``adb devices -l``)."""

    serial: str
    state: str
    product: str | None = None
    model: str | None = None
    device: str | None = None
    usb: str | None = None
    transport_id: str | None = None


def parse_adb_devices(text: str) -> list[AdbDevice]:
    """Parse ``adb devices -l`` lines: ``SERIAL STATE [usb:..] product:.. model:.. device:.. transport_id:N``.

    The state may have several words (``no permissions (missing udev rules?); see [...]``): it
    runs up to the first ``key:value`` token adb appends. ``List of devices attached`` and
    blank lines are skipped.
    """
    devices: list[AdbDevice] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        serial, _, rest = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        tokens = rest.split()
        info: dict[str, str] = {}
        state_words: list[str] = []
        for token in tokens:
            key, sep, value = token.partition(":")
            if sep and key in _ADB_INFO_KEYS and (info or state_words):
                info[key] = value
            elif not info:
                state_words.append(token)
        devices.append(AdbDevice(serial=serial.strip(), state=" ".join(state_words) or "unknown", **info))
    return devices


def adb_server_address() -> tuple[str, int]:
    """The adb server's address, from the environment variables adb itself reads."""
    sock = os.environ.get("ADB_SERVER_SOCKET", "")
    if sock.startswith("tcp:"):
        host, _, port = sock[4:].rpartition(":")
        if port.isdigit():
            return host or ADB_SERVER_DEFAULT[0], int(port)
    host = os.environ.get("ANDROID_ADB_SERVER_ADDRESS") or ADB_SERVER_DEFAULT[0]
    port = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    return host, int(port) if port.isdigit() else ADB_SERVER_DEFAULT[1]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the adb server closed the connection after {len(data)} of {n} bytes")
        data += chunk
    return data


def adb_server_devices(*, address: tuple[str, int] | None = None, timeout: float = 3.0) -> list[AdbDevice]:
    """Ask a running adb server which devices it sees (``host:devices-l``).

    The adb server protocol (``SERVICES.TXT`` / ``OVERVIEW.TXT`` in adb's sources): the client
    sends the request prefixed by its length as 4 hex digits; the server answers ``OKAY`` then
    a 4-hex-digit length and the listing, or ``FAIL`` then a length and a message.

    Raises:
        OSError: no adb server listens there (ConnectionRefusedError) or the link failed.
        DeviceError: the server answered ``FAIL`` or something that is not the protocol.
    """
    host, port = address or adb_server_address()
    request = b"host:devices-l"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(b"%04x" % len(request) + request)
        status = _recv_exact(sock, 4)
        if status not in (b"OKAY", b"FAIL"):
            raise DeviceError(f"the adb server at {host}:{port} answered {status!r}, not OKAY or FAIL")
        try:
            length = int(_recv_exact(sock, 4), 16)
        except ValueError:
            raise DeviceError(f"the adb server at {host}:{port} sent a bad length") from None
        payload = _recv_exact(sock, length).decode("utf-8", "replace")
    if status == b"FAIL":
        raise DeviceError(f"the adb server at {host}:{port} refused host:devices-l: {payload.strip()}")
    return parse_adb_devices(payload)


# --------------------------------------------------------------------------- hwnas devices


def check_reachable(profile: DeviceProfile, *, timeout: float = 10.0) -> dict[str, Any]:
    """Open the profile's transport and run ``true`` there: ``{name, transport, address, reachable, ...}``.

    Never raises for a device that is down: ``reachable`` is False and ``error`` says why.
    """
    entry: dict[str, Any] = {
        "name": profile.name,
        "transport": profile.transport,
        "address": profile.address,
        "reachable": False,
        "profile": str(profile.path) if profile.path else None,
    }
    start = time.perf_counter()
    try:
        link = open_transport(
            profile.transport, profile.transport_settings, device=profile.name, workdir=profile.workdir
        )
        try:
            res = link.run(["true"], description="check the link", timeout=timeout, check=False)
        finally:
            link.close()
        entry["reachable"] = res.returncode == 0
        if res.returncode != 0:
            entry["error"] = f"`true` exited with code {res.returncode} on the device"
    except AgentError as exc:
        entry["error"] = str(exc)
    except Exception as exc:  # one device's failure (DNS, socket, library) must not stop the listing
        log.debug("%s: reachability check failed", profile.name, exc_info=True)
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return entry


def _matches(profile: DeviceProfile, serial: str) -> bool:
    if profile.transport != "adb":
        return False
    s = profile.transport_settings
    return serial in (s.get("serial"), f"{s.get('host')}:{s.get('port', 5555)}")


def list_devices(
    *,
    profiles: Sequence[DeviceProfile] | None = None,
    timeout: float = 10.0,
    adb: bool = True,
    adb_address: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Configured profiles (each checked with :func:`check_reachable`, concurrently) and attached ADB devices.

    Returns ``{devices: [{name, transport, address, reachable, ...}], adb_server: {...}}``.
    Profiles come first; an adb-server device that no profile names follows with
    ``profile: None`` and its adb ``state`` (``device`` counts as reachable); a profile that
    names an attached device gets ``adb_state``. The adb server is asked only when one is
    running; it is never started.
    """
    profiles = list_profiles() if profiles is None else list(profiles)
    entries: list[dict[str, Any]] = []
    if profiles:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(profiles)))
        futures = [pool.submit(check_reachable, p, timeout=timeout) for p in profiles]
        # Transports honour their own connect and command timeouts; this is the backstop.
        concurrent.futures.wait(futures, timeout=timeout * 2 + 10)
        for profile, future in zip(profiles, futures, strict=True):
            if future.done():
                entries.append(future.result())
            else:
                entries.append(
                    {
                        "name": profile.name,
                        "transport": profile.transport,
                        "address": profile.address,
                        "reachable": False,
                        "profile": str(profile.path) if profile.path else None,
                        "error": f"no answer within {timeout * 2 + 10:g} s",
                    }
                )
        pool.shutdown(wait=False, cancel_futures=True)
    host, port = adb_address or adb_server_address()
    server: dict[str, Any] = {"address": f"{host}:{port}", "running": False, "adb": shutil.which("adb")}
    if adb:
        try:
            attached = adb_server_devices(address=(host, port))
            server["running"] = True
        except ConnectionRefusedError:
            attached = []
        except (OSError, DeviceError) as exc:
            attached = []
            server["error"] = str(exc)
        for dev in attached:
            owners = [
                e for p, e in zip(profiles, entries[: len(profiles)], strict=True) if _matches(p, dev.serial)
            ]
            for entry in owners:
                entry["adb_state"] = dev.state
            if owners:
                continue
            entries.append(
                {
                    "name": dev.serial,
                    "transport": "adb",
                    "address": dev.serial,
                    "reachable": dev.state == "device",
                    "profile": None,
                    "state": dev.state,
                    "model": dev.model,
                    "product": dev.product,
                    "usb": dev.usb,
                }
            )
    return {"devices": entries, "adb_server": server}
