"""ADB transport (adb-shell): an Android phone over USB or over TCP (``adb tcpip``).

No adb server is needed: hwnas speaks the ADB protocol itself, with an RSA key of its own
(``config_dir()/adbkey``, created with 0600 permissions the first time a device asks for
authentication; the phone then shows its "Allow USB debugging?" prompt once).

The legacy ``shell:`` service has no exit codes and merges stderr into stdout, so every
command runs under :func:`~.transport.remote_command`'s wrapper, which prints the remote
PID first and ``<marker>$?`` last; both are taken out of the output. ``stderr`` of a
result is therefore always empty.

Long silent commands (a benchmark run) are not cut: every read waits until the command's
own deadline. Past it the wrapper and its process group are killed over a fresh
connection. Over TCP the socket carries keepalive settings, so a link that goes silent is
noticed within about ``keepalive_s * (keepalive_count + 1)`` seconds.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import re
import secrets
import select
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice
from adb_shell.transport.base_transport import BaseTransport
from adb_shell.transport.tcp_transport import TcpTransport

from .errors import DeviceError, DeviceTimeout, LinkLost, OutputTooLarge, ProfileError
from .profiles import config_dir
from .transport import (
    MAX_OUTPUT_BYTES,
    CommandResult,
    LineCallback,
    RemoteOutput,
    Transport,
    kill_command,
    remote_command,
    shell_join,
)

log = logging.getLogger(__name__)

RESUME_HINT = "check the cable or the network, then rerun with --resume"
ADB_SERVER_HINT = (
    "a running adb server holds the device: stop it with `adb kill-server` (and close Android Studio), "
    "or switch the phone to TCP (`adb tcpip 5555`) and give the profile host/port instead of serial"
)
_HOST_PORT = re.compile(r"^(?P<host>[^\s:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


# -- the RSA key ------------------------------------------------------------------------------


def default_key_path() -> Path:
    return config_dir() / "adbkey"


def load_or_create_adb_key(path: Path | None = None) -> Path:
    """The ADB private key at ``path`` (default ``config_dir()/adbkey``), created when missing.

    A new key pair (``adbkey`` and ``adbkey.pub``) is written with 0600 permissions in a
    0700 folder; an existing key readable by others is tightened to 0600 with a warning.
    """
    from adb_shell.auth.keygen import keygen

    path = Path(path) if path is not None else default_key_path()
    if path.is_file():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); setting it to 0600", path, mode)
            os.chmod(path, 0o600)
        if not Path(f"{path}.pub").is_file():
            from adb_shell.auth.keygen import write_public_keyfile

            write_public_keyfile(str(path), f"{path}.pub")
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".adbkey-", dir=path.parent))  # 0700: private while written
    try:
        keygen(str(staging / "adbkey"))
        for name in ("adbkey", "adbkey.pub"):
            os.chmod(staging / name, 0o600)
        os.replace(staging / "adbkey.pub", f"{path}.pub")
        os.replace(staging / "adbkey", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("created the ADB key %s (the device will ask once to allow it)", path)
    return path


class _LazySigner:
    """Loads (or creates) the key only when a device asks for authentication."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._signer: Any = None

    def _get(self) -> Any:
        if self._signer is None:
            from adb_shell.auth.sign_cryptography import CryptographySigner

            self._signer = CryptographySigner(str(load_or_create_adb_key(self.path)))
        return self._signer

    def Sign(self, data: bytes) -> bytes:  # noqa: N802 - adb-shell's signer interface
        return self._get().Sign(data)

    def GetPublicKey(self) -> str:  # noqa: N802
        return self._get().GetPublicKey()


# -- links ------------------------------------------------------------------------------------


