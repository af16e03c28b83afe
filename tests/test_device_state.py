"""Device-state parsers: real captures where we have them, recorded formats where we do not.

``dumpsys battery`` (a Samsung Galaxy S24) and ``vcgencmd`` (a Raspberry Pi 3) are real captures
(fixtures, see SOURCES.md); expected values were read off them by eye. No Android phone, Jetson or
ARM board exists here, so ``getprop``, ARM ``/proc/cpuinfo``, cpufreq, thermal and ``nvpmodel``
outputs are small strings written below in those tools' recorded formats. The sysfs reader's shell
script runs for real, under every POSIX shell this machine has, on files the tests create.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from hwnas.agents.device_state import (
    STATE_COMMANDS,
    STATE_PATHS,
    CpuCluster,
    CpuFreq,
    ThermalZone,
    android_props,
    cpu_clusters,
    derive_core_mask,
    parse_cpu_list,
    parse_cpufreq,
    parse_cpuinfo,
    parse_device_state,
    parse_device_tree_model,
    parse_dumpsys_battery,
    parse_getprop,
    parse_nvpmodel,
    parse_sysfs_dump,
    parse_thermal_zones,
    parse_vcgencmd_temp,
    parse_vcgencmd_throttled,
    sysfs_read_argv,
    temperatures_c,
)
from hwnas.agents.errors import ProfileError

_HERE = Path(__file__).resolve().parent
FIXTURES = _HERE / "fixtures"  # real outputs of real devices, sources in fixtures/SOURCES.md

SHELLS = [name for name in ("sh", "dash", "bash", "busybox", "mksh") if shutil.which(name)]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()  # shipped with the tests: a missing one is a failure, not a skip


def run_argv(argv: list[str], shell: str = "sh") -> str:
    """Run a sysfs_read_argv command for real, with ``shell`` in place of ``sh``."""
    assert argv[0] == "sh"
    head = ["busybox", "sh"] if shell == "busybox" else [shell]
    done = subprocess.run(head + argv[1:], capture_output=True, check=True, timeout=30)
    return done.stdout.decode("utf-8", errors="replace")


def fake_root_dump(tmp_path: Path, files: dict[str, str | bytes]) -> str:
    """The sysfs dump a device holding ``files`` would print for STATE_PATHS.

    The files are created under ``tmp_path``, the real script reads the real STATE_PATHS glob
    patterns re-rooted there, and the root is taken off the printed paths again.
    """
    for path, content in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    root = str(tmp_path)
    text = run_argv(sysfs_read_argv(root + p for p in STATE_PATHS))
    return text.replace(" " + root + "/", " /")


# --------------------------------------------------------------------------- sysfs reader


def test_argv_passes_paths_as_arguments_never_in_the_script() -> None:
    paths = ["/sys/a b/c", "/proc/$(touch /tmp/x)"]
    argv = sysfs_read_argv(paths)
    assert argv[:2] == ["sh", "-c"]
    assert argv[3] == "hwnas-probe"
    assert argv[4:] == paths
    assert all(p not in argv[2] for p in paths)
    assert argv[2] == sysfs_read_argv(["/other"])[2]  # one constant script


@pytest.mark.parametrize("bad", ["relative/path", "/two\nlines", "/nul\0byte"])
def test_argv_rejects_odd_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        sysfs_read_argv([bad])


@pytest.mark.parametrize("shell", SHELLS)
def test_sysfs_script_reads_files_for_real(tmp_path: Path, shell: str) -> None:
    (tmp_path / "max").write_text("2841600\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "multi").write_text("line one\nline two\n")
    (tmp_path / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    (tmp_path / "no newline").write_text("schedutil")
    (tmp_path / "a dir").mkdir()
    hostile = tmp_path / "$(touch pwned); `touch pwned2`"
    hostile.write_text("42\n")
    for n in (0, 1, 10):
        zone = tmp_path / f"thermal_zone{n}"
        zone.mkdir()
        (zone / "temp").write_text(f"{40000 + n}\n")

    paths = [
        str(tmp_path / name)
        for name in ("max", "empty", "multi", "model", "no newline", "a dir", "missing", hostile.name)
    ]
    glob = str(tmp_path / "thermal_zone[0-9]*" / "temp")
    dump = parse_sysfs_dump(run_argv(sysfs_read_argv([*paths, glob, str(tmp_path / "nothing*")]), shell))

    assert dump[paths[0]] == "2841600"
    assert dump[paths[1]] == ""
    assert dump[paths[2]] == "line one\nline two"
    assert parse_device_tree_model(dump[paths[3]]) == "Raspberry Pi 4 Model B Rev 1.4"
    assert dump[paths[4]] == "schedutil"
    assert dump[paths[5]] is None  # a directory
    assert dump[paths[6]] is None  # missing
    assert dump[paths[7]] == "42"
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert not (tmp_path / "pwned2").exists() and not Path("pwned2").exists()
    # The glob expanded on the "device", one entry per zone; an unmatched one reads as missing.
    assert {k: v for k, v in dump.items() if "thermal_zone" in k} == {
        str(tmp_path / f"thermal_zone{n}" / "temp"): str(40000 + n) for n in (0, 1, 10)
    }
    assert dump[str(tmp_path / "nothing*")] is None


def test_parse_sysfs_dump_cut_off_and_crlf(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1\n")
    (tmp_path / "b").write_text("2\n")
    text = run_argv(sysfs_read_argv([str(tmp_path / "a"), str(tmp_path / "b")]))
    # adb shell with a pty turns \n into \r\n.
    assert parse_sysfs_dump(text.replace("\n", "\r\n")) == {
        str(tmp_path / "a"): "1",
        str(tmp_path / "b"): "2",
    }
    # Cut after the second file's content, before its end line: that one is unknown.
    cut = text[: text.rindex("2\n") + 2]
    assert parse_sysfs_dump(cut) == {str(tmp_path / "a"): "1", str(tmp_path / "b"): None}
    assert parse_sysfs_dump("") == {}


# --------------------------------------------------------------------------- Android

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
[persist.sys.multi]: [first line
second line]
[ro.empty]: []
"""

