"""Parsers for the state of a device: identity, CPU topology, clocks, temperatures, power.

The probe runs the commands in :data:`STATE_COMMANDS` over a transport (local, ssh or adb)
and hands their outputs to :func:`parse_device_state`; each piece has its own parser too.
Many small files (sysfs, procfs) are read in one round trip with :func:`sysfs_read_argv`,
whose output :func:`parse_sysfs_dump` reads back.

Everything a device lacks (no battery, no cpufreq in a container, no ``vcgencmd`` off a
Raspberry Pi, a permission denied) becomes ``None`` or an empty collection, never an
exception. The one function that raises is :func:`derive_core_mask`, on a bad profile value.

Pure functions over text; standard library only (they run on the host).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ProfileError

logger = logging.getLogger(__name__)

__all__ = [
    "SYSFS_SCRIPT",
    "STATE_PATHS",
    "STATE_COMMANDS",
    "AndroidProps",
    "BatteryState",
    "CpuCluster",
    "CpuFreq",
    "CpuInfo",
    "DeviceState",
    "PowerMode",
    "ThermalZone",
    "Throttled",
    "android_props",
    "cpu_clusters",
    "derive_core_mask",
    "parse_cpu_list",
    "parse_cpufreq",
    "parse_cpuinfo",
    "parse_device_state",
    "parse_device_tree_model",
    "parse_dumpsys_battery",
    "parse_getprop",
    "parse_nvpmodel",
    "parse_sysfs_dump",
    "parse_thermal_zones",
    "parse_vcgencmd_temp",
    "parse_vcgencmd_throttled",
    "sysfs_read_argv",
    "temperatures_c",
]


# --------------------------------------------------------------------------- reading many files

_BEGIN = "@@hwnas-sysfs-begin@@"
_END = "@@hwnas-sysfs-end@@"

#: POSIX sh (dash, bash, busybox, Android's mksh/toybox). Each positional argument is a path or a
#: glob pattern (``IFS`` is empty, so an unquoted ``$a`` is glob-expanded but never word-split);
#: an unmatched pattern stays literal and reads as missing. Paths only ever arrive as arguments:
#: nothing is interpolated into the script. For each path it prints a begin line, the file's
#: bytes, a newline, and an end line saying ``ok`` or ``missing`` (absent, unreadable, a
#: directory, or a read error such as EIO from a sensor).
SYSFS_SCRIPT = (
    "IFS=''\n"
    'for a in "$@"; do\n'
    "  for p in $a; do\n"
    f"    printf '%s %s\\n' '{_BEGIN}' \"$p\"\n"
    '    if cat "$p" 2>/dev/null; then s=ok; else s=missing; fi\n'
    f"    printf '\\n%s %s\\n' '{_END}' \"$s\"\n"
    "  done\n"
    "done\n"
)

_CPU = "/sys/devices/system/cpu"
_THERMAL = "/sys/class/thermal"

#: Files (glob patterns) that describe a Linux or Android device; a device lacks some of them.
STATE_PATHS: tuple[str, ...] = (
    "/proc/cpuinfo",
    "/proc/device-tree/model",
    "/proc/device-tree/compatible",
    "/sys/class/dmi/id/sys_vendor",
    "/sys/class/dmi/id/product_name",
    f"{_CPU}/present",
    f"{_CPU}/cpu[0-9]*/cpufreq/cpuinfo_max_freq",
    f"{_CPU}/cpu[0-9]*/cpufreq/scaling_cur_freq",
    f"{_CPU}/cpu[0-9]*/cpufreq/scaling_governor",
    f"{_THERMAL}/thermal_zone[0-9]*/type",
    f"{_THERMAL}/thermal_zone[0-9]*/temp",
)


def sysfs_read_argv(paths: Iterable[str]) -> list[str]:
    """An argv that prints many small files in one command, for :func:`parse_sysfs_dump`.

    ``["sh", "-c", SYSFS_SCRIPT, "hwnas-probe", *paths]``: the paths travel as positional
    arguments, so no quoting of them is needed anywhere. Paths must be absolute and free of
    newlines (they are our own constants); glob patterns (``cpu[0-9]*``) are expanded on the
    device.

    Raises:
        ValueError: a path is not absolute or holds a newline or NUL.
    """
    paths = list(paths)
    for path in paths:
        if not path.startswith("/") or "\n" in path or "\0" in path:
            raise ValueError(f"sysfs path must be absolute and on one line, got {path!r}")
    return ["sh", "-c", SYSFS_SCRIPT, "hwnas-probe", *paths]


def parse_sysfs_dump(text: str) -> dict[str, str | None]:
    """Read the output of :func:`sysfs_read_argv`: ``{path: content or None}``.

    Content keeps the file's bytes except trailing newlines (a NUL-terminated device-tree
    string keeps its NUL); ``None`` for a file that was missing or unreadable, or whose dump was
    cut off before its end line.
    """
    out: dict[str, str | None] = {}
    path: str | None = None
    body: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(_BEGIN + " "):
            if path is not None:  # previous entry never ended (cannot happen unless cut)
                out[path] = None
            path, body = line[len(_BEGIN) + 1 :], []
        elif line.startswith(_END + " ") and path is not None:
            status = line[len(_END) + 1 :].strip()
            out[path] = "\n".join(body).rstrip("\n") if status == "ok" else None
            path, body = None, []
        elif path is not None:
            body.append(line)
    if path is not None:
        out[path] = None
    return out


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip().strip("\0").strip())
    except ValueError:
        return None


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = value.replace("\0", "").strip()
    return cleaned or None


def _mask(cpus: Iterable[int]) -> str:
    return format(sum(1 << cpu for cpu in set(cpus)), "x")


# --------------------------------------------------------------------------- Android


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` output (``[ro.product.model]: [Pixel 6]`` lines) as a dict.

    A value that spans lines (rare) is joined with newlines; other lines are skipped.
    """
    props: dict[str, str] = {}
    key: str | None = None
    parts: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if key is not None:  # inside a multi-line value
            if line.endswith("]"):
                parts.append(line[:-1])
                props[key] = "\n".join(parts)
                key = None
            else:
                parts.append(line)
            continue
        m = re.match(r"^\[([^\]]+)\]: \[(.*)$", line)
        if not m:
            continue
        if m.group(2).endswith("]"):
            props[m.group(1)] = m.group(2)[:-1]
        else:
            key, parts = m.group(1), [m.group(2)]
    return props


