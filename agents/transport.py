"""The transport interface: run an argv on a device, move files, close.

Every remote command goes through :meth:`Transport.run`, which takes an argv list.
Transports that need a shell string (ssh, adb) build it with :func:`shell_join`, the one
place where arguments are quoted, once each. Nothing from a profile, a file name or a
device's output is ever formatted into a shell string any other way.
"""

from __future__ import annotations

import abc
import difflib
import importlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DeviceError, DeviceTimeout, OutputTooLarge, ProfileError, WorkdirRefused

log = logging.getLogger(__name__)

LineCallback = Callable[[str], None]

#: The most output of one command kept in memory (stdout; stderr keeps its last ``MAX_STDERR_BYTES``).
MAX_OUTPUT_BYTES = 64 << 20
MAX_STDERR_BYTES = 1 << 20
#: How long a finished command's output readers may take to drain (a background child may hold the pipe).
READER_JOIN_S = 10.0


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def shell_join(argv: Sequence[str]) -> str:
    """Quote each argument once for a POSIX shell (the only quoting in hwnas)."""
    if not argv:
        raise ValueError("empty argv")
    return " ".join(shlex.quote(str(a)) for a in argv)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text


class Transport(abc.ABC):
    """A link to one device.

    ``device`` is the profile name used in messages. Implementations must make
    :meth:`run` honour ``timeout`` (killing the remote process when it expires) and
    stream output lines to ``on_line`` as they arrive, without deadlocking on
    full stdout/stderr buffers.
    """

    name: str = ""

    def __init__(self, *, device: str, workdir: str) -> None:
        self.device = device
        self.workdir_setting = workdir
        self._workdir: str | None = None

    @property
    def workdir(self) -> str:
        """The work folder on the device, as an absolute path: made on first use (0700), and checked to be a
        real folder of the device user's own (see :func:`prepare_workdir`)."""
        if self._workdir is None:
            self._workdir = prepare_workdir(self, self.workdir_setting)
        return self._workdir

    @abc.abstractmethod
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
        """Run ``argv`` on the device.

        Raises DeviceTimeout past ``timeout`` seconds (the process is killed),
        LinkLost when the connection drops, DeviceError when ``check`` and the exit
        code is not 0.
        """

    @abc.abstractmethod
    def push(self, local: Path, remote: str) -> None:
        """Copy a local file to ``remote`` (an absolute path on the device)."""

    @abc.abstractmethod
    def pull(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the device to ``local``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""

    @property
    def address(self) -> str:
        return "localhost"

    def describe(self, argv: Sequence[str]) -> str:
        return shell_join(argv)

    def check_result(self, result: CommandResult, description: str, check: bool) -> CommandResult:
        if check and result.returncode != 0:
            raise DeviceError(
                f"{description} failed",
                device=self.device,
                command=self.describe(result.argv),
                returncode=result.returncode,
                output=(result.stdout + "\n" + result.stderr)[-2000:],
            )
        return result

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalTransport(Transport):
    """The machine hwnas runs on: plain subprocesses, no shell."""

    name = "local"

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
        log.debug("%s: %s: %s", self.device, description, shell_join(argv))
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DeviceError(
                f"{description}: cannot start {argv[0]!r} ({exc.strerror})", device=self.device
            ) from exc
        out_lines: list[str] = []
        out_size = [0]
        err = TailBuffer(MAX_STDERR_BYTES)

        def read_out() -> None:
            assert proc.stdout is not None
            pending: list[bytes] = []  # a long line read in pieces; its size counts against MAX_OUTPUT_BYTES

            def take(raw: bytes) -> None:
                line = raw.decode("utf-8", "replace")
                out_lines.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))

            for raw in iter(lambda: proc.stdout.readline(MAX_LINE_BYTES), b""):  # type: ignore[union-attr]
                out_size[0] += len(raw)
                if out_size[0] > MAX_OUTPUT_BYTES:
                    pending.clear()
                    continue  # the waiting thread stops the command
                if not raw.endswith(b"\n"):
                    pending.append(raw)
                    continue
                take(b"".join([*pending, raw]))
                pending.clear()
            if pending:
                take(b"".join(pending))

        def read_err() -> None:
            assert proc.stderr is not None
            for chunk in iter(lambda: proc.stderr.read(65536), b""):  # type: ignore[union-attr]
                err.add(chunk)

        threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        try:
            if stdin is not None:
                assert proc.stdin is not None
                feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True)
                feeder.start()
                threads.append(feeder)
            while True:
                try:
                    proc.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if out_size[0] > MAX_OUTPUT_BYTES:
                    raise OutputTooLarge(
                        f"{description} printed more than {MAX_OUTPUT_BYTES >> 20} MiB and was stopped",
                        device=self.device, command=shell_join(argv), output="".join(out_lines[-20:])[-2000:],
                    )
                if time.monotonic() >= deadline:
                    raise DeviceTimeout(
                        f"{description} ran past its timeout of {timeout:g} s and was killed",
                        device=self.device,
                        command=shell_join(argv),
                        output="".join(out_lines)[-2000:],
                    )
        except BaseException:
            # a timeout, too much output, or an interrupt (Ctrl-C) or error of ours: the command must not outlive it
            _kill_group(proc)
            for t in threads:
                t.join(timeout=2)
            raise
        # Readers end at EOF; a background child of the command that keeps the pipes open must not hang us.
        until = time.monotonic() + READER_JOIN_S
        for t in threads:
            t.join(max(0.0, until - time.monotonic()))
        if any(t.is_alive() for t in threads):
            log.warning("%s: %s exited but a background process still holds its output after %g s; not waiting for it",
                        self.device, description, READER_JOIN_S)
            _kill_group(proc)
        result = CommandResult(
            argv=argv,
            returncode=proc.returncode,
            stdout="".join(out_lines),
            stderr=err.text(),
            seconds=time.perf_counter() - start,
        )
        return self.check_result(result, description, check)

    def push(self, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() != Path(remote).resolve():
            shutil.copyfile(local, remote)

    def pull(self, remote: str, local: Path) -> None:
        if not Path(remote).exists():
            raise DeviceError(f"cannot pull {remote}: no such file", device=self.device)
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        if Path(local).resolve() != Path(remote).resolve():
            shutil.copyfile(remote, local)


MAX_LINE_BYTES = 1 << 20  # reads of a long line come in pieces of this size and are joined


class TailBuffer:
    """Bytes of which only the last ``limit`` are kept (a command's stderr, shown in error messages)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self.limit and len(self._chunks) > 1:
            first = self._chunks.pop(0)
            self._size -= len(first)
            self.dropped += len(first)
        if self._size > self.limit:
            cut = self._size - self.limit
            self._chunks[0] = self._chunks[0][cut:]
            self._size -= cut
            self.dropped += cut

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


def _feed(pipe: Any, data: bytes) -> None:
    """Write a command's stdin from a thread of its own (a command that does not read it cannot block us)."""
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError, ValueError):
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