class _TcpLink(TcpTransport):
    """adb-shell's TCP transport plus keepalive, and an error (not a spin) when the peer closes."""

    def __init__(self, host: str, port: int, *, keepalive_s: float, keepalive_count: int) -> None:
        super().__init__(host, port)
        self.keepalive_s = keepalive_s
        self.keepalive_count = keepalive_count

    def connect(self, transport_timeout_s: float | None) -> None:
        super().connect(transport_timeout_s)
        sock = self._connection
        secs = max(1, int(self.keepalive_s))
        for level, opt, value in [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), secs),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), secs),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), self.keepalive_count),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), int(secs * self.keepalive_count * 1000)),
        ]:
            if opt is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(level, opt, value)
        sock.setblocking(False)

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        sock = self._connection
        if sock is None:
            raise ConnectionAbortedError("the connection is closed")
        readable, _, _ = select.select([sock], [], [], transport_timeout_s)
        if not readable:
            raise adb_exc.TcpTimeoutException(f"reading from {self._host}:{self._port} timed out")
        data = sock.recv(numbytes)
        if not data:
            raise ConnectionResetError("the device closed the connection")
        return data

    def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
        sock = self._connection
        if sock is None:
            raise ConnectionAbortedError("the connection is closed")
        _, writable, _ = select.select([], [sock], [], transport_timeout_s)
        if not writable:
            raise adb_exc.TcpTimeoutException(f"sending to {self._host}:{self._port} timed out")
        return sock.send(data)


class _DeadlineLink(BaseTransport):
    """Wraps a link so that every read waits until a deadline instead of a fixed timeout.

    adb-shell gives each read the same ``transport_timeout_s``; a silent benchmark would be
    cut by it. Here a command sets ``deadline`` and reads wait exactly until then; between
    commands reads wait ``idle_timeout_s`` (file transfers keep data flowing).
    """

    def __init__(self, inner: BaseTransport, *, idle_timeout_s: float) -> None:
        self.inner = inner
        self.idle_timeout_s = idle_timeout_s
        self.deadline: float | None = None

    def _timeout(self) -> float:
        if self.deadline is None:
            return self.idle_timeout_s
        return max(0.01, self.deadline - time.monotonic())

    def close(self) -> None:
        self.inner.close()

    def connect(self, transport_timeout_s: float | None) -> None:
        self.inner.connect(transport_timeout_s)

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        return self.inner.bulk_read(numbytes, self._timeout())

    def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
        return self.inner.bulk_write(data, self._timeout())


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, (adb_exc.AdbTimeoutError, adb_exc.TcpTimeoutException, TimeoutError)):
        return True
    usb_error = getattr(exc, "usb_error", None)
    return usb_error is not None and "TIMEOUT" in f"{type(usb_error).__name__} {usb_error}".upper()


def usb_error_hint(exc: BaseException) -> str | None:
    """A hint for libusb errors opening a phone: busy (an adb server has it) or no permission."""
    text = f"{type(exc).__name__} {exc}".upper()
    if "BUSY" in text:
        return ADB_SERVER_HINT
    if "ACCESS" in text:
        return (
            "no permission to open the USB device: add a udev rule for Android devices "
            "(Debian: apt install android-sdk-platform-tools-common) or run as a user in the plugdev group"
        )
    return None


_LINK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    adb_exc.TcpTimeoutException,
    adb_exc.AdbTimeoutError,
    adb_exc.UsbReadFailedError,
    adb_exc.UsbWriteFailedError,
    adb_exc.InvalidResponseError,
    adb_exc.InvalidCommandError,
    adb_exc.InvalidChecksumError,
    adb_exc.AdbConnectionError,
)