@dataclass(frozen=True)
class AndroidProps:
    """The identity fields of an Android device, picked from ``getprop``; None where unset."""

    model: str | None = None
    manufacturer: str | None = None
    brand: str | None = None
    device: str | None = None
    board: str | None = None
    platform: str | None = None
    hardware: str | None = None
    soc_manufacturer: str | None = None
    soc_model: str | None = None
    abi: str | None = None
    abis: tuple[str, ...] = ()
    android_version: str | None = None
    sdk: int | None = None
    fingerprint: str | None = None

    @property
    def soc(self) -> str | None:
        """``SM8650`` style name with its maker where known (Android 12+), else the platform."""
        if self.soc_model:
            maker = self.soc_manufacturer
            return f"{maker} {self.soc_model}" if maker and maker not in self.soc_model else self.soc_model
        return self.platform or self.hardware or self.board

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["abis"] = list(self.abis)
        out["soc"] = self.soc
        return out


def android_props(props: Mapping[str, str]) -> AndroidProps:
    """Pick model, maker, SoC, ABI and OS version from a ``getprop`` dict."""

    def get(*keys: str) -> str | None:
        for key in keys:
            value = (props.get(key) or "").strip()
            if value:
                return value
        return None

    abilist = get("ro.product.cpu.abilist") or ""
    return AndroidProps(
        model=get("ro.product.model", "ro.product.vendor.model"),
        manufacturer=get("ro.product.manufacturer", "ro.product.vendor.manufacturer"),
        brand=get("ro.product.brand"),
        device=get("ro.product.device"),
        board=get("ro.product.board"),
        platform=get("ro.board.platform"),
        hardware=get("ro.hardware"),
        soc_manufacturer=get("ro.soc.manufacturer"),
        soc_model=get("ro.soc.model"),
        abi=get("ro.product.cpu.abi"),
        abis=tuple(a for a in abilist.split(",") if a),
        android_version=get("ro.build.version.release"),
        sdk=_int(get("ro.build.version.sdk")),
        fingerprint=get("ro.build.fingerprint"),
    )