# Recorded getprop format of an older phone (Android 10) without ro.soc.* properties.
GETPROP_OLD = """\
[ro.board.platform]: [sm6150]
[ro.build.version.release]: [10]
[ro.build.version.sdk]: [29]
[ro.hardware]: [qcom]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.manufacturer]: [Xiaomi]
[ro.product.model]: [POCO X3 NFC]
"""


def test_getprop_to_dict_and_identity() -> None:
    props = parse_getprop(GETPROP_PIXEL6)
    assert props["ro.product.model"] == "Pixel 6"
    assert props["persist.sys.multi"] == "first line\nsecond line"
    assert props["ro.empty"] == ""
    ident = android_props(props)
    assert ident.model == "Pixel 6"
    assert ident.manufacturer == "Google"
    assert ident.platform == "gs101"
    assert ident.hardware == "oriole"
    assert (ident.soc_manufacturer, ident.soc_model) == ("Google", "Tensor")
    assert ident.soc == "Google Tensor"
    assert ident.abi == "arm64-v8a"
    assert ident.abis == ("arm64-v8a", "armeabi-v7a", "armeabi")
    assert (ident.android_version, ident.sdk) == ("14", 34)
    assert json.loads(json.dumps(ident.to_dict()))["soc"] == "Google Tensor"


def test_getprop_without_soc_properties_falls_back_to_the_platform() -> None:
    ident = android_props(parse_getprop(GETPROP_OLD.replace("\n", "\r\n")))
    assert (ident.soc_manufacturer, ident.soc_model) == (None, None)
    assert ident.soc == "sm6150"
    assert (ident.model, ident.sdk) == ("POCO X3 NFC", 29)
    assert android_props({}).model is None and android_props({}).sdk is None


def test_dumpsys_battery_samsung_s24_reads_only_the_current_state() -> None:
    b = parse_dumpsys_battery(fixture("android_dumpsys_battery_samsung_galaxy_s24.txt"))
    assert b is not None
    # level: 75 / status: 2 / health: 2 / voltage: 4156 / temperature: 357 / USB powered: true
    # (not level:74, temperature:362 from the [BattActionChangedLogBuffer] history below it)
    assert b.level == 75
    assert b.scale == 100
    assert b.status == "charging"
    assert b.health == "good"
    assert b.voltage_mv == 4156
    assert b.temperature_c == pytest.approx(35.7)
    assert b.present is True
    assert b.technology == "Li-ion"
    assert b.plugged == ("usb",)