TransportFactory = Callable[..., Transport]
_REGISTRY: dict[str, Callable[[], type[Transport]]] = {}


def register_transport(name: str, loader: Callable[[], type[Transport]]) -> None:
    """Register a transport class under ``name``; ``loader`` imports it lazily."""
    _REGISTRY[name] = loader


def transport_class(name: str) -> type[Transport]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ProfileError(f"unknown transport {name!r}: expected one of {sorted(_REGISTRY)}{hint}")
    return _REGISTRY[name]()


def list_transports() -> list[str]:
    return sorted(_REGISTRY)


register_transport("local", lambda: LocalTransport)


def open_transport(kind: str, settings: dict[str, Any], *, device: str, workdir: str) -> Transport:
    """Open a transport of ``kind`` with the profile's ``settings`` (already validated)."""
    cls = transport_class(kind)
    if cls is LocalTransport:
        return LocalTransport(device=device, workdir=workdir)
    return cls(device=device, workdir=workdir, **settings)


# -- the work folder ------------------------------------------------------------------------
# Made by the device user, 0700 (umask 077 and an explicit chmod), and refused when it is a symlink, not a
# folder, or owned by someone else: nothing another user of a shared board planted is run or trusted.
# ``~`` and ``~/...`` are the device user's $HOME. Prints ``hwnas-workdir:PATH`` or ``hwnas-workdir-refused:WHY``.
_WORKDIR_SCRIPT = r"""
d=$1
case "$d" in
  "~") d=$HOME ;;
  "~/"*) d="${HOME%/}/${d#??}" ;;
esac
while [ "${#d}" -gt 1 ] && [ "${d%/}" != "$d" ]; do d=${d%/}; done
case "$d" in
  /*) ;;
  *) echo "hwnas-workdir-refused:cannot place it: the device user has no absolute HOME ('$HOME')"; exit 0 ;;
esac
umask 077
parent=${d%/*}
[ -n "$parent" ] && mkdir -p -- "$parent" 2>/dev/null
[ -e "$d" ] || [ -L "$d" ] || mkdir -m 700 -- "$d" 2>/dev/null
if [ -L "$d" ]; then echo "hwnas-workdir-refused:$d is a symbolic link"; exit 0; fi
if [ ! -d "$d" ]; then echo "hwnas-workdir-refused:$d is not a folder (or cannot be made)"; exit 0; fi
if [ ! -O "$d" ]; then echo "hwnas-workdir-refused:$d belongs to another user"; exit 0; fi
chmod 700 -- "$d" || { echo "hwnas-workdir-refused:cannot make $d private (chmod 700)"; exit 0; }
printf 'hwnas-workdir:%s\n' "$d"
"""


def prepare_workdir(transport: Transport, setting: str) -> str:
    """Make the work folder ``setting`` on the device (``~`` is the device user's home) and return its absolute
    path. Raises WorkdirRefused when it is a symlink, not a folder or owned by another user."""
    res = transport.run(["sh", "-c", _WORKDIR_SCRIPT, "hwnas-workdir", setting],
                        description="prepare the work folder", timeout=60, check=False)
    for line in res.stdout.splitlines():
        if line.startswith("hwnas-workdir:"):
            return line[len("hwnas-workdir:"):]
        if line.startswith("hwnas-workdir-refused:"):
            raise WorkdirRefused(
                f"refusing the work folder {setting!r}: {line[len('hwnas-workdir-refused:'):]}",
                device=transport.device,
                hint="files there could have been planted by someone else: pick a 'workdir' of your own in the "
                     "profile (the default ~/.cache/hwnas is per user), or remove that path on the device",
            )
    raise DeviceError(f"cannot prepare the work folder {setting!r}", device=transport.device,
                      returncode=res.returncode, output=(res.stdout + res.stderr)[-2000:])