class ADBTransport(Transport):
    """A device reached with the ADB protocol.

    Settings (``transport.adb`` in a profile): ``serial`` (USB; a ``host:port`` serial as
    an adb server lists TCP devices also works) or ``host`` and ``port`` (5555),
    ``key_file`` (default ``config_dir()/adbkey``, created when missing), ``connect_timeout_s``
    (10), ``keepalive_s`` (15), ``keepalive_count`` (3).

    Connects on first use. Raises ProfileError for a bad setting or a missing ``usb`` extra,
    DeviceError when the device cannot be reached (with the adb-server hint when another
    program holds it), LinkLost when the link drops, DeviceTimeout past a command's timeout.
    """

    name = "adb"

    def __init__(
        self,
        *,
        device: str,
        workdir: str,
        serial: str | None = None,
        host: str | None = None,
        port: int = 5555,
        key_file: str | None = None,
        connect_timeout_s: float = 10.0,
        keepalive_s: float = 15.0,
        keepalive_count: int = 3,
    ) -> None:
        super().__init__(device=device, workdir=workdir)
        if host is None and serial is not None:
            m = _HOST_PORT.match(serial)
            if m:  # an adb server's name for a TCP device: host:port
                host, port, serial = m.group("host").strip("[]"), int(m.group("port")), None
        if host is None and serial is None:
            raise ProfileError(f"{device}: field 'transport.adb': expected 'serial' (USB) or 'host' (adb over TCP)")
        self.serial = serial
        self.host = host
        self.port = int(port)
        self.connect_timeout_s = float(connect_timeout_s)
        self.keepalive_s = float(keepalive_s)
        self.keepalive_count = int(keepalive_count)
        if self.connect_timeout_s <= 0 or self.keepalive_s <= 0 or self.keepalive_count < 1:
            raise ProfileError(
                f"{device}: transport.adb: connect_timeout_s and keepalive_s must be > 0 and "
                f"keepalive_count >= 1, got {connect_timeout_s}, {keepalive_s}, {keepalive_count}"
            )
        self.key_path: Path | None = None
        if key_file is not None:
            self.key_path = Path(key_file).expanduser()
            if not self.key_path.is_file():
                raise ProfileError(
                    f"{device}: field 'transport.adb.key_file': no such file {self.key_path} "
                    "(leave key_file out to use hwnas's own key, created on first use)"
                )
        self._signer = _LazySigner(self.key_path)
        self._dev: AdbDevice | None = None
        self._link: _DeadlineLink | None = None
        self._lock = threading.RLock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.host is not None else str(self.serial)

    @property
    def link_timeout_s(self) -> float:
        return max(self.connect_timeout_s, self.keepalive_s * (self.keepalive_count + 1))

    # -- connection --------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the connection now (otherwise the first command does)."""
        self._device()

    def _device(self) -> AdbDevice:
        with self._lock:
            if self._dev is not None and self._dev.available:
                return self._dev
            self._drop()
            inner = self._make_link()
            link = _DeadlineLink(inner, idle_timeout_s=self.link_timeout_s)
            dev = AdbDevice(link, default_transport_timeout_s=self.connect_timeout_s, banner="hwnas")
            link.deadline = time.monotonic() + max(30.0, self.connect_timeout_s)  # room for the phone's prompt
            try:
                dev.connect(
                    rsa_keys=[self._signer],
                    transport_timeout_s=self.connect_timeout_s,
                    auth_timeout_s=max(30.0, self.connect_timeout_s),
                    read_timeout_s=max(30.0, self.connect_timeout_s),
                    auth_callback=self._auth_prompt,
                )
            except adb_exc.DeviceAuthError as exc:
                link.close()
                raise DeviceError(
                    f"{self.address} refused hwnas's ADB key ({exc})",
                    device=self.device,
                    hint="unlock the phone and accept the 'Allow USB debugging?' prompt, then run again",
                ) from None
            except Exception as exc:  # noqa: BLE001 - libusb, sockets and adb-shell raise many kinds
                link.close()
                raise self._connect_error(exc) from None
            finally:
                link.deadline = None
            self._dev, self._link = dev, link
            log.debug("%s: connected to %s", self.device, self.address)
            return dev

    def _auth_prompt(self, _dev: Any) -> None:
        log.warning("%s: accept the 'Allow USB debugging?' prompt on the device", self.device)

    def _make_link(self) -> BaseTransport:
        if self.host is not None:
            return _TcpLink(self.host, self.port, keepalive_s=self.keepalive_s, keepalive_count=self.keepalive_count)
        try:
            from adb_shell.transport.usb_transport import UsbTransport
        except ImportError as exc:
            raise ProfileError(
                f"{self.device}: ADB over USB needs the 'usb' extra ({exc.name} is missing): "
                "pip install 'hwnas[usb]' (or give the profile host/port for adb over TCP)"
            ) from None
        try:
            return UsbTransport.find_adb(serial=self.serial, default_transport_timeout_s=self.connect_timeout_s)
        except adb_exc.UsbDeviceNotFoundError:
            raise DeviceError(
                f"no USB device with serial {self.serial!r} is attached",
                device=self.device,
                hint="check the cable, that USB debugging is on, and the serial (`adb devices` lists it)",
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise self._connect_error(exc) from None

    def _connect_error(self, exc: BaseException) -> DeviceError:
        hint = usb_error_hint(exc)
        if hint is not None and "BUSY" in f"{type(exc).__name__} {exc}".upper():
            return DeviceError(f"cannot open {self.address}: the device is in use by another program", device=self.device, hint=hint)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        if hint is None:
            hint = (
                "is the device on, and adbd listening (`adb tcpip 5555` on the phone)? check transport.adb.host and port"
                if self.host is not None
                else "check the cable and that USB debugging is on"
            )
        return DeviceError(f"cannot connect to {self.address} ({reason})", device=self.device, hint=hint)

    def _drop(self) -> None:
        with self._lock:
            dev, self._dev, self._link = self._dev, None, None
        if dev is not None:
            with contextlib.suppress(Exception):
                dev.close()

    def close(self) -> None:
        self._drop()

    def _link_lost(self, what: str, exc: BaseException | str) -> LinkLost:
        self._drop()
        reason = exc if isinstance(exc, str) else (
            exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
        )
        return LinkLost(f"lost the ADB connection to {self.address} during {what} ({reason})", device=self.device, hint=RESUME_HINT)

    # -- commands ----------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        description: str,
        timeout: float,
        check: bool = True,
        on_line: LineCallback | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("empty argv")
        token = secrets.token_hex(8)
        stdin_path = None
        if stdin is not None:
            stdin_path = posixpath.join(self.workdir, f".hwnas-stdin-{token}")
            self.run(["mkdir", "-p", self.workdir], description="create the work folder", timeout=60)
            self._push_stream(io.BytesIO(stdin), stdin_path, 0o600, f"sending stdin of {description}")
        command = remote_command(argv, token=token, report_exit=True, stdin_path=stdin_path)
        log.debug("%s: %s: %s", self.device, description, shell_join(argv))
        start = time.monotonic()
        deadline = start + timeout
        out = RemoteOutput(token, on_line)
        with self._lock:
            dev = self._device()
            link = self._link
            assert link is not None
            link.deadline = deadline
            try:
                stream = dev.streaming_shell(
                    command, transport_timeout_s=timeout, read_timeout_s=timeout + 60.0, decode=False
                )
                for chunk in stream:
                    out.feed(chunk)
                    if out.overflow:
                        raise OutputTooLarge(
                            f"{description} printed more than {MAX_OUTPUT_BYTES >> 20} MiB and was stopped",
                            device=self.device, command=shell_join(argv), output=out.stdout[-2000:],
                        )
                    if time.monotonic() > deadline:
                        raise adb_exc.AdbTimeoutError("past the deadline")
                out.finish()
            except _LINK_ERRORS as exc:
                link.deadline = None
                if _is_timeout(exc) and time.monotonic() >= deadline - 0.05:
                    self._kill_after_timeout(out.pid, description)
                    raise DeviceTimeout(
                        f"{description} ran past its timeout of {timeout:g} s and was killed",
                        device=self.device,
                        command=shell_join(argv),
                        output=out.stdout[-2000:],
                    ) from None
                raise self._link_lost(description, exc) from None
            except BaseException:
                # Too much output, an interrupt (Ctrl-C) or an error of ours mid-stream: the command must not
                # go on on the device (a fresh connection kills it; the stream may be mid-packet).
                link.deadline = None
                try:
                    self._kill_after_timeout(out.pid, description)
                except BaseException as kill_exc:  # noqa: BLE001 - the original exception is the one to report
                    log.warning("%s: could not stop %s on the device: %s", self.device, description, kill_exc)
                raise
            finally:
                link.deadline = None
        rc = out.returncode
        if rc is None:
            # The stream closed without the marker: the wrapper was killed on the device, or adbd
            # itself went down (it may close the stream of its dying shell before its socket closes).
            self._check_still_answers(description)
            log.warning("%s: %s ended without an exit status (killed on the device?)", self.device, description)
            rc = -1
        result = CommandResult(argv=argv, returncode=rc, stdout=out.stdout, stderr="", seconds=time.monotonic() - start)
        return self.check_result(result, description, check)

    def _check_still_answers(self, description: str) -> None:
        """Raise LinkLost unless the device still runs a trivial command on this connection."""
        with self._lock:
            dev = self._dev
            if dev is None or not dev.available:
                raise self._link_lost(description, "the connection closed with the command")
            try:
                dev.shell("echo hwnas-alive", transport_timeout_s=self.link_timeout_s, read_timeout_s=self.link_timeout_s)
            except _LINK_ERRORS as exc:
                raise self._link_lost(description, exc) from None

    def _kill_after_timeout(self, pid: int | None, description: str) -> None:
        """Reconnect (the timed-out stream may be mid-packet) and kill the wrapper's process group."""
        self._drop()
        if pid is None:
            log.warning("%s: cannot kill %s: it never reported its PID", self.device, description)
            return
        try:
            dev = self._device()
            dev.shell(kill_command(pid), transport_timeout_s=self.link_timeout_s, read_timeout_s=self.link_timeout_s)
        except DeviceError as exc:
            raise LinkLost(
                f"{description} timed out and the device no longer answers ({exc.message})",
                device=self.device,
                hint=RESUME_HINT,
            ) from None
        except _LINK_ERRORS as exc:
            raise self._link_lost(f"killing {description}", exc) from None

    # -- files -------------------------------------------------------------------------------
    def _push_stream(self, stream: io.BytesIO | str, remote: str, mode: int, what: str) -> None:
        """Push a BytesIO or a local path (adb-shell takes no other file objects)."""
        with self._lock:
            dev = self._device()
            try:
                dev.push(
                    stream,
                    remote,
                    st_mode=stat.S_IFREG | mode,
                    mtime=int(time.time()),
                    transport_timeout_s=self.link_timeout_s,
                    read_timeout_s=self.link_timeout_s,
                )
            except (adb_exc.PushFailedError, adb_exc.AdbCommandFailureException) as exc:
                raise DeviceError(f"{what}: the device refused to write {remote} ({exc})", device=self.device) from None
            except _LINK_ERRORS as exc:
                raise self._link_lost(what, exc) from None

    def push(self, local: Path, remote: str) -> None:
        """Copy ``local`` to ``remote`` (mode bits kept; written to a temporary name, then renamed)."""
        local = Path(local)
        if not remote.startswith("/"):
            raise ValueError(f"remote path must be absolute, got {remote!r}")
        if not local.is_file():
            raise DeviceError(f"cannot push {local}: no such local file", device=self.device)
        self.run(["mkdir", "-p", posixpath.dirname(remote)], description="create the target folder", timeout=60)
        part = f"{remote}.hwnas-part-{secrets.token_hex(4)}"
        mode = stat.S_IMODE(local.stat().st_mode)
        self._push_stream(str(local), part, mode, f"pushing {local.name}")
        # adbd builds differ in how they apply the pushed mode: set it explicitly.
        self.run(
            ["sh", "-c", 'chmod "$1" "$2" && mv -f "$2" "$3"', "hwnas-place", f"{mode:o}", part, remote],
            description=f"move {local.name} into place",
            timeout=60,
        )

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        what = f"pulling {remote}"
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f".{local.name}.hwnas-part-{secrets.token_hex(4)}")
        with self._lock:
            dev = self._device()
            try:
                dev.pull(remote, str(part), transport_timeout_s=self.link_timeout_s, read_timeout_s=self.link_timeout_s)
            except adb_exc.AdbCommandFailureException as exc:
                part.unlink(missing_ok=True)
                raise DeviceError(f"cannot pull {remote} ({exc})", device=self.device) from None
            except _LINK_ERRORS as exc:
                part.unlink(missing_ok=True)
                raise self._link_lost(what, exc) from None
        os.replace(part, local)


def attached_usb_serials() -> list[str]:
    """Serials of the Android devices on USB (empty without the ``usb`` extra or libusb)."""
    try:
        from adb_shell.transport.usb_transport import UsbTransport
    except ImportError:
        return []
    try:
        return [t.serial_number for t in UsbTransport.find_all_adb_devices()]
    except Exception as exc:  # noqa: BLE001 - a missing libusb or permissions: nothing to list
        log.debug("cannot list USB devices: %s", exc)
        return []


__all__ = ["ADBTransport", "load_or_create_adb_key", "default_key_path", "attached_usb_serials", "usb_error_hint"]