def test_dumpsys_battery_missing_or_odd() -> None:
    assert parse_dumpsys_battery("") is None
    assert parse_dumpsys_battery("Can't find service: battery\n") is None
    # Recorded AOSP format (emulator), unknown status code kept as its number.
    b = parse_dumpsys_battery(
        "Current Battery Service state:\n  AC powered: true\n  status: 9\n  health: 3\n"
        "  level: 50\n  temperature: -52\n"
    )
    assert b is not None
    assert (b.status, b.health, b.level, b.temperature_c) == ("9", "overheat", 50, -5.2)
    assert b.plugged == ("ac",) and b.voltage_mv is None and b.present is None


# --------------------------------------------------------------------------- /proc/cpuinfo

# Recorded /proc/cpuinfo formats; written here, none of these machines exists.
CPUINFO_X86 = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
cpu MHz\t\t: 2112.000

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
"""

CPUINFO_ANDROID_ARM64 = (
    "".join(
        f"processor\t: {n}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x{v}\nCPU part\t: {part}\n"
        f"CPU revision\t: 0\n\n"
        for n, v, part in [(n, 1, "0xd05") for n in range(4)]
        + [(n, 1, "0xd41") for n in range(4, 7)]
        + [(7, 1, "0xd44")]
    )
    + "Hardware\t: Qualcomm Technologies, Inc SM8350\n"
)

CPUINFO_RPI3 = """\
processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
CPU implementer\t: 0x41
CPU part\t: 0xd03

processor\t: 1
model name\t: ARMv7 Processor rev 4 (v7l)
CPU implementer\t: 0x41
CPU part\t: 0xd03

Hardware\t: BCM2835
Revision\t: a02082
Serial\t\t: 00000000a1b2c3d4
Model\t\t: Raspberry Pi 3 Model B Rev 1.2
"""

CPUINFO_OLD_ARMV7 = """\
Processor\t: ARMv7 Processor rev 0 (v7l)
processor\t: 0
BogoMIPS\t: 1993.93

processor\t: 1
BogoMIPS\t: 1993.93

