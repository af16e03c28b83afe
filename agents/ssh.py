"""SSH transport (paramiko): a Linux board such as a Raspberry Pi or a Jetson.

Safe defaults: the host key is checked against ``known_hosts`` (an unknown key is refused
unless the profile sets ``trust_on_first_use: true``; a *changed* key is always refused),
authentication uses a key file or the ssh-agent, and a password is read only from the
environment variable named by ``password_env``.

Each command runs in its own channel under :func:`~.transport.remote_command`'s wrapper,
which reports the remote PID: past its timeout the command and its process group are
killed over a second channel. stdout is streamed line by line while stderr is drained in
parallel, so neither buffer can fill up and stall the remote process.

A link that dies is noticed two ways: the TCP socket carries keepalive and
``TCP_USER_TIMEOUT`` settings (where the OS has them), and while a command is silent the
transport probes the server every ``keepalive_s`` seconds by opening a channel, which
needs a reply. After ``keepalive_s * keepalive_count`` seconds without one the link is
declared lost (:class:`~.errors.LinkLost`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import secrets
import socket
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paramiko

from .errors import DeviceError, DeviceTimeout, LinkLost, OutputTooLarge, ProfileError
from .transport import (
    MAX_OUTPUT_BYTES,
    MAX_STDERR_BYTES,
    READER_JOIN_S,
    CommandResult,
    LineCallback,
    RemoteOutput,
    TailBuffer,
    Transport,
    kill_command,
    redact,
    remote_command,
    shell_join,
)

log = logging.getLogger(__name__)
# paramiko logs a dropped link at ERROR on its own; hwnas reports it once, as LinkLost. An
# explicit level set by the application (e.g. for --debug) is left alone.
if logging.getLogger("paramiko").level == logging.NOTSET:
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

RESUME_HINT = "check the device and the network, then rerun with --resume"
_STDIN_SLICE = 1 << 20  # bytes offered to paramiko per send (see SSHTransport._send_stdin)


class HostKeyError(DeviceError, ProfileError):
    """The server's host key is unknown or differs from ``known_hosts`` (exit code 2: a setting to fix)."""

    exit_code = 2


