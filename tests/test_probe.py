"""``hwnas probe`` and ``hwnas devices``: what is real here and what is recorded.

Real: the probe of this machine over the local transport (sysfs script, ``uname``, the runtime
detection script run by this project's Python, which imports the real onnxruntime and
ai_edge_litert); the CLI as a subprocess; the example profiles through the real validator; the
probe over a real OpenSSH server and over a real adbd, and ``hwnas devices`` against a real adb
server (Debian's ``adb``) that has connected to that adbd, in network namespaces the tests create
(those tests skip without root).

Recorded: no Android phone, Raspberry Pi or Jetson exists here. Their outputs come from a fake
transport that answers with recorded text: ``dumpsys battery`` (a Galaxy S24) and ``vcgencmd``
(a Raspberry Pi 3) are real captures from ``tests/fixtures``; ``getprop``, ``nvpmodel`` and the
device's sysfs files are written below in those tools' recorded formats. The sysfs files lie in
a temporary folder and the probe's real shell script reads them there (re-rooted). The runtime
report of the Raspberry Pi comes from the real detection script, run by this Python without its
site-packages and with a stub ``tflite_runtime`` module (the Pi's recorded module set).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
import yaml

from hwnas.agents.device_state import STATE_COMMANDS, STATE_PATHS
from hwnas.agents.errors import DeviceError, DeviceTimeout, LinkLost, ProfileError
from hwnas.agents.probe import (
    RUNTIME_SCRIPT,
    AdbDevice,
    adb_server_address,
    adb_server_devices,
    fingerprint,
    freq_paths,
    list_devices,
    parse_adb_devices,
    probe,
    probe_profile,
    temperature_paths,
)
from hwnas.agents.profiles import PACKAGED_DIR, load_profile, parse_profile
from hwnas.agents.transport import CommandResult, LocalTransport, Transport, list_transports

_HERE = Path(__file__).resolve().parent
FIXTURES = _HERE / "fixtures"  # real outputs of real devices, sources in fixtures/SOURCES.md
REPO = _HERE.parent
DESIGN_FIELDS = ("model", "soc", "abi", "cores", "clusters", "governors", "temperatures_c", "runtimes")
DEVICE_ONLY_COMMANDS = ("getprop", "battery", "vcgencmd_temp", "vcgencmd_throttled", "nvpmodel")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()  # shipped with the tests: a missing one is a failure, not a skip


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("SSH_AUTH_SOCK", None)
    for key in ("ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_ADDRESS", "ANDROID_ADB_SERVER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def hwnas(
    args: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwnas", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- this machine, for real


def test_probe_of_this_machine() -> None:
    state = probe(LocalTransport(device="local", workdir="/tmp/hwnas"), runtime_python=sys.executable)
    json.dumps(state)
    assert list(state)[: len(DESIGN_FIELDS)] == list(DESIGN_FIELDS)
    assert state["model"]  # DMI product, device tree, or the cpuinfo model name ("AMD EPYC")
    assert state["cores"] >= 1
    assert state["abi"] == os.uname().machine
    assert state["runtimes"]["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in state["runtimes"]["onnxruntime"]["providers"]
    assert state["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    # Android, Raspberry Pi and Jetson commands do not exist here: reported, not raised.
    for name in DEVICE_ONLY_COMMANDS:
        program = STATE_COMMANDS[name][0]
        if shutil.which(program) is None:
            assert name in state["missing"], name
            assert program in state["missing_reasons"][name]
    assert state["android"] is None and state["battery"] is None and state["power_mode"] is None
    for path in temperature_paths(state) + freq_paths(state):
        assert Path(path).is_file()
    fp = fingerprint(state)
    assert fp["model"] == state["model"] and fp["cores"] == state["cores"] and fp["abi"] == state["abi"]
    assert fp["governor"] == (",".join(state["governors"]) or None)


class CountingLocal(LocalTransport):
    """The local transport, counting the commands it is asked to run."""

    def __init__(self) -> None:
        super().__init__(device="local", workdir="/tmp/hwnas")
        self.commands: list[tuple[str, ...]] = []

    def run(self, argv, **kw):  # type: ignore[no-untyped-def, override]
        self.commands.append(tuple(argv))
        return super().run(argv, **kw)


class NoCombinedScripts(CountingLocal):
    """A device whose shell cannot run the combined probe script, so each part runs alone. Simulated (the
    refusal only): every shell here runs the script; the parts then run for real on this machine."""

    def run(self, argv, **kw):  # type: ignore[no-untyped-def, override]
        if argv[:2] == ["sh", "-c"] and "@@hwnas-part-" in argv[2]:
            self.commands.append(tuple(argv))
            return CommandResult(argv=tuple(argv), returncode=2, stdout="", stderr="sh: syntax error", seconds=0.0)
        return super().run(argv, **kw)


def test_probe_is_one_command_and_agrees_with_the_commands_run_one_by_one() -> None:
    together, alone = CountingLocal(), NoCombinedScripts()
    state = probe(together, runtime_python=sys.executable)
    assert len(together.commands) == 1, together.commands  # a round trip each: most of a remote probe's time
    fallback = probe(alone, runtime_python=sys.executable)
    assert len(alone.commands) == 1 + len(STATE_COMMANDS) + 1  # the refused script, each part, the runtimes
    for field in ("model", "soc", "abi", "cores", "core_types", "os", "runtimes", "python", "missing", "android"):
        assert state[field] == fallback[field], field
    for name in state["missing"]:
        if name in STATE_COMMANDS:  # both name the program the device lacks
            program = STATE_COMMANDS[name][0]
            assert program in state["missing_reasons"][name] and program in fallback["missing_reasons"][name]


def test_combined_probe_keeps_each_part_exact() -> None:
    from hwnas.agents.probe import _run_parts

    t = CountingLocal()
    parts = {
        "no_newline": (["printf", "x"], 5.0),
        "blank_lines": (["printf", "line\n\n"], 5.0),
        "empty": (["true"], 5.0),
        "fails": (["sh", "-c", "echo out; echo 'why it failed' >&2; exit 3"], 5.0),
        "reads_stdin": (["cat"], 5.0),  # gets /dev/null, never the transport's stdin
    }
    got = _run_parts(t, parts)
    assert len(t.commands) == 1
    assert got == {
        "no_newline": ("x", None),
        "blank_lines": ("line\n\n", None),
        "empty": ("", None),
        "fails": (None, "exit code 3: why it failed"),
        "reads_stdin": ("", None),
    }


def test_probe_without_python_on_the_device_reports_it_missing(tmp_path: Path) -> None:
    state = probe(
        LocalTransport(device="local", workdir="/tmp/hwnas"),
        runtime_python=str(tmp_path / "no-python3"),
        benchmark_binary=str(tmp_path / "benchmark_model"),
        benchmark_runtime="tflite-benchmark",
    )
    assert state["runtimes"] == {}
    assert state["python"] is None
    assert {"python", "runtime:onnxruntime", "runtime:litert", "runtime:tflite-benchmark"} <= set(
        state["missing"]
    )


def test_benchmark_binary_found_with_test_x(tmp_path: Path) -> None:
    binary = tmp_path / "benchmark model"  # a space: the path travels as one argv element
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    state = probe(
        LocalTransport(device="local", workdir="/tmp/hwnas"),
        runtime_python=sys.executable,
        benchmark_binary=str(binary),
        benchmark_runtime="onnxruntime-perf-test",
    )
    assert state["runtimes"]["onnxruntime-perf-test"] == {"version": None, "path": str(binary)}


# --------------------------------------------------------------------------- recorded devices


class RecordedDevice(Transport):
    """Answers the probe's commands as a device would (see the module docstring: recorded).

    ``files`` are the device's sysfs/procfs files, created under ``root`` and read there by the
    real sysfs script (re-rooted); ``commands`` maps an argv to its recorded stdout (exit code 0);
    ``python`` is an argv prefix that runs the runtime script (None: no Python on the device);
    ``executables`` are the paths ``test -x`` finds. Anything else exits 127, as ``sh`` does for a
    command that does not exist.
    """

    name = "recorded"

    def __init__(
        self,
        *,
        root: Path,
        files: dict[str, str | bytes],
        commands: dict[tuple[str, ...], str],
        python: tuple[list[str], dict[str, str]] | None = None,
        executables: Sequence[str] = (),
        raise_for: dict[str, Exception] | None = None,
    ) -> None:
        super().__init__(device="recorded", workdir="/tmp/hwnas")
        self.root = root
        for path, content in files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.commands = commands
        self.python = python
        self.executables = set(executables)
        self.raise_for = raise_for or {}
        self.seen: list[tuple[str, ...]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        description: str,
        timeout: float,
        check: bool = True,
        on_line: Any = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        argv = tuple(argv)
        self.seen.append(argv)
        if argv[0] in self.raise_for:
            raise self.raise_for[argv[0]]
        if argv[:2] == ("sh", "-c") and argv[3:4] == ("hwnas-probe",):
            root = str(self.root)
            done = subprocess.run([*argv[:4], *(root + p for p in argv[4:])], capture_output=True, timeout=30)
            return self._result(argv, 0, done.stdout.decode().replace(" " + root + "/", " /"))
        if argv[1:2] == ("-c",) and argv[2] == RUNTIME_SCRIPT:
            if self.python is None:
                return self._result(argv, 127, "", f"/system/bin/sh: {argv[0]}: inaccessible or not found\n")
            prefix, env = self.python
            done = subprocess.run([*prefix, *argv[1:]], capture_output=True, text=True, env=env, timeout=60)
            return self._result(argv, done.returncode, done.stdout, done.stderr)
        if argv[:2] == ("test", "-x"):
            return self._result(argv, 0 if argv[2] in self.executables else 1, "")
        if argv in self.commands:
            return self._result(argv, 0, self.commands[argv])
        return self._result(argv, 127, "", f"/system/bin/sh: {argv[0]}: inaccessible or not found\n")

    def _result(self, argv: tuple[str, ...], rc: int, out: str, err: str = "") -> CommandResult:
        return CommandResult(argv=argv, returncode=rc, stdout=out, stderr=err, seconds=0.0)

    def push(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def pull(self, remote: str, local: Path) -> None:
        raise NotImplementedError


# Recorded getprop format (a Pixel 6 on Android 14); written here, no device exists.
GETPROP_PIXEL6 = """\
[ro.board.platform]: [gs101]
[ro.build.fingerprint]: [google/oriole/oriole:14/AP2A.240805.005/12025142:user/release-keys]
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.hardware]: [oriole]
[ro.product.board]: [oriole]
[ro.product.brand]: [google]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.cpu.abilist]: [arm64-v8a,armeabi-v7a,armeabi]
[ro.product.device]: [oriole]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 6]
[ro.soc.manufacturer]: [Google]
[ro.soc.model]: [Tensor]
"""


def pixel6_files() -> dict[str, str | bytes]:
    """Recorded-format sysfs of a Tensor G1 (4 x A55 @1.8, 2 x A76 @2.25, 2 x X1 @2.8 GHz)."""
    files: dict[str, str | bytes] = {"/sys/devices/system/cpu/present": "0-7\n"}
    for cpu, khz in enumerate([1803000] * 4 + [2253000] * 2 + [2802000] * 2):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        files[f"{base}/cpuinfo_max_freq"] = f"{khz}\n"
        files[f"{base}/scaling_cur_freq"] = f"{khz // 2}\n"
        files[f"{base}/scaling_governor"] = "sched_pixel\n"
    zones = [
        ("BIG", "41200"),
        ("MID", "39800"),
        ("LITTLE", "38100"),
        ("battery", "35700"),
        ("skin-therm", "33000"),
    ]
    for n, (kind, milli) in enumerate(zones):
        files[f"/sys/class/thermal/thermal_zone{n}/type"] = kind + "\n"
        files[f"/sys/class/thermal/thermal_zone{n}/temp"] = milli + "\n"
    return files


def test_probe_of_a_recorded_android_phone(tmp_path: Path) -> None:
    phone = RecordedDevice(
        root=tmp_path,
        files=pixel6_files(),
        commands={
            ("uname", "-m"): "aarch64\n",
            ("getprop",): GETPROP_PIXEL6,
            ("dumpsys", "battery"): fixture("android_dumpsys_battery_samsung_galaxy_s24.txt"),
        },
        executables=["/data/local/tmp/benchmark_model"],
    )
    state = probe(
        phone, benchmark_binary="/data/local/tmp/benchmark_model", benchmark_runtime="tflite-benchmark"
    )
    json.dumps(state)
    assert (state["model"], state["soc"], state["abi"]) == ("Pixel 6", "Google Tensor", "arm64-v8a")
    assert state["os"] == "Android 14 (SDK 34)"
    assert state["android"]["abis"] == ["arm64-v8a", "armeabi-v7a", "armeabi"]
    assert state["cores"] == 8
    assert [(c["cpus"], c["max_mhz"], c["mask"]) for c in state["clusters"]] == [
        ([0, 1, 2, 3], 1803.0, "f"),
        ([4, 5], 2253.0, "30"),
        ([6, 7], 2802.0, "c0"),
    ]
    assert state["governors"] == ["sched_pixel"]
    assert state["temperatures_c"]["BIG"] == pytest.approx(41.2)
    assert state["battery"]["temperature_c"] == pytest.approx(35.7)  # dumpsys: tenths of a degree
    assert state["battery"]["level"] == 75
    assert state["runtimes"] == {
        "tflite-benchmark": {"version": None, "path": "/data/local/tmp/benchmark_model"}
    }
    assert ("test", "-x", "/data/local/tmp/benchmark_model") in phone.seen
    assert {"vcgencmd_temp", "vcgencmd_throttled", "nvpmodel", "python", "runtime:onnxruntime"} <= set(
        state["missing"]
    )
    assert not {"getprop", "battery", "sysfs", "uname", "cpufreq", "thermal_zones"} & set(state["missing"])
    # The runner's gate watches the CPU zones, not the battery or the skin.
    assert temperature_paths(state) == [f"/sys/class/thermal/thermal_zone{n}/temp" for n in (0, 1, 2)]
    assert len(temperature_paths(state, cpu_only=False)) == 5
    assert freq_paths(state) == [f"/sys/devices/system/cpu/cpu{n}/cpufreq/scaling_cur_freq" for n in range(8)]
    assert fingerprint(state) == {
        "model": "Pixel 6",
        "soc": "Google Tensor",
        "abi": "arm64-v8a",
        "cores": 8,
        "governor": "sched_pixel",
        "governors": ["sched_pixel"],
    }


def test_paths_from_a_sysfs_dump_match_those_from_the_state(tmp_path: Path) -> None:
    from hwnas.agents.device_state import parse_sysfs_dump, sysfs_read_argv

    phone = RecordedDevice(root=tmp_path, files=pixel6_files(), commands={})
    dump = parse_sysfs_dump(phone.run(sysfs_read_argv(STATE_PATHS), description="dump", timeout=30).stdout)
    state = probe(phone)
    assert temperature_paths(dump) == temperature_paths(state)
    assert freq_paths(dump) == freq_paths(state)


def test_probe_profile_uses_the_profiles_python_and_benchmark(tmp_path: Path) -> None:
    profile = load_profile(str(PACKAGED_DIR / "pixel-usb.yaml"))
    phone = RecordedDevice(
        root=tmp_path,
        files=pixel6_files(),
        commands={("getprop",): GETPROP_PIXEL6},
        executables=[str(profile.benchmark_binary)],
    )
    state = probe_profile(profile, transport=phone)
    assert (state["device"], state["transport"], state["address"]) == ("pixel-usb", "adb", profile.address)
    assert list(state["runtimes"]) == ["tflite-benchmark"]
    assert ("python3", "-c", RUNTIME_SCRIPT) in phone.seen


CPUINFO_RPI4 = """\
processor	: 0
BogoMIPS	: 108.00
CPU implementer	: 0x41
CPU part	: 0xd08