Features\t: swp half thumb fastmult vfp edsp neon vfpv3 tls
CPU implementer\t: 0x41
CPU part\t: 0xc09
Hardware\t: Xilinx Zynq Platform
"""


def test_cpuinfo_x86() -> None:
    info = parse_cpuinfo(CPUINFO_X86)
    assert info is not None
    assert info.processors == 2
    assert info.model_name == "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
    assert info.hardware is None and info.parts == {} and info.core_types == ()


def test_cpuinfo_android_arm64_core_types() -> None:
    info = parse_cpuinfo(CPUINFO_ANDROID_ARM64)
    assert info is not None
    assert info.processors == 8
    assert info.hardware == "Qualcomm Technologies, Inc SM8350"
    assert info.parts[0] == "0xd05" and info.parts[7] == "0xd44"
    assert info.core_types == ("Cortex-A55", "Cortex-A78", "Cortex-X1")
    assert info.model_name is None


def test_cpuinfo_raspberry_pi_and_old_armv7() -> None:
    pi = parse_cpuinfo(CPUINFO_RPI3)
    assert pi is not None
    assert (pi.processors, pi.hardware, pi.model) == (2, "BCM2835", "Raspberry Pi 3 Model B Rev 1.2")
    assert pi.model_name == "ARMv7 Processor rev 4 (v7l)"
    assert pi.core_types == ("Cortex-A53",)
    old = parse_cpuinfo(CPUINFO_OLD_ARMV7)
    assert old is not None
    assert old.processors == 2  # "Processor : ARMv7..." is a name, not a CPU
    assert old.model_name == "ARMv7 Processor rev 0 (v7l)"
    assert old.hardware == "Xilinx Zynq Platform"
    assert parse_cpuinfo("") is None and parse_cpuinfo(None) is None


def test_device_tree_model_and_cpu_list() -> None:
    assert parse_device_tree_model("Raspberry Pi 4 Model B Rev 1.4\x00") == "Raspberry Pi 4 Model B Rev 1.4"
    assert parse_device_tree_model(b"Avnet ZedBoard board\x00") == "Avnet ZedBoard board"
    assert parse_device_tree_model(None) is None and parse_device_tree_model("\x00") is None
    assert parse_cpu_list("0-3,6,8-9\n") == (0, 1, 2, 3, 6, 8, 9)
    assert parse_cpu_list(None) == () and parse_cpu_list("garbage") == ()


# --------------------------------------------------------------------------- cpufreq and masks


def _cpufreq_dump(max_khz: list[int | None], governor: str = "schedutil") -> dict[str, str | None]:
    dump: dict[str, str | None] = {}
    for cpu, khz in enumerate(max_khz):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        dump[f"{base}/cpuinfo_max_freq"] = None if khz is None else f"{khz}\n"
        dump[f"{base}/scaling_cur_freq"] = None if khz is None else str(khz // 2)
        dump[f"{base}/scaling_governor"] = governor
    return dump


def test_clusters_of_a_snapdragon_888_like_4_3_1_layout() -> None:
    # Recorded cpufreq maxima of a 4+3+1 phone (kHz), cpu order scrambled on purpose.
    dump = _cpufreq_dump([1804800] * 4 + [2419200] * 3 + [2841600])
    freqs = parse_cpufreq(dict(reversed(list(dump.items()))))
    assert freqs[7] == CpuFreq(cpu=7, max_khz=2841600, cur_khz=1420800, governor="schedutil")
    clusters = cpu_clusters(freqs)
    assert [(c.cpus, c.max_khz) for c in clusters] == [
        ((0, 1, 2, 3), 1804800),
        ((4, 5, 6), 2419200),
        ((7,), 2841600),
    ]
    assert [c.mask for c in clusters] == ["f", "70", "80"]
    assert clusters[0].governors == ("schedutil",)
    assert derive_core_mask(clusters, "big") == "80"
    assert clusters[2].to_dict()["max_mhz"] == pytest.approx(2841.6)


@pytest.mark.parametrize(
    ("cores", "expected"),
    [("all", None), ("big", "f0"), ("f0", "f0"), ("0xF0", "f0"), ("00c0", "c0"), (" BIG ", "f0")],
)
def test_derive_core_mask(cores: str, expected: str | None) -> None:
    clusters = cpu_clusters(parse_cpufreq(_cpufreq_dump([1800000] * 4 + [2400000] * 4)))
    assert derive_core_mask(clusters, cores) == expected


@pytest.mark.parametrize(
    ("cores", "match"),
    [("fast", "expected 'all', 'big' or a hex"), ("0x", "expected"), ("f0g", "expected"), ("0", "selects no CPU"),
     ("100", "none of the device's CPUs")],
    ids=["word", "bare-0x", "not-hex", "zero", "absent-cpu"],
)  # fmt: skip
def test_derive_core_mask_rejects_garbage(cores: str, match: str) -> None:
    clusters = cpu_clusters(parse_cpufreq(_cpufreq_dump([1800000] * 4 + [2400000] * 4)))
    with pytest.raises(ProfileError, match=match):
        derive_core_mask(clusters, cores)


def test_big_without_cpufreq_means_all_cores() -> None:
    # A container or VM: no cpufreq files at all, or unreadable maxima.
    assert derive_core_mask([], "big") is None
    unknown = cpu_clusters(parse_cpufreq(_cpufreq_dump([None, None])))
    assert unknown == [CpuCluster(cpus=(0, 1), max_khz=None, cur_khz=(None, None), governors=("schedutil",))]
    assert derive_core_mask(unknown, "big") is None
    assert derive_core_mask([], "3") == "3"  # nothing to check a mask against


# --------------------------------------------------------------------------- temperatures and power


def test_thermal_zones_millidegrees_degrees_and_missing() -> None:
    # Recorded sysfs thermal values: millidegrees (most), whole degrees (some drivers), no sensor.
    dump: dict[str, str | None] = {
        "/sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "/sys/class/thermal/thermal_zone0/temp": "45277\n",
        "/sys/class/thermal/thermal_zone1/type": "battery",
        "/sys/class/thermal/thermal_zone1/temp": "38",
        "/sys/class/thermal/thermal_zone2/type": "cpu-thermal",
        "/sys/class/thermal/thermal_zone2/temp": "47000",
        "/sys/class/thermal/thermal_zone3/type": "pmic",
        "/sys/class/thermal/thermal_zone3/temp": None,
        "/sys/class/thermal/thermal_zone10/type": "tsens_tz_sensor0",
        "/sys/class/thermal/thermal_zone10/temp": "-274000",
    }
    zones = parse_thermal_zones(dump)
    assert [z.zone for z in zones] == [0, 1, 2, 3, 10]
    assert zones[0] == ThermalZone(zone=0, type="cpu-thermal", temp_c=pytest.approx(45.277))
    assert zones[1].temp_c == 38.0
    assert zones[3].temp_c is None and zones[4].temp_c is None
    assert temperatures_c(zones) == {
        "cpu-thermal": pytest.approx(45.277),
        "battery": 38.0,
        "cpu-thermal#2": 47.0,
    }


def test_vcgencmd_rpi3_under_voltage_and_throttling() -> None:
    text = fixture("rpi_vcgencmd_rpi3_undervoltage_throttled.txt")
    assert parse_vcgencmd_temp(text) == pytest.approx(38.6)  # temp=38.6'C
    throttled = parse_vcgencmd_throttled(text)  # throttled=0x50005: bits 0, 2, 16, 18
    assert throttled is not None
    assert throttled.raw == 0x50005
    assert throttled.flags == (
        "under_voltage_now",
        "throttled_now",
        "under_voltage_occurred",
        "throttled_occurred",
    )
    assert throttled.now is True
    assert throttled.to_dict()["raw"] == "0x50005"


def test_vcgencmd_second_sample_and_absent() -> None:
    # The same issue's second sample: throttled=0x50000 (only "has occurred" bits).
    later = parse_vcgencmd_throttled("temp=39.2'C\nthrottled=0x50000\ntemp=38.6'C\n")
    assert later is not None
    assert later.flags == ("under_voltage_occurred", "throttled_occurred")
    assert later.now is False
    zero = parse_vcgencmd_throttled("throttled=0x0")
    assert zero is not None and zero.flags == () and not zero.now
    assert parse_vcgencmd_temp("temp=39.2'C") == pytest.approx(39.2)
    assert parse_vcgencmd_temp(None) is None and parse_vcgencmd_throttled("") is None
    assert parse_vcgencmd_temp("VCHI initialization failed\n") is None


@pytest.mark.parametrize(
    ("text", "name", "mode_id"),
    [
        ("NV Power Mode: MAXN\n0\n", "MAXN", 0),  # recorded format (Jetson Nano)
        ("NV Power Mode: 5W\n1\n", "5W", 1),
        ("NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN_SUPER\n2\n", "MAXN_SUPER", 2),
        ("NV Power Mode: 15W", "15W", None),
    ],
)
def test_nvpmodel(text: str, name: str, mode_id: int | None) -> None:
    mode = parse_nvpmodel(text)
    assert mode is not None and (mode.name, mode.mode_id) == (name, mode_id)


def test_nvpmodel_absent() -> None:
    assert parse_nvpmodel(None) is None
    assert parse_nvpmodel("sh: nvpmodel: not found\n") is None


# --------------------------------------------------------------------------- the whole state


def test_state_commands_are_argv_lists() -> None:
    assert STATE_COMMANDS["getprop"] == ("getprop",)
    assert STATE_COMMANDS["battery"] == ("dumpsys", "battery")
    assert STATE_COMMANDS["sysfs"][4:] == STATE_PATHS
    assert all(isinstance(arg, str) for argv in STATE_COMMANDS.values() for arg in argv)


def test_device_state_of_an_android_phone(tmp_path: Path) -> None:
    sysfs = fake_root_dump(
        tmp_path,
        {
            "/proc/cpuinfo": CPUINFO_ANDROID_ARM64,
            "/sys/devices/system/cpu/present": "0-7\n",
            **{
                f"/sys/devices/system/cpu/cpu{n}/cpufreq/{name}": value
                for n, khz in enumerate([1804800] * 4 + [2419200] * 3 + [2841600])
                for name, value in (
                    ("cpuinfo_max_freq", f"{khz}\n"),
                    ("scaling_cur_freq", "300000\n"),
                    ("scaling_governor", "schedutil\n"),
                )
            },
            "/sys/class/thermal/thermal_zone0/type": "cpu-0-0-usr\n",
            "/sys/class/thermal/thermal_zone0/temp": "36500\n",
        },
    )
    state = parse_device_state(
        {
            "sysfs": sysfs,
            "uname": "aarch64\n",
            "getprop": GETPROP_PIXEL6,
            "battery": fixture("android_dumpsys_battery_samsung_galaxy_s24.txt"),
            "vcgencmd_temp": None,
            "vcgencmd_throttled": None,
            "nvpmodel": None,
        }
    )
    assert (state.model, state.manufacturer, state.soc) == ("Pixel 6", "Google", "Google Tensor")
    assert state.abi == "arm64-v8a"
    assert state.os == "Android 14 (SDK 34)"
    assert state.cores == 8
    assert state.core_types == ("Cortex-A55", "Cortex-A78", "Cortex-X1")
    assert [c.cpus for c in state.clusters] == [(0, 1, 2, 3), (4, 5, 6), (7,)]
    assert state.governors == ("schedutil",)
    assert state.temperatures_c == {"cpu-0-0-usr": 36.5, "battery": pytest.approx(35.7)}
    assert state.battery is not None and state.battery.level == 75
    assert state.throttled is None and state.power_mode is None
    assert derive_core_mask(state.clusters, "big") == "80"
    data = json.loads(json.dumps(state.to_dict()))
    assert data["clusters"][2] == {
        "cpus": [7],
        "max_khz": 2841600,
        "cur_khz": [300000],
        "governors": ["schedutil"],
        "max_mhz": 2841.6,
        "mask": "80",
    }


def test_device_state_of_a_raspberry_pi(tmp_path: Path) -> None:
    sysfs = fake_root_dump(
        tmp_path,
        {
            "/proc/cpuinfo": CPUINFO_RPI3,
            "/proc/device-tree/model": b"Raspberry Pi 3 Model B Rev 1.2\x00",
            "/proc/device-tree/compatible": b"raspberrypi,3-model-b\x00brcm,bcm2837\x00",
        },
    )
    vcgencmd = fixture("rpi_vcgencmd_rpi3_undervoltage_throttled.txt")
    state = parse_device_state(
        {"sysfs": sysfs, "uname": "armv7l\n", "vcgencmd_temp": vcgencmd, "vcgencmd_throttled": vcgencmd}
    )
    assert state.model == "Raspberry Pi 3 Model B Rev 1.2"
    assert state.soc == "BCM2835"  # the cpuinfo Hardware line wins over the device tree
    assert state.abi == "armv7l"
    assert state.cores == 2  # no "present" file: the cpuinfo processors
    assert state.clusters == ()
    assert state.temperatures_c == {"soc (vcgencmd)": pytest.approx(38.6)}
    assert state.throttled is not None and state.throttled.now
    assert state.battery is None


def test_device_state_of_this_machine() -> None:
    outputs = {
        name: subprocess.run(list(argv), capture_output=True, text=True, timeout=30).stdout
        for name, argv in STATE_COMMANDS.items()
        if name in ("sysfs", "uname")
    }
    state = parse_device_state(outputs)
    assert state.abi == platform.machine()
    assert state.cores == os.cpu_count()
    assert state.os == "Linux"
    assert state.soc  # an x86 model name or an ARM Hardware line
    json.dumps(state.to_dict())


def test_device_state_of_nothing() -> None:
    state = parse_device_state({})
    assert state.model is None and state.cores is None and state.os is None
    assert state.clusters == () and state.temperatures_c == {}