_BATTERY_STATUS = {1: "unknown", 2: "charging", 3: "discharging", 4: "not charging", 5: "full"}
_BATTERY_HEALTH = {
    1: "unknown",
    2: "good",
    3: "overheat",
    4: "dead",
    5: "over voltage",
    6: "unspecified failure",
    7: "cold",
}
_PLUGGED_KEYS = (
    ("AC powered", "ac"),
    ("USB powered", "usb"),
    ("Wireless powered", "wireless"),
    ("Dock powered", "dock"),
)


@dataclass(frozen=True)
class BatteryState:
    """``dumpsys battery``'s current state. ``temperature_c`` in °C, ``voltage_mv`` in mV,
    ``level`` out of ``scale`` (usually 100); ``plugged`` lists the live power sources."""

    level: int | None = None
    scale: int | None = None
    status: str | None = None
    health: str | None = None
    temperature_c: float | None = None
    voltage_mv: int | None = None
    present: bool | None = None
    technology: str | None = None
    plugged: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plugged"] = list(self.plugged)
        return out


def parse_dumpsys_battery(text: str) -> BatteryState | None:
    """Parse ``dumpsys battery``; None if there is no ``Current Battery Service state:`` block.

    Only that block is read (up to its first blank line): vendor log sections after it
    (Samsung's ``[BattActionChangedLogBuffer]`` lines such as ``level:74, ... temperature:362``)
    are history, not the current values. Keys are matched exactly and the first occurrence wins.
    """
    values: dict[str, str] = {}
    inside = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if not inside:
            inside = line.strip() == "Current Battery Service state:"
            continue
        if not line.strip():
            break
        key, sep, value = line.strip().partition(":")
        key = key.strip()
        if sep and key not in values:
            values[key] = value.strip()
    if not inside:
        return None

    def code(key: str, names: Mapping[int, str]) -> str | None:
        number = _int(values.get(key))
        return None if number is None else names.get(number, str(number))

    tenths = _int(values.get("temperature"))
    present = values.get("present")
    return BatteryState(
        level=_int(values.get("level")),
        scale=_int(values.get("scale")),
        status=code("status", _BATTERY_STATUS),
        health=code("health", _BATTERY_HEALTH),
        temperature_c=None if tenths is None else tenths / 10.0,
        voltage_mv=_int(values.get("voltage")),
        present=None if present is None else present == "true",
        technology=values.get("technology") or None,
        plugged=tuple(name for key, name in _PLUGGED_KEYS if values.get(key) == "true"),
    )


# --------------------------------------------------------------------------- Linux CPU

# CPU part -> core name for implementer 0x41 (Arm) and 0x51 (Qualcomm), after the Linux kernel's
# arch/arm64/include/asm/cputype.h.
_ARM_PARTS = {
    0xC05: "Cortex-A5", 0xC07: "Cortex-A7", 0xC08: "Cortex-A8", 0xC09: "Cortex-A9",
    0xC0D: "Cortex-A12", 0xC0E: "Cortex-A17", 0xC0F: "Cortex-A15",
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD06: "Cortex-A65",
    0xD07: "Cortex-A57", 0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD0E: "Cortex-A76AE",
    0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1",
    0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD48: "Cortex-X2", 0xD49: "Neoverse-N2",
    0xD4B: "Cortex-A78C", 0xD4C: "Cortex-X1C", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4",
    0xD84: "Neoverse-V3", 0xD85: "Cortex-X925", 0xD87: "Cortex-A725",
}  # fmt: skip
_QCOM_PARTS = {
    0x800: "Kryo-2xx-Gold", 0x801: "Kryo-2xx-Silver", 0x802: "Kryo-3xx-Gold",
    0x803: "Kryo-3xx-Silver", 0x804: "Kryo-4xx-Gold", 0x805: "Kryo-4xx-Silver",
}  # fmt: skip


