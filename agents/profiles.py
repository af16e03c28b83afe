"""Device profiles: ``device_profiles/NAME.yaml``, validated field by field.

A profile names a device, how to reach it (exactly one transport), which runtime
measures on it and how. Secrets never live in a profile: an SSH password comes only
from the environment variable the profile names.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import runtimes
from .errors import ProfileError
from .measure_settings import PROFILE_FIELDS as MEASURE_FIELDS
from .measure_settings import MeasureSettings
from .measure_settings import from_mapping as measure_from_mapping

log = logging.getLogger(__name__)

RUNTIMES = runtimes.NAMES
PYTHON_RUNTIMES = runtimes.PYTHON_RUNTIMES
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "device_profiles"

# Allowed keys of each transport's settings, with their types. Validation names the field.
TRANSPORT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "local": {},
    "ssh": {
        "host": (str,),
        "port": (int,),
        "user": (str,),
        "key_file": (str,),
        "known_hosts": (str,),
        "trust_on_first_use": (bool,),
        "password_env": (str,),
        "connect_timeout_s": (int, float),
        "keepalive_s": (int, float),
        "keepalive_count": (int,),
    },
    "adb": {
        "serial": (str,),
        "host": (str,),
        "port": (int,),
        "key_file": (str,),
        "connect_timeout_s": (int, float),
        "keepalive_s": (int, float),
        "keepalive_count": (int,),
    },
}
SECRET_KEYS = ("password", "passphrase", "secret", "token")
#: On the device: per user (``~`` is the device user's home), made 0700, refused if a symlink or someone else's.
DEFAULT_WORKDIR = "~/.cache/hwnas"
_WORKDIR_RE = re.compile(r"(/|~/)[^\x00-\x1f]*|~")


def config_dir() -> Path:
    """The user's hwnas config folder (``$XDG_CONFIG_HOME/hwnas``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hwnas"


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile."""

    name: str
    transport: str
    transport_settings: dict[str, Any]
    runtime: str = "onnxruntime"
    python: str = "python3"
    benchmark_binary: str | None = None
    push_benchmark_binary: str | None = None
    threads: int = 1
    cores: str = "all"
    workdir: str = DEFAULT_WORKDIR
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    path: Path | None = None

    @property
    def lut_dir(self) -> Path:
        """Where this device's LUTs live: ``device_profiles/NAME/`` beside the YAML."""
        if self.path is not None and self.path.parent.resolve() != PACKAGED_DIR.resolve():
            return self.path.parent / self.name
        return Path("device_profiles") / self.name

    @property
    def address(self) -> str:
        s = self.transport_settings
        if self.transport == "ssh":
            return f"{s.get('user', 'root')}@{s.get('host')}:{s.get('port', 22)}"
        if self.transport == "adb":
            return str(s.get("serial") or f"{s.get('host')}:{s.get('port', 5555)}")
        return "localhost"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": {self.transport: dict(self.transport_settings)},
            "runtime": self.runtime,
            "python": self.python,
            "benchmark_binary": self.benchmark_binary,
            "push_benchmark_binary": self.push_benchmark_binary,
            "threads": self.threads,
            "cores": self.cores,
            "workdir": self.workdir,
            "measure": {k: v for k, v in self.measure.to_dict().items() if k in MEASURE_FIELDS},
        }

    def with_overrides(self, **changes: Any) -> DeviceProfile:
        data = self.to_dict()
        for key, value in changes.items():
            if value is not None:
                data[key] = value
        return parse_profile(data, source=str(self.path or self.name), path=self.path)


def _err(source: str, fieldname: str, expected: str, got: Any) -> ProfileError:
    return ProfileError(f"{source}: field {fieldname!r}: expected {expected}, got {got!r}")


def _unknown(source: str, where: str, key: str, allowed: list[str]) -> ProfileError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ProfileError(f"{source}: unknown field {where}{key!r}{hint}; allowed: {', '.join(sorted(allowed))}")


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always with fullmatch: "$" lets "name\n" through
_MASK_RE = re.compile(r"^(0x)?[0-9a-fA-F]{1,16}$")


