"""Find devices for ``hwnas devices``: the configured profiles, each checked by running ``true`` over its
transport (concurrently), and the devices a running adb server lists (``host:devices-l`` over the adb
server's socket protocol, see :func:`adb_server_devices`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import AgentError, DeviceError
from .profiles import DeviceProfile, list_profiles
from .transport import open_transport

log = logging.getLogger(__name__)

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