def _core_name(implementer: str | None, part: str | None) -> str | None:
    impl, number = _int_hex(implementer), _int_hex(part)
    if number is None:
        return None
    if impl in (None, 0x41):
        return _ARM_PARTS.get(number)
    if impl == 0x51:
        return _QCOM_PARTS.get(number)
    return None


def _int_hex(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says, on x86 and ARM alike; None where a kernel omits it.

    ``processors`` counts ``processor : N`` entries (online CPUs); ``model_name`` is
    ``model name`` (x86, newer ARM kernels) or the old ARM ``Processor`` line; ``hardware``
    is the ARM ``Hardware`` line (``BCM2835``, ``Qualcomm Technologies, Inc SM8250``); ``model``
    the Raspberry Pi ``Model`` line. ``parts`` maps a CPU to its ``CPU part`` and ``core_names``
    to the core it names (``Cortex-A55``).
    """

    processors: int
    model_name: str | None = None
    hardware: str | None = None
    model: str | None = None
    parts: dict[int, str] = field(default_factory=dict)
    core_names: dict[int, str] = field(default_factory=dict)

    @property
    def core_types(self) -> tuple[str, ...]:
        """Distinct core names in CPU order, e.g. ``("Cortex-A55", "Cortex-A76")``."""
        return tuple(dict.fromkeys(self.core_names[cpu] for cpu in sorted(self.core_names)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["core_types"] = list(self.core_types)
        return out


def parse_cpuinfo(text: str | None) -> CpuInfo | None:
    """Parse ``/proc/cpuinfo``; None for missing or empty text."""
    if not text or not text.strip():
        return None
    processors: list[int] = []
    first: dict[str, str] = {}
    parts: dict[int, str] = {}
    implementers: dict[int, str] = {}
    current: int | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            current = int(value)
            processors.append(current)
            continue
        first.setdefault(key, value)
        if current is not None and key == "CPU part":
            parts[current] = value
        elif current is not None and key == "CPU implementer":
            implementers[current] = value
    names = {cpu: name for cpu, part in parts.items() if (name := _core_name(implementers.get(cpu), part))}
    return CpuInfo(
        processors=len(processors),
        model_name=first.get("model name") or first.get("Processor") or first.get("cpu model") or None,
        hardware=first.get("Hardware") or None,
        model=first.get("Model") or None,
        parts=parts,
        core_names=names,
    )


def parse_device_tree_model(raw: str | bytes | None) -> str | None:
    """``/proc/device-tree/model`` (a NUL-terminated string) as text; None if absent or empty."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return _text(raw.split("\0")[0])


def parse_cpu_list(text: str | None) -> tuple[int, ...]:
    """A kernel CPU list (``0-3,6,8-9``, as in ``/sys/devices/system/cpu/present``); () if unreadable."""
    cpus: list[int] = []
    for chunk in (_text(text) or "").split(","):
        low, dash, high = chunk.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return ()
        cpus.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return tuple(sorted(set(cpus)))


@dataclass(frozen=True)
class CpuFreq:
    """One CPU's cpufreq state; kHz as the kernel reports it, None where not readable."""

    cpu: int
    max_khz: int | None = None
    cur_khz: int | None = None
    governor: str | None = None


_CPUFREQ_RE = re.compile(
    r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/(cpuinfo_max_freq|scaling_cur_freq|scaling_governor)$"
)


def parse_cpufreq(dump: Mapping[str, str | None]) -> dict[int, CpuFreq]:
    """Per-CPU max/current frequency and governor from a :func:`parse_sysfs_dump` result."""
    fields: dict[int, dict[str, str | None]] = {}
    for path, value in dump.items():
        m = _CPUFREQ_RE.match(path)
        if m:
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return {
        cpu: CpuFreq(
            cpu=cpu,
            max_khz=_int(f.get("cpuinfo_max_freq")),
            cur_khz=_int(f.get("scaling_cur_freq")),
            governor=_text(f.get("scaling_governor")),
        )
        for cpu, f in sorted(fields.items())
    }


@dataclass(frozen=True)
class CpuCluster:
    """CPUs that share a maximum frequency (a cluster: LITTLE, mid, big), kHz."""

    cpus: tuple[int, ...]
    max_khz: int | None
    cur_khz: tuple[int | None, ...] = ()
    governors: tuple[str, ...] = ()

    @property
    def mask(self) -> str:
        """The taskset hex mask of these CPUs, e.g. ``f0`` for CPUs 4-7."""
        return _mask(self.cpus)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(cpus=list(self.cpus), cur_khz=list(self.cur_khz), governors=list(self.governors))
        out["max_mhz"] = None if self.max_khz is None else self.max_khz / 1000.0
        out["mask"] = self.mask
        return out


def cpu_clusters(freqs: Mapping[int, CpuFreq]) -> list[CpuCluster]:
    """Group CPUs with equal ``cpuinfo_max_freq``; ordered by their first CPU.

    CPUs whose maximum is unreadable form one cluster with ``max_khz=None``.
    """
    groups: dict[int | None, list[CpuFreq]] = {}
    for cpu in sorted(freqs):
        groups.setdefault(freqs[cpu].max_khz, []).append(freqs[cpu])
    clusters = [
        CpuCluster(
            cpus=tuple(f.cpu for f in members),
            max_khz=max_khz,
            cur_khz=tuple(f.cur_khz for f in members),
            governors=tuple(dict.fromkeys(f.governor for f in members if f.governor)),
        )
        for max_khz, members in groups.items()
    ]
    return sorted(clusters, key=lambda c: c.cpus[0])


def derive_core_mask(clusters: Sequence[CpuCluster], cores: str) -> str | None:
    """The taskset mask for a profile's ``cores`` setting.

    ``all`` gives None (no pinning); ``big`` the mask of the cluster with the highest maximum
    frequency (CPUs 4-7 give ``"f0"``; None, with a warning, when the device reports no
    frequencies); a hex mask (``f0``, ``0xF0``) comes back normalised (lower case, no ``0x``).

    Raises:
        ProfileError: ``cores`` is none of these, is a zero mask, or (when the clusters are
            known) selects no CPU the device has.
    """
    value = cores.strip().lower()
    if value == "all":
        return None
    if value == "big":
        known = [c for c in clusters if c.max_khz is not None]
        if not known:
            logger.warning("cores: big: the device reports no CPU frequencies; using all cores")
            return None
        return max(known, key=lambda c: c.max_khz or 0).mask
    digits = value[2:] if value.startswith("0x") else value
    if not digits or not re.fullmatch(r"[0-9a-f]+", digits):
        raise ProfileError(f"cores: expected 'all', 'big' or a hex CPU mask such as 'f0', got {cores!r}")
    mask = int(digits, 16)
    if mask == 0:
        raise ProfileError(f"cores: the mask {cores!r} selects no CPU")
    present = {cpu for cluster in clusters for cpu in cluster.cpus}
    if present and not any(mask >> cpu & 1 for cpu in present):
        cpus = ",".join(str(cpu) for cpu in sorted(present))
        raise ProfileError(f"cores: the mask {cores!r} selects none of the device's CPUs ({cpus})")
    return format(mask, "x")


# --------------------------------------------------------------------------- temperatures


@dataclass(frozen=True)
class ThermalZone:
    """One ``/sys/class/thermal/thermal_zoneN``: its ``type`` and temperature in °C."""

    zone: int
    type: str | None
    temp_c: float | None


_THERMAL_RE = re.compile(r"^/sys/class/thermal/thermal_zone(\d+)/(type|temp)$")


def _celsius(raw: str | None) -> float | None:
    """Millidegrees (the norm) or, where a driver reports whole degrees (< 1000), °C."""
    value = _int(raw)
    if value is None:
        return None
    celsius = value / 1000.0 if abs(value) >= 1000 else float(value)
    return celsius if -60.0 <= celsius <= 250.0 else None  # -274000 and the like: no sensor


def parse_thermal_zones(dump: Mapping[str, str | None]) -> list[ThermalZone]:
    """Thermal zones from a :func:`parse_sysfs_dump` result, by zone number."""
    zones: dict[int, dict[str, str | None]] = {}
    for path, value in dump.items():
        m = _THERMAL_RE.match(path)
        if m:
            zones.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return [
        ThermalZone(zone=n, type=_text(z.get("type")), temp_c=_celsius(z.get("temp")))
        for n, z in sorted(zones.items())
    ]


def temperatures_c(zones: Iterable[ThermalZone]) -> dict[str, float]:
    """``{zone type: °C}`` for zones with a reading; a repeated type gets ``#N`` (zone number)."""
    out: dict[str, float] = {}
    for zone in zones:
        if zone.temp_c is None:
            continue
        name = zone.type or f"thermal_zone{zone.zone}"
        out[name if name not in out else f"{name}#{zone.zone}"] = zone.temp_c
    return out


def parse_vcgencmd_temp(text: str | None) -> float | None:
    """Raspberry Pi ``vcgencmd measure_temp`` (``temp=38.6'C``) in °C; the first reading."""
    m = re.search(r"temp=([-+]?\d+(?:\.\d+)?)'C", text or "")
    return float(m.group(1)) if m else None


# Bits of ``vcgencmd get_throttled`` (Raspberry Pi firmware documentation).
_THROTTLE_BITS = (
    (0, "under_voltage_now"),
    (1, "arm_freq_capped_now"),
    (2, "throttled_now"),
    (3, "soft_temp_limit_now"),
    (16, "under_voltage_occurred"),
    (17, "arm_freq_capped_occurred"),
    (18, "throttled_occurred"),
    (19, "soft_temp_limit_occurred"),
)


@dataclass(frozen=True)
class Throttled:
    """``vcgencmd get_throttled`` decoded: ``raw`` bits and the names of those set."""

    raw: int
    flags: tuple[str, ...]

    @property
    def now(self) -> bool:
        """Under-voltage, capping, throttling or the soft limit is active right now."""
        return bool(self.raw & 0xF)

    def to_dict(self) -> dict[str, Any]:
        return {"raw": hex(self.raw), "flags": list(self.flags), "now": self.now}


def parse_vcgencmd_throttled(text: str | None) -> Throttled | None:
    """Raspberry Pi ``vcgencmd get_throttled`` (``throttled=0x50005``); None if absent."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text or "")
    if not m:
        return None
    raw = int(m.group(1), 0)
    return Throttled(raw=raw, flags=tuple(name for bit, name in _THROTTLE_BITS if raw >> bit & 1))


@dataclass(frozen=True)
class PowerMode:
    """NVIDIA Jetson ``nvpmodel -q``: the power mode's name and id."""

    name: str
    mode_id: int | None


def parse_nvpmodel(text: str | None) -> PowerMode | None:
    """Jetson ``nvpmodel -q`` (``NV Power Mode: MAXN`` then the id on its own line)."""
    lines = [line.strip() for line in (text or "").replace("\r\n", "\n").split("\n")]
    for i, line in enumerate(lines):
        m = re.match(r"^NV Power Mode:\s*(\S.*)$", line)
        if m:
            mode_id = next((int(nxt) for nxt in lines[i + 1 :] if nxt.isdigit()), None)
            return PowerMode(name=m.group(1).strip(), mode_id=mode_id)
    return None


# --------------------------------------------------------------------------- all together

#: Commands the probe runs, by name; a command a device lacks simply fails (output None).
STATE_COMMANDS: dict[str, tuple[str, ...]] = {
    "sysfs": tuple(sysfs_read_argv(STATE_PATHS)),
    "uname": ("uname", "-m"),
    "getprop": ("getprop",),
    "battery": ("dumpsys", "battery"),
    "vcgencmd_temp": ("vcgencmd", "measure_temp"),
    "vcgencmd_throttled": ("vcgencmd", "get_throttled"),
    "nvpmodel": ("nvpmodel", "-q"),
}


@dataclass(frozen=True)
class DeviceState:
    """A device's fingerprint and current state, from :func:`parse_device_state`."""

    model: str | None = None
    manufacturer: str | None = None
    soc: str | None = None
    abi: str | None = None
    os: str | None = None
    cores: int | None = None
    core_types: tuple[str, ...] = ()
    clusters: tuple[CpuCluster, ...] = ()
    governors: tuple[str, ...] = ()
    temperatures_c: dict[str, float] = field(default_factory=dict)
    battery: BatteryState | None = None
    throttled: Throttled | None = None
    power_mode: PowerMode | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "manufacturer": self.manufacturer,
            "soc": self.soc,
            "abi": self.abi,
            "os": self.os,
            "cores": self.cores,
            "core_types": list(self.core_types),
            "clusters": [c.to_dict() for c in self.clusters],
            "governors": list(self.governors),
            "temperatures_c": dict(self.temperatures_c),
            "battery": None if self.battery is None else self.battery.to_dict(),
            "throttled": None if self.throttled is None else self.throttled.to_dict(),
            "power_mode": None if self.power_mode is None else asdict(self.power_mode),
        }