def parse_profile(data: Any, *, source: str, path: Path | None = None) -> DeviceProfile:
    """Validate a profile mapping; errors name the file and the field."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: expected a YAML mapping of profile fields, got {type(data).__name__}")
    allowed = ["name", "transport", "runtime", "python", "benchmark_binary", "push_benchmark_binary", "threads", "cores",
               "workdir", "measure"]
    for key in data:
        if key not in allowed:
            raise _unknown(source, "", str(key), allowed)
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _err(source, "name", "a name of letters, digits, '.', '_' or '-' (at most 64)", name)
    transport = data.get("transport", {"local": {}})
    if isinstance(transport, str):
        transport = {transport: {}}
    if not isinstance(transport, dict) or len(transport) != 1:
        raise _err(source, "transport", "exactly one of local: {}, ssh: {...}, adb: {...}", transport)
    kind, settings = next(iter(transport.items()))
    if kind not in TRANSPORT_FIELDS:
        close = difflib.get_close_matches(str(kind), list(TRANSPORT_FIELDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileError(f"{source}: field 'transport': unknown transport {kind!r}{hint}; expected one of local, ssh, adb")
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise _err(source, f"transport.{kind}", "a mapping", settings)
    fields = TRANSPORT_FIELDS[kind]
    for key, value in settings.items():
        if any(s in str(key).lower() for s in SECRET_KEYS) and key != "password_env":
            raise ProfileError(
                f"{source}: field 'transport.{kind}.{key}': secrets are never read from a profile; "
                "put the password in an environment variable and name it with 'password_env'"
            )
        if key not in fields:
            raise _unknown(source, f"transport.{kind}.", str(key), list(fields))
        types = fields[key]
        if isinstance(value, bool) and bool not in types:
            raise _err(source, f"transport.{kind}.{key}", "/".join(t.__name__ for t in types), value)
        if not isinstance(value, types):
            raise _err(source, f"transport.{kind}.{key}", "/".join(t.__name__ for t in types), value)
        if key == "port" and not 0 < value < 65536:
            raise _err(source, f"transport.{kind}.port", "a port number in [1, 65535]", value)
    if kind == "ssh" and not settings.get("host"):
        raise _err(source, "transport.ssh.host", "a host name or address", settings.get("host"))
    if kind == "adb" and not (settings.get("serial") or settings.get("host")):
        raise ProfileError(f"{source}: field 'transport.adb': expected 'serial' (USB) or 'host' (adb over TCP)")
    runtime = data.get("runtime", "onnxruntime")
    if runtime not in RUNTIMES:
        close = difflib.get_close_matches(str(runtime), RUNTIMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileError(f"{source}: field 'runtime': {runtime!r} is not one of {', '.join(RUNTIMES)}{hint}")
    python = data.get("python", "python3")
    if not isinstance(python, str) or not python.strip():
        raise _err(source, "python", "an interpreter name or path", python)
    binary = data.get("benchmark_binary")
    if binary is not None and not isinstance(binary, str):
        raise _err(source, "benchmark_binary", "a path", binary)
    if binary is not None and not binary.startswith("/"):
        raise _err(source, "benchmark_binary", "an absolute path ON THE DEVICE (a local file to send goes in "
                   "'push_benchmark_binary')", binary)
    if runtime in ("tflite-benchmark", "onnxruntime-perf-test") and not binary:
        raise _err(source, "benchmark_binary", f"the path of the benchmark program on the device (runtime {runtime})", binary)
    push_binary = data.get("push_benchmark_binary")
    if push_binary is not None and (not isinstance(push_binary, str) or not push_binary.strip()):
        raise _err(source, "push_benchmark_binary", "the path of a local executable to send to benchmark_binary", push_binary)
    if push_binary is not None and not binary:
        raise _err(source, "benchmark_binary", "the path on the device that push_benchmark_binary is sent to", binary)
    threads = data.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise _err(source, "threads", "an integer >= 1", threads)
    cores = str(data.get("cores", "all"))
    if cores not in ("all", "big") and not _MASK_RE.match(cores):
        raise _err(source, "cores", "all, big or a hex CPU mask such as f0", cores)
    workdir = data.get("workdir", DEFAULT_WORKDIR)
    if not isinstance(workdir, str) or not _WORKDIR_RE.fullmatch(workdir) or "/../" in f"{workdir}/":
        raise _err(source, "workdir", "an absolute path on the device, or one under '~/' (the device user's home)",
                   workdir)
    measure = measure_from_mapping(data.get("measure") or {}, source=source)
    return DeviceProfile(
        name=name,
        transport=kind,
        transport_settings=dict(settings),
        runtime=runtime,
        python=python,
        benchmark_binary=binary,
        push_benchmark_binary=push_binary,
        threads=threads,
        cores=cores,
        workdir=workdir,
        measure=measure,
        path=path,
    )


def profile_search_path() -> list[Path]:
    return [Path("device_profiles"), config_dir() / "device_profiles", PACKAGED_DIR]


def load_profile(name_or_path: str) -> DeviceProfile:
    """Find a profile by name (./device_profiles, the user's config, the packaged ones) or path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise ProfileError(f"{name_or_path}: no such device profile file")
        return _load_file(candidate)
    for folder in profile_search_path():
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name_or_path}{suffix}"
            if path.is_file():
                return _load_file(path)
    known = sorted(p.name for p in list_profiles())
    close = difflib.get_close_matches(name_or_path, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known profiles: {', '.join(known) or 'none'}"
    raise ProfileError(f"unknown device {name_or_path!r}{hint}")


def _load_file(path: Path) -> DeviceProfile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{path}: not valid YAML{where}") from exc
    profile = parse_profile(data, source=str(path), path=path)
    _warn_if_risky(profile, path)
    return profile


_WARNED: set[tuple[str, str]] = set()


def _warn_if_risky(profile: DeviceProfile, path: Path) -> None:
    """Warn (once per file and setting) when a profile of the current folder, which a cloned repository or a
    pull request can bring, trusts unknown host keys or sends a local file from outside the current folder."""
    here = Path.cwd().resolve()
    try:
        from_here = path.resolve().is_relative_to(here) and path.resolve().parent != PACKAGED_DIR.resolve()
    except OSError:
        return
    if not from_here:
        return
    risks = []
    if profile.transport_settings.get("trust_on_first_use"):
        risks.append(("trust_on_first_use", "turns on trust_on_first_use: an unknown SSH host key is accepted "
                      f"for {profile.transport_settings.get('host')!r}"))
    push = profile.push_benchmark_binary
    if push is not None:
        target = Path(push).expanduser()
        target = (target if target.is_absolute() else here / target).resolve()
        if not target.is_relative_to(here):
            risks.append(("push_benchmark_binary", f"sends {target}, a file outside {here}, to the device"))
    for key, what in risks:
        if (str(path.resolve()), key) not in _WARNED:
            _WARNED.add((str(path.resolve()), key))
            log.warning("CHECK THIS PROFILE: %s, from the current folder, %s; use it only if you trust where it came from",
                        path, what)


def push_binary_path(profile: DeviceProfile) -> Path | None:
    """The local file that ``push_benchmark_binary`` names (``~`` expanded, relative to the current folder)."""
    if profile.push_benchmark_binary is None:
        return None
    return Path(profile.push_benchmark_binary).expanduser().resolve()


def list_profiles() -> list[DeviceProfile]:
    """Every profile found on the search path (first one wins by name); broken ones are skipped."""
    seen: dict[str, DeviceProfile] = {}
    for folder in profile_search_path():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.y*ml")):
            try:
                profile = _load_file(path)
            except ProfileError:
                continue
            seen.setdefault(profile.name, profile)
    return list(seen.values())