class AuthenticationError(DeviceError, ProfileError):
    """The server refused every credential offered (exit code 2: a setting to fix)."""

    exit_code = 2


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko for a host that ``known_hosts`` does not list."""

    def __init__(self, transport: SSHTransport) -> None:
        self.transport = transport

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        t = self.transport
        if not t.trust_on_first_use:
            port_opt = f" -p {t.port}" if t.port != 22 else ""
            raise HostKeyError(
                f"unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}): "
                f"it is not in {t.known_hosts}",
                device=t.device,
                hint=(
                    f"check the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_kind(key)}_key.pub), "
                    f"then add it with `ssh-keyscan{port_opt} {t.host} >> {t.known_hosts}`, "
                    "or set 'trust_on_first_use: true' in the profile's transport.ssh"
                ),
            )
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        path = t.known_hosts
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning(
            "%s: trusting the new host key of %s (%s %s) on first use; written to %s",
            t.device,
            hostname,
            key.get_name(),
            fingerprint(key),
            path,
        )


def _key_file_kind(key: paramiko.PKey) -> str:
    name = key.get_name()
    if "ed25519" in name:
        return "ed25519"
    if "ecdsa" in name:
        return "ecdsa"
    return "rsa"


class SSHTransport(Transport):
    """A device reached over SSH.

    Settings (``transport.ssh`` in a profile): ``host``, ``port`` (22), ``user`` (root),
    ``key_file`` (else the ssh-agent and the usual ``~/.ssh/id_*``), ``known_hosts``
    (``~/.ssh/known_hosts``), ``trust_on_first_use`` (false), ``password_env`` (the name
    of an environment variable holding a password or a key passphrase),
    ``connect_timeout_s`` (10), ``keepalive_s`` (15) and ``keepalive_count`` (3).

    Connects on first use. Raises ProfileError for a missing key file or an unset
    ``password_env`` variable (at construction), HostKeyError and AuthenticationError
    (exit code 2), DeviceError when the device cannot be reached, LinkLost when the
    connection drops, DeviceTimeout when a command runs past its timeout.
    """

    name = "ssh"

    def __init__(
        self,
        *,
        device: str,
        workdir: str,
        host: str,
        port: int = 22,
        user: str = "root",
        key_file: str | None = None,
        known_hosts: str = "~/.ssh/known_hosts",
        trust_on_first_use: bool = False,
        password_env: str | None = None,
        connect_timeout_s: float = 10.0,
        keepalive_s: float = 15.0,
        keepalive_count: int = 3,
    ) -> None:
        super().__init__(device=device, workdir=workdir)
        self.host = host
        self.port = int(port)
        self.user = user
        self.known_hosts = Path(known_hosts).expanduser()
        self.trust_on_first_use = bool(trust_on_first_use)
        self.connect_timeout_s = float(connect_timeout_s)
        self.keepalive_s = float(keepalive_s)
        self.keepalive_count = int(keepalive_count)
        if self.connect_timeout_s <= 0 or self.keepalive_s <= 0 or self.keepalive_count < 1:
            raise ProfileError(
                f"{device}: transport.ssh: connect_timeout_s and keepalive_s must be > 0 and "
                f"keepalive_count >= 1, got {connect_timeout_s}, {keepalive_s}, {keepalive_count}"
            )
        self.key_file: Path | None = None
        if key_file is not None:
            self.key_file = Path(key_file).expanduser()
            if not self.key_file.is_file():
                raise ProfileError(
                    f"{device}: field 'transport.ssh.key_file': no such file {self.key_file} "
                    "(create a key with ssh-keygen, or leave key_file out to use the ssh-agent)"
                )
        self._password: str | None = None
        if password_env is not None:
            value = os.environ.get(password_env)
            if value is None:
                raise ProfileError(
                    f"{device}: field 'transport.ssh.password_env': the environment variable "
                    f"{password_env!r} is not set"
                )
            self._password = value
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    # -- connection --------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def link_timeout_s(self) -> float:
        """Seconds without an answer after which the link counts as lost."""
        return self.keepalive_s * self.keepalive_count

    def connect(self) -> None:
        """Open the connection now (otherwise the first command does)."""
        self._transport()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return t
                self._drop()
            self._client = self._open_client()
            t = self._client.get_transport()
            assert t is not None
            return t

    def _open_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            try:
                client.load_host_keys(str(self.known_hosts))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise ProfileError(
                    f"{self.device}: field 'transport.ssh.known_hosts': cannot read {self.known_hosts} ({exc})"
                ) from exc
        client.set_missing_host_key_policy(_HostKeyPolicy(self))
        sock = self._open_socket()
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                password=self._password,
                key_filename=str(self.key_file) if self.key_file is not None else None,
                allow_agent=self.key_file is None,
                look_for_keys=self.key_file is None,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
                channel_timeout=self.connect_timeout_s,
                sock=sock,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"HOST KEY CHANGED for {self.host}:{self.port}: {self.known_hosts} holds "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the server sent "
                f"{exc.key.get_name()} {fingerprint(exc.key)}; refusing to connect (someone may be "
                "intercepting the connection, or the device was reinstalled)",
                device=self.device,
                hint=(
                    "if you know why the key changed, remove the old entry with "
                    f"`ssh-keygen -R {shell_join([_known_hosts_name(self.host, self.port)])} -f {self.known_hosts}` "
                    "and connect again; trust_on_first_use never overrides a changed key"
                ),
            ) from None
        except paramiko.PasswordRequiredException as exc:
            client.close()
            raise ProfileError(
                f"{self.device}: field 'transport.ssh.key_file': {self.key_file} is encrypted; "
                "name an environment variable holding its passphrase with 'password_env'"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            offered = f"the key {self.key_file}" if self.key_file else "the ssh-agent's and ~/.ssh's keys"
            if self._password is not None:
                offered += " and the password"
            raise AuthenticationError(
                f"{self.address} refused {offered} ({exc})",
                device=self.device,
                hint=(
                    "add the public key to ~/.ssh/authorized_keys of that user on the device "
                    "(ssh-copy-id), or fix transport.ssh.user / key_file"
                ),
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            client.close()
            raise DeviceError(
                f"SSH handshake with {self.address} failed ({_reason(exc)})",
                device=self.device,
                hint="is this an SSH server? check transport.ssh.host and port in the profile",
            ) from None
        t = client.get_transport()
        assert t is not None
        t.set_keepalive(max(1, int(self.keepalive_s)))
        log.debug("%s: connected to %s", self.device, self.address)
        return client

    def _open_socket(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except socket.gaierror as exc:
            raise DeviceError(
                f"cannot resolve the host name {self.host!r} ({exc.strerror})",
                device=self.device,
                hint="check transport.ssh.host in the profile",
            ) from None
        except TimeoutError:
            raise DeviceError(
                f"no answer from {self.address} within {self.connect_timeout_s:g} s",
                device=self.device,
                hint="is the device on and on the network? check transport.ssh.host and port",
            ) from None
        except OSError as exc:
            raise DeviceError(
                f"cannot connect to {self.address} ({_reason(exc)})",
                device=self.device,
                hint="is the device on and sshd running on that port? check transport.ssh.host and port",
            ) from None
        _tune_socket(sock, idle_s=self.keepalive_s, count=self.keepalive_count)
        return sock

    def _drop(self) -> None:
        """Forget the connection (after a loss, or on close)."""
        with self._lock:
            sftp, client = self._sftp, self._client
            self._sftp = self._client = None
        for obj in (sftp, client):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing a dead link may fail any way it likes
                    pass

    def close(self) -> None:
        self._drop()

    def _link_lost(self, what: str, exc: BaseException | str | None = None) -> LinkLost:
        self._drop()
        reason = f" ({exc if isinstance(exc, str) else _reason(exc)})" if exc is not None else ""
        return LinkLost(
            f"lost the SSH connection to {self.address} during {what}{reason}",
            device=self.device,
            hint=RESUME_HINT,
        )

    def _open_channel(self, what: str) -> paramiko.Channel:
        t = self._transport()
        try:
            return t.open_session(timeout=max(self.connect_timeout_s, self.link_timeout_s))
        except paramiko.ChannelException as exc:
            raise DeviceError(
                f"the SSH server refused a new session for {what} ({exc})",
                device=self.device,
                hint="raise MaxSessions in the device's sshd_config",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._link_lost(what, exc) from None

    def _alive(self, transport: paramiko.Transport, timeout: float) -> bool:
        """Probe the server: opening a channel needs its answer within ``timeout`` seconds."""
        try:
            chan = transport.open_session(timeout=timeout)
        except paramiko.ChannelException:
            return True  # refused, but it answered
        except (paramiko.SSHException, EOFError, OSError):
            return False
        chan.close()
        return True

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
        command = remote_command(argv, token=token)
        log.debug("%s: %s: %s", self.device, description, redact(shell_join(argv), [self._password or ""]))
        start = time.monotonic()
        deadline = start + timeout
        chan = self._open_channel(description)
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            chan.close()
            t = self._client.get_transport() if self._client is not None else None
            if t is None or not t.is_active():
                raise self._link_lost(description, exc) from None
            raise DeviceError(f"{description}: the server refused to run it ({exc})", device=self.device) from None
        out = RemoteOutput(token, on_line)
        err = TailBuffer(MAX_STDERR_BYTES)
        last_rx = [time.monotonic()]
        failures: list[BaseException] = []

        def read_stdout() -> None:
            try:
                while True:
                    data = chan.recv(65536)
                    if not data:
                        break
                    last_rx[0] = time.monotonic()
                    out.feed(data)
                out.finish()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                failures.append(exc)

        def read_stderr() -> None:
            try:
                while True:
                    data = chan.recv_stderr(65536)
                    if not data:
                        break
                    last_rx[0] = time.monotonic()
                    err.add(data)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        readers = [
            threading.Thread(target=read_stdout, name=f"ssh-out-{self.device}", daemon=True),
            threading.Thread(target=read_stderr, name=f"ssh-err-{self.device}", daemon=True),
        ]
        for r in readers:
            r.start()
        transport = chan.get_transport()
        finished = False
        try:
            if stdin is not None:
                self._send_stdin(chan, stdin, description, argv, deadline, failures, out)
            last_probe = time.monotonic()
            while not chan.status_event.wait(0.1):
                now = time.monotonic()
                if failures:
                    self._kill(out.pid, description)
                    raise failures[0]
                if out.overflow:
                    self._kill(out.pid, description)
                    raise OutputTooLarge(
                        f"{description} printed more than {MAX_OUTPUT_BYTES >> 20} MiB and was stopped",
                        device=self.device, command=shell_join(argv), output=out.stdout[-2000:],
                    )
                if now >= deadline:
                    self._timeout(out, description, argv, timeout)
                if not transport.is_active():
                    raise self._link_lost(description, transport.get_exception())
                quiet = now - max(last_rx[0], last_probe)
                if quiet >= self.keepalive_s:
                    last_probe = now
                    if not self._alive(transport, self.link_timeout_s):
                        raise self._link_lost(
                            description, f"no answer for {self.link_timeout_s:g} s; the link went silent"
                        )
                    last_probe = time.monotonic()
            finished = True
            # The exit status came: collect what is still in flight (bounded by the deadline).
            until = min(deadline, time.monotonic() + READER_JOIN_S)
            for r in readers:
                r.join(max(0.0, until - time.monotonic()))
            if any(r.is_alive() for r in readers):
                log.warning(
                    "%s: %s exited but a background process still holds its output; closing it",
                    self.device,
                    description,
                )
            rc = chan.exit_status
            if rc == -1:
                # No exit status: either the link died, or the wrapper was killed by a signal.
                until = time.monotonic() + 2.0
                while transport.is_active() and time.monotonic() < until:
                    time.sleep(0.05)
                if not transport.is_active():
                    raise self._link_lost(description, transport.get_exception())
            if failures:
                raise failures[0]
        except BaseException as exc:
            # An interrupt (Ctrl-C) or an error of ours while the command runs: stop it on the device too (closing
            # the channel does not; a timeout or too much output has already killed it, a lost link cannot).
            if not finished and not isinstance(exc, (DeviceTimeout, OutputTooLarge, LinkLost)):
                self._kill_quietly(out, description)
            raise
        finally:
            chan.close()
            for r in readers:
                r.join(1.0)
        result = CommandResult(
            argv=argv,
            returncode=rc,
            stdout=out.stdout,
            stderr=err.text(),
            seconds=time.monotonic() - start,
        )
        return self.check_result(result, description, check)

    def _send_stdin(self, chan: paramiko.Channel, data: bytes, description: str, argv: tuple[str, ...],
                    deadline: float, failures: list[BaseException], out: RemoteOutput) -> None:
        """Send ``data`` to the command's stdin, then EOF. Bounded: a device that takes no byte for
        ``link_timeout_s`` seconds (a stalled reader with the link up), or past the deadline, is a DeviceTimeout.

        Never a blocking ``sendall``: it waits for the SSH window without a limit. Slices keep paramiko from
        re-copying the unsent rest after every packet (quadratic: a ~70 MB archive took minutes in one call).
        """
        view = memoryview(data)
        sent = 0
        last_progress = time.monotonic()
        while sent < len(view):
            if chan.send_ready():
                try:
                    n = chan.send(view[sent : sent + _STDIN_SLICE])  # one packet at most; a view: no copy
                except (OSError, paramiko.SSHException) as exc:
                    log.debug("%s: stdin not fully sent: %s", self.device, exc)
                    return  # the command exited or the link broke: the wait below tells which
                if n <= 0:
                    return
                sent += n
                last_progress = time.monotonic()
                continue
            if chan.closed or chan.exit_status_ready() or failures:
                return
            now = time.monotonic()
            stalled = now - last_progress
            if stalled >= self.link_timeout_s or now >= deadline:
                why = (f"the device took no input for {stalled:.0f} s" if stalled >= self.link_timeout_s
                       else "the command's timeout passed")
                self._kill_quietly(out, description)
                raise DeviceTimeout(
                    f"{description}: sending its input stalled ({why}; {sent} of {len(view)} bytes sent); "
                    "the command was killed",
                    device=self.device, command=shell_join(argv),
                )
            time.sleep(0.002)
        with contextlib.suppress(OSError, paramiko.SSHException):
            chan.shutdown_write()

    def _kill_quietly(self, out: RemoteOutput, description: str) -> None:
        """Best effort :meth:`_kill` on the way out of an interrupted command (never raises)."""
        try:
            self._kill(out.pid, description)
        except BaseException as exc:  # noqa: BLE001 - the original exception is the one to report
            log.warning("%s: could not stop %s on the device: %s", self.device, description, exc)

    def _timeout(self, out: RemoteOutput, description: str, argv: tuple[str, ...], timeout: float) -> None:
        self._kill(out.pid, description)
        raise DeviceTimeout(
            f"{description} ran past its timeout of {timeout:g} s and was killed",
            device=self.device,
            command=shell_join(argv),
            output=out.stdout[-2000:],
        )

    def _kill(self, pid: int | None, description: str) -> None:
        """Kill a command's wrapper and its process group over a second channel."""
        if pid is None:
            log.warning("%s: cannot kill %s: it never reported its PID", self.device, description)
            return
        try:
            chan = self._open_channel(f"killing {description}")
        except LinkLost:
            raise
        try:
            chan.exec_command(kill_command(pid))
            if not chan.status_event.wait(max(self.connect_timeout_s, self.link_timeout_s)):
                raise self._link_lost(f"killing {description}", "no answer")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._link_lost(f"killing {description}", exc) from None
        finally:
            chan.close()
        log.debug("%s: killed remote process group %s (%s)", self.device, pid, description)

    # -- files -------------------------------------------------------------------------------
    def _sftp_client(self, what: str) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is not None and self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._sftp
            t = self._transport()
            try:
                sftp = paramiko.SFTPClient.from_transport(t)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not t.is_active():
                    raise self._link_lost(what, exc) from None
                raise DeviceError(
                    f"{what}: the device offers no SFTP ({_reason(exc)})",
                    device=self.device,
                    hint="install the SFTP server on the device (Debian: openssh-sftp-server)",
                ) from None
            assert sftp is not None
            sftp.get_channel().settimeout(max(self.link_timeout_s, self.connect_timeout_s, 30.0))
            self._sftp = sftp
            return sftp

    def push(self, local: Path, remote: str) -> None:
        """Copy ``local`` to ``remote`` (mode bits kept; written to a temporary name, then renamed)."""
        local = Path(local)
        if not remote.startswith("/"):
            raise ValueError(f"remote path must be absolute, got {remote!r}")
        if not local.is_file():
            raise DeviceError(f"cannot push {local}: no such local file", device=self.device)
        what = f"pushing {local.name}"
        self.run(["mkdir", "-p", posixpath.dirname(remote)], description="create the target folder", timeout=60)
        sftp = self._sftp_client(what)
        part = f"{remote}.hwnas-part-{secrets.token_hex(4)}"
        try:
            sftp.put(str(local), part, confirm=True)
            sftp.chmod(part, stat.S_IMODE(local.stat().st_mode))
            try:
                sftp.posix_rename(part, remote)
            except OSError:
                with contextlib.suppress(OSError):
                    sftp.remove(remote)
                sftp.rename(part, remote)
        except (TimeoutError, EOFError, paramiko.SSHException) as exc:
            raise self._link_lost(what, exc) from None
        except OSError as exc:
            with contextlib.suppress(OSError):
                sftp.remove(part)
            raise DeviceError(
                f"cannot push {local} to {remote} ({_reason(exc)})",
                device=self.device,
                hint="check the path and free space on the device",
            ) from None

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)
        what = f"pulling {remote}"
        sftp = self._sftp_client(what)
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f".{local.name}.hwnas-part-{secrets.token_hex(4)}")
        try:
            sftp.get(remote, str(part))
            os.replace(part, local)
        except (TimeoutError, EOFError, paramiko.SSHException) as exc:
            part.unlink(missing_ok=True)
            raise self._link_lost(what, exc) from None
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno == errno.ENOENT:
                raise DeviceError(f"cannot pull {remote}: no such file", device=self.device) from None
            raise DeviceError(f"cannot pull {remote} ({_reason(exc)})", device=self.device) from None


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    if isinstance(exc, EOFError) and not text:
        return "connection closed by the device"
    return text or type(exc).__name__


def _tune_socket(sock: socket.socket, *, idle_s: float, count: int) -> None:
    """TCP keepalive and a user timeout so the kernel, too, gives up on a silent peer."""
    secs = max(1, int(idle_s))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), secs),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), secs),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), count),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), int(idle_s * count * 1000)),
    ]
    for level, opt, value in options:
        if opt is None:
            continue
        try:
            sock.setsockopt(level, opt, value)
        except OSError:
            pass


__all__ = ["SSHTransport", "HostKeyError", "AuthenticationError", "fingerprint"]