processor	: 1
CPU implementer	: 0x41
CPU part	: 0xd08

processor	: 2
CPU implementer	: 0x41
CPU part	: 0xd08

processor	: 3
CPU implementer	: 0x41
CPU part	: 0xd08

Revision	: c03114
Serial		: 100000000000abcd
Model		: Raspberry Pi 4 Model B Rev 1.4
"""


def test_probe_of_a_recorded_raspberry_pi(tmp_path: Path) -> None:
    vcgencmd = fixture("rpi_vcgencmd_rpi3_undervoltage_throttled.txt").splitlines()
    stubs = tmp_path / "pi-site-packages"
    (stubs / "tflite_runtime").mkdir(parents=True)
    (stubs / "tflite_runtime" / "__init__.py").write_text("__version__ = '2.14.0'\n")
    files: dict[str, str | bytes] = {
        "/proc/cpuinfo": CPUINFO_RPI4,
        "/proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\x00",
        "/proc/device-tree/compatible": b"raspberrypi,4-model-b\x00brcm,bcm2711\x00",
        "/sys/devices/system/cpu/present": "0-3\n",
        "/sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "/sys/class/thermal/thermal_zone0/temp": "45277\n",
    }
    for cpu in range(4):
        files[f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq"] = "1800000\n"
        files[f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq"] = "600000\n"
        files[f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"] = "ondemand\n"
    pi = RecordedDevice(
        root=tmp_path / "pi",
        files=files,
        commands={
            ("uname", "-m"): "aarch64\n",
            ("vcgencmd", "measure_temp"): vcgencmd[0] + "\n",
            ("vcgencmd", "get_throttled"): vcgencmd[1] + "\n",
        },
        # The real detection script, without this Python's site-packages, with the Pi's module set.
        python=([sys.executable, "-S"], {"PYTHONPATH": str(stubs), "PATH": os.environ.get("PATH", "")}),
    )
    state = probe(pi, runtime_python="/home/pi/hwnas-venv/bin/python3")
    assert state["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert state["soc"] == "bcm2711"
    assert state["core_types"] == ["Cortex-A72"]
    assert [c["mask"] for c in state["clusters"]] == ["f"]
    assert state["governors"] == ["ondemand"]
    assert state["temperatures_c"] == {
        "cpu-thermal": pytest.approx(45.277),
        "soc (vcgencmd)": pytest.approx(38.6),
    }
    assert state["throttled"]["raw"] == "0x50005"
    assert {"under_voltage_now", "throttled_now", "under_voltage_occurred"} <= set(
        state["throttled"]["flags"]
    )
    assert state["runtimes"] == {
        "litert": {
            "version": "2.14.0",
            "module": "tflite_runtime",
            "python": "/home/pi/hwnas-venv/bin/python3",
        }
    }
    assert "No module named 'onnxruntime'" in state["missing_reasons"]["runtime:onnxruntime"]
    assert {"getprop", "battery", "nvpmodel", "runtime:onnxruntime"} <= set(state["missing"])
    assert "python" not in state["missing"]
    assert temperature_paths(state) == ["/sys/class/thermal/thermal_zone0/temp"]


def test_probe_of_a_recorded_jetson_power_mode(tmp_path: Path) -> None:
    jetson = RecordedDevice(
        root=tmp_path,
        files={"/proc/device-tree/model": b"NVIDIA Jetson Orin Nano Developer Kit\x00"},
        commands={("uname", "-m"): "aarch64\n", ("nvpmodel", "-q"): "NV Power Mode: 15W\n0\n"},
    )
    state = probe(jetson)
    assert state["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert state["power_mode"] == {"name": "15W", "mode_id": 0}
    assert "nvpmodel" not in state["missing"]


def test_a_hung_command_is_missing_and_a_lost_link_raises(tmp_path: Path) -> None:
    # Raised by the fake transport (recorded behaviour): real timeouts and cut links are the
    # transports' own tests.
    slow = RecordedDevice(
        root=tmp_path,
        files={},
        commands={("uname", "-m"): "aarch64\n"},
        raise_for={"dumpsys": DeviceTimeout("probe battery ran past its timeout", device="recorded")},
    )
    state = probe(slow, timeout=1)
    assert "no answer within 1 s" in state["missing_reasons"]["battery"]

    gone = RecordedDevice(
        root=tmp_path,
        files={},
        commands={},
        raise_for={"getprop": LinkLost("connection reset", device="recorded")},
    )
    with pytest.raises(LinkLost):
        probe(gone)

    nothing = RecordedDevice(
        root=tmp_path,
        files={},
        commands={},
        raise_for={"sh": DeviceError("no sh"), "uname": DeviceError("no uname")},
    )
    with pytest.raises(DeviceError, match="cannot read anything"):
        probe(nothing)


# --------------------------------------------------------------------------- adb server protocol

# Recorded ``adb devices -l`` format (adb 34); no phone is attached here.
ADB_DEVICES_L = (
    "0A1B2C3D4E5F           device usb:1-1.2 product:oriole model:Pixel_6 device:oriole transport_id:3\n"
    "192.0.2.7:5555         offline product:x model:y device:z transport_id:4\n"
    "R58M12345AB            unauthorized usb:1-2 transport_id:5\n"
    "FA79A1A01234           no permissions (missing udev rules? user is in the plugdev group); "
    "see [http://developer.android.com/tools/device.html] usb:1-3 transport_id:6\n"
)


def test_parse_adb_devices_long_listing() -> None:
    devices = parse_adb_devices("List of devices attached\n" + ADB_DEVICES_L + "\n")
    assert devices[0] == AdbDevice(
        serial="0A1B2C3D4E5F",
        state="device",
        product="oriole",
        model="Pixel_6",
        device="oriole",
        usb="1-1.2",
        transport_id="3",
    )
    assert (devices[1].serial, devices[1].state, devices[1].usb) == ("192.0.2.7:5555", "offline", None)
    assert devices[2].state == "unauthorized"
    assert devices[3].state.startswith("no permissions (missing udev rules?")
    assert devices[3].usb == "1-3"
    assert parse_adb_devices("0A1B\tdevice\n") == [AdbDevice(serial="0A1B", state="device")]


class FakeAdbServer:
    """A socket server speaking the adb server protocol's host:devices-l (recorded: see above)."""

    def __init__(self, listing: str, *, fail: str | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.listing, self.fail = listing, fail
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                length = int(conn.recv(4), 16)
                self.requests.append(conn.recv(length))
                body = (self.fail or self.listing).encode()
                conn.sendall((b"FAIL" if self.fail else b"OKAY") + b"%04x" % len(body) + body)

    def close(self) -> None:
        self.sock.close()


def test_adb_server_client_and_devices_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeAdbServer(ADB_DEVICES_L)
    try:
        monkeypatch.setenv("ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        assert adb_server_address() == ("127.0.0.1", server.port)
        assert [d.serial for d in adb_server_devices()][:2] == ["0A1B2C3D4E5F", "192.0.2.7:5555"]
        assert server.requests[-1] == b"host:devices-l"
        local = load_profile("local")
        named = parse_profile(
            {"name": "my-pixel", "transport": {"adb": {"serial": "0A1B2C3D4E5F"}}, "runtime": "onnxruntime"},
            source="test",
        )
        result = list_devices(profiles=[local, named], timeout=5)
    finally:
        server.close()
    by_name = {d["name"]: d for d in result["devices"]}
    assert result["adb_server"]["running"] is True
    assert by_name["local"]["reachable"] is True
    assert by_name["my-pixel"]["adb_state"] == "device"  # the profile names the attached phone
    assert "0A1B2C3D4E5F" not in by_name
    assert by_name["192.0.2.7:5555"] == {
        "name": "192.0.2.7:5555",
        "transport": "adb",
        "address": "192.0.2.7:5555",
        "reachable": False,
        "profile": None,
        "state": "offline",
        "model": "y",
        "product": "x",
        "usb": None,
    }
    assert by_name["R58M12345AB"]["state"] == "unauthorized"


def test_adb_server_fail_and_no_server() -> None:
    server = FakeAdbServer("", fail="protocol fault (no status)")
    try:
        with pytest.raises(DeviceError, match="protocol fault"):
            adb_server_devices(address=("127.0.0.1", server.port))
    finally:
        server.close()
    with socket.create_server(("127.0.0.1", 0)) as s:
        free = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        adb_server_devices(address=("127.0.0.1", free))
    result = list_devices(profiles=[], adb_address=("127.0.0.1", free))
    assert result == {
        "devices": [],
        "adb_server": {"address": f"127.0.0.1:{free}", "running": False, "adb": shutil.which("adb")},
    }


# --------------------------------------------------------------------------- the CLI, for real


def test_cli_probe_local_json(tmp_path: Path) -> None:
    done = hwnas(["probe", "local", "--json"], cwd=tmp_path, env=isolated_env(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert list(data)[:3] == ["device", "transport", "address"]
    for key in DESIGN_FIELDS:
        assert key in data
    assert data["model"] and data["cores"] >= 1
    assert data["runtimes"]["onnxruntime"]["version"] == onnxruntime.__version__
    assert "getprop" in data["missing"] or shutil.which("getprop")


def test_cli_probe_human_table_and_profile_path(tmp_path: Path) -> None:
    profile = tmp_path / "here.yaml"
    profile.write_text("name: here\ntransport: {local: {}}\n")
    done = hwnas(["probe", str(profile)], cwd=tmp_path, env=isolated_env(tmp_path, COLUMNS="120"))
    assert done.returncode == 0, done.stderr
    assert "probe here (localhost)" in done.stdout
    assert "onnxruntime" in done.stdout and "missing" in done.stdout


def test_cli_devices_lists_local_reachable(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, ANDROID_ADB_SERVER_PORT="1")  # no adb server there
    done = hwnas(["devices", "--json"], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    by_name = {d["name"]: d for d in data["devices"]}
    assert by_name["local"] == {
        **by_name["local"],
        "transport": "local",
        "address": "localhost",
        "reachable": True,
    }
    for dev in data["devices"]:
        assert {"name", "transport", "address", "reachable"} <= set(dev)
        assert dev["reachable"] or dev["error"]
    # The examples name placeholder hosts: listed, not reachable, and each says why.
    assert by_name["rpi4"]["reachable"] is False
    human = hwnas(["devices"], cwd=tmp_path, env=dict(env, COLUMNS="160"))
    assert human.returncode == 0 and "local" in human.stdout and "reachable" in human.stdout


def test_cli_unknown_device_exit_2_one_line(tmp_path: Path) -> None:
    done = hwnas(["probe", "no-such-board", "--json"], cwd=tmp_path, env=isolated_env(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no-such-board" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- example profiles

EXAMPLES = {
    "pixel-usb": ("adb", "tflite-benchmark"),
    "phone-wifi": ("adb", "litert"),
    "rpi4": ("ssh", "litert"),
    "jetson-orin": ("ssh", "onnxruntime"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_profiles_validate(name: str) -> None:
    path = PACKAGED_DIR / f"{name}.yaml"
    profile = load_profile(str(path))
    assert profile.name == name
    assert (profile.transport, profile.runtime) == EXAMPLES[name]
    host = profile.transport_settings.get("host")
    if host is not None:  # a documentation placeholder, never a real address
        assert host.endswith(".local")
        with pytest.raises(ValueError):
            ipaddress.ip_address(host)
    assert "#" in path.read_text()  # commented
    assert yaml.safe_load(path.read_text())["name"] == name
    if name == "pixel-usb":
        assert (profile.benchmark_binary, profile.cores, profile.threads) == (
            "/data/local/tmp/benchmark_model",
            "big",
            1,
        )
    if name == "rpi4":
        assert (profile.cores, profile.threads, profile.measure.max_temp_c) == ("all", 4, 70.0)


def test_unknown_profile_is_a_profile_error() -> None:
    with pytest.raises(ProfileError, match="unknown device"):
        load_profile("no-such-board")


# --------------------------------------------------------------------------- real servers (root)


@pytest.mark.netns
def test_probe_over_real_ssh(sshd_server: Any, tmp_path: Path) -> None:
    if "ssh" not in list_transports():
        pytest.skip("the ssh transport is not registered")
    import netns

    profile = tmp_path / "sshbox.yaml"
    profile.write_text(
        yaml.safe_dump(
            {"name": "sshbox", "transport": {"ssh": sshd_server.settings()}, "python": sys.executable}
        )
    )
    code = "import sys; from hwnas.cli._app import main; main(sys.argv[1:])"
    run = netns.ns_python(sshd_server.ns, code, args=["probe", str(profile), "--json"], timeout=120)
    assert run.returncode == 0, run.stderr
    data = run.json()
    assert data["transport"] == "ssh" and data["address"].endswith(f"@127.0.0.1:{sshd_server.port}")
    assert data["abi"] == os.uname().machine and data["cores"] >= 1 and data["model"]
    assert data["runtimes"]["onnxruntime"]["version"] == onnxruntime.__version__
    assert "getprop" in data["missing"] or shutil.which("getprop")


@pytest.mark.netns
def test_adbd_probe_and_devices_through_a_real_adb_server(adbd_server: Any, tmp_path: Path) -> None:
    if "adb" not in list_transports():
        pytest.skip("the adb transport is not registered")
    import netns

    try:
        adb = netns.ensure_system_package("adb", "adb", backports=True)
    except RuntimeError as exc:
        pytest.skip(f"cannot install Debian's adb: {exc}")
    ns, serial = adbd_server.ns, f"127.0.0.1:{adbd_server.port}"
    profile = tmp_path / "adbbox.yaml"
    profile.write_text(yaml.safe_dump({"name": "adbbox", "transport": {"adb": adbd_server.settings()}}))
    code = "import sys; from hwnas.cli._app import main; main(sys.argv[1:])"
    # adbd has no getprop and no Android /sys: the probe reports those parts missing.
    run = netns.ns_python(
        ns, code, args=["probe", str(profile), "--json"], timeout=120, env={"HOME": str(tmp_path)}
    )
    assert run.returncode == 0, run.stderr
    data = run.json()
    assert data["transport"] == "adb" and data["cores"] >= 1 and "getprop" in data["missing"]

    server_port = netns.random_port()
    env = dict(os.environ, HOME=str(tmp_path), ANDROID_ADB_SERVER_PORT=str(server_port))
    server = subprocess.Popen(  # adb's server listens on the namespace's loopback only
        netns.ns_argv(ns, [adb, "server", "nodaemon"]),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        netns.wait_for_port(ns, server_port, proc=server)
        subprocess.run(netns.ns_argv(ns, [adb, "connect", serial]), env=env, capture_output=True, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listing = subprocess.run(
                netns.ns_argv(ns, [adb, "devices"]), env=env, capture_output=True, text=True, timeout=30
            ).stdout
            if f"{serial}\tdevice" in listing:
                break
            time.sleep(0.5)
        run = netns.ns_python(
            ns,
            code,
            args=["devices", "--json"],
            timeout=120,
            env={"HOME": str(tmp_path), "ADB_SERVER_SOCKET": f"tcp:127.0.0.1:{server_port}"},
        )
    finally:
        server.kill()
        server.wait(timeout=10)
    assert run.returncode == 0, run.stderr
    data = run.json()
    assert data["adb_server"]["running"] is True
    attached = {d["name"]: d for d in data["devices"]}[serial]
    assert (attached["transport"], attached["state"], attached["reachable"]) == ("adb", "device", True)