def _soc_from_compatible(raw: str | None) -> str | None:
    # "raspberrypi,4-model-b\0brcm,bcm2711\0": the last entry names the SoC.
    entries = [e for e in (raw or "").split("\0") if e.strip()]
    return entries[-1].split(",", 1)[-1].strip() if entries else None


def parse_device_state(outputs: Mapping[str, str | None]) -> DeviceState:
    """Combine the outputs of :data:`STATE_COMMANDS` (``None`` for a command that failed)."""
    dump = parse_sysfs_dump(outputs.get("sysfs") or "")
    props = parse_getprop(outputs.get("getprop") or "")
    android = android_props(props) if props else None
    cpuinfo = parse_cpuinfo(dump.get("/proc/cpuinfo"))
    freqs = parse_cpufreq(dump)
    clusters = tuple(cpu_clusters(freqs))
    temps = temperatures_c(parse_thermal_zones(dump))
    if (pi_temp := parse_vcgencmd_temp(outputs.get("vcgencmd_temp"))) is not None:
        temps.setdefault("soc (vcgencmd)", pi_temp)
    battery = parse_dumpsys_battery(outputs.get("battery") or "")
    if battery is not None and battery.temperature_c is not None:
        temps.setdefault("battery", battery.temperature_c)

    present = parse_cpu_list(dump.get(f"{_CPU}/present"))
    cores = len(present) or (cpuinfo.processors if cpuinfo else 0) or len(freqs) or None
    uname = _text(outputs.get("uname"))
    dt_model = parse_device_tree_model(dump.get("/proc/device-tree/model"))
    dmi_model = _text(dump.get("/sys/class/dmi/id/product_name"))

    if android is not None:
        model, maker, soc, abi = android.model, android.manufacturer, android.soc, android.abi
        os_name = f"Android {android.android_version}" if android.android_version else "Android"
        os_name += f" (SDK {android.sdk})" if android.sdk is not None else ""
    else:
        model = dt_model or (cpuinfo.model if cpuinfo else None) or dmi_model
        maker = _text(dump.get("/sys/class/dmi/id/sys_vendor"))
        soc = (cpuinfo.hardware if cpuinfo else None) or _soc_from_compatible(
            dump.get("/proc/device-tree/compatible")
        )
        soc = soc or (cpuinfo.model_name if cpuinfo else None)
        abi, os_name = None, None
    return DeviceState(
        model=model,
        manufacturer=maker,
        soc=soc,
        abi=abi or (uname.split()[0] if uname else None),
        os=os_name or ("Linux" if dump else None),
        cores=cores,
        core_types=cpuinfo.core_types if cpuinfo else (),
        clusters=clusters,
        governors=tuple(dict.fromkeys(g for c in clusters for g in c.governors)),
        temperatures_c=temps,
        battery=battery,
        throttled=parse_vcgencmd_throttled(outputs.get("vcgencmd_throttled")),
        power_mode=parse_nvpmodel(outputs.get("nvpmodel")),
    )