# -- remote commands (ssh, adb) -----------------------------------------------------------
# A remote argv runs under a small POSIX-sh wrapper, built here so that quoting stays in
# one place: ``exec sh -c SCRIPT hwnas ARGV...``. The wrapper prints its PID on the first
# line (so a command past its timeout can be killed, with its process group, over a second
# channel) and, for transports without exit codes (adb's legacy shell service), a marker
# with ``$?`` at the end. ``exec`` makes the wrapper the process the remote daemon started
# (a session leader under sshd and adbd), and running ``"$@"`` as a child (never ``exec``)
# keeps the exit status of a signalled command as the usual 128+N.


def pid_marker(token: str) -> str:
    return f"hwnas-pid-{token}:"


def exit_marker(token: str) -> str:
    return f"hwnas-rc-{token}:"


def remote_command(
    argv: Sequence[str], *, token: str, report_exit: bool = False, stdin_path: str | None = None
) -> str:
    """The shell string that runs ``argv`` on a device under the PID/exit-code wrapper.

    ``stdin_path`` names a file on the device fed to the command's stdin (and removed).
    """
    if not argv:
        raise ValueError("empty argv")
    args = [str(a) for a in argv]
    script = f'echo "{pid_marker(token)}$$"; '
    if stdin_path is not None:
        script += 'f=$1; shift; "$@" < "$f"; rc=$?; rm -f -- "$f"; '
        args = [stdin_path, *args]
    else:
        script += '"$@"; rc=$?; '
    if report_exit:
        script += f'echo "{exit_marker(token)}$rc"; '
    script += "exit $rc"
    return shell_join(["exec", "sh", "-c", script, "hwnas", *args])


def kill_command(pid: int) -> str:
    """Kill a wrapper started by :func:`remote_command` and its process group."""
    # Shells disagree on kill's options (dash rejects "kill -9 -- -PID"): try the POSIX
    # form, then the older one, for the group; then the PID itself, in case it leads none.
    script = (
        'kill -s KILL -- "-$1" 2>/dev/null || kill -9 "-$1" 2>/dev/null; '
        'kill -s KILL "$1" 2>/dev/null || kill -9 "$1" 2>/dev/null; exit 0'
    )
    return shell_join(["sh", "-c", script, "hwnas-kill", str(int(pid))])


class RemoteOutput:
    """Splits a wrapper's stdout into lines, taking out the PID line and the exit marker.

    Bytes are split on ``\\n`` before decoding, so a multi-byte character is never cut.
    ``stdout`` is the command's output byte-for-byte (decoded), without the markers.
    """

    def __init__(self, token: str, on_line: LineCallback | None) -> None:
        self._pid_prefix = pid_marker(token).encode()
        self._rc_marker = exit_marker(token).encode()
        self._on_line = on_line
        self._buf = bytearray()  # grows in place: a long line arriving in small chunks stays linear
        self._parts: list[str] = []
        self._size = 0
        self.pid: int | None = None
        self.returncode: int | None = None

    @property
    def overflow(self) -> bool:
        """More than ``MAX_OUTPUT_BYTES`` came: the rest is dropped, and the transport stops the command."""
        return self._size > MAX_OUTPUT_BYTES

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        if self.overflow:
            return
        self._buf += data
        if b"\n" not in data:
            return  # a line is handed on whole, however long: the output's own cap bounds it
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        for raw in lines:
            self._line(raw, complete=True)

    def finish(self) -> None:
        if self._buf:
            raw, self._buf = bytes(self._buf), bytearray()
            self._line(raw, complete=False)

    @property
    def stdout(self) -> str:
        return "".join(self._parts)

    def _line(self, raw: bytes, *, complete: bool) -> None:
        if self.pid is None and raw.startswith(self._pid_prefix):
            # Normally the first line; a chatty login shell may print before it.
            if raw[len(self._pid_prefix) :].strip().isdigit():
                self.pid = int(raw[len(self._pid_prefix) :].strip())
                return
        if self.returncode is None:
            at = raw.find(self._rc_marker)
            if at >= 0 and raw[at + len(self._rc_marker) :].strip().isdigit():
                self.returncode = int(raw[at + len(self._rc_marker) :].strip())
                raw, complete = raw[:at], False  # what came before the marker had no newline
                if not raw:
                    return
        text = raw.decode("utf-8", "replace")
        self._parts.append(text + "\n" if complete else text)
        if self._on_line is not None:
            self._on_line(text)


register_transport("ssh", lambda: importlib.import_module(".ssh", __package__).SSHTransport)
register_transport("adb", lambda: importlib.import_module(".adb", __package__).ADBTransport)
