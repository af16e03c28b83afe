"""One profiling run per device at a time: a lock on the device itself.

The lock is a directory, ``<workdir>/hwnas.lock``, made with ``mkdir`` (atomic on every
POSIX file system, so two hosts racing for one device cannot both win). It holds
``owner`` (one JSON line: host, pid and start time of the hwnas process that took it, and
a run id) and, while a runner runs, ``runner.pid`` (the PID on the device of the runner's
wrapper from :meth:`DeviceLock.runner_argv`, removed when the runner ends).

A lock is *stale*, and cleared with a warning, when its recorded runner PID no longer runs
on the device (the runner died without cleaning up: killed, link hang-up, reboot), or, with
no runner recorded, when the hwnas process that took it ran on this host and is gone.
Otherwise :class:`~.errors.DeviceBusy` (a lock from another host with no runner running
cannot be judged from here: its message says how to remove it). With ``resume=True`` a lock left
by an earlier, dead hwnas process on this host is taken over even while its runner still
runs: that runner is killed first (``--resume``).

Everything goes through ``transport.run`` with argv lists, so the lock works over every
transport.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import DeviceBusy, DeviceError
from .transport import Transport

log = logging.getLogger(__name__)

LOCK_NAME = "hwnas.lock"
COMMAND_TIMEOUT_S = 60.0

_ACQUIRE = r"""
mkdir -p -- "$1" || exit 4
if mkdir -- "$2" 2>/dev/null; then
  printf '%s\n' "$3" > "$2/owner" || { rm -rf -- "$2"; exit 4; }
  exit 0
fi
[ -d "$2" ] || exit 4
printf '%s\n' "$(cat -- "$2/owner" 2>/dev/null)" "$(cat -- "$2/runner.pid" 2>/dev/null)"
exit 3
"""

# Remove the lock only if it still holds the owner line we expect (another host may have
# cleared and retaken it in between).
_REMOVE_IF = r"""
[ -d "$1" ] || exit 0
[ "$(cat -- "$1/owner" 2>/dev/null)" = "$2" ] || exit 3
rm -rf -- "$1"
"""

# The runner's wrapper records its PID while the runner runs and removes it when the runner
# ends (a run measures in batches: between two, no runner runs and the lock is not stale).
# Only a wrapper that died itself (killed with its process group, a reboot, a hang-up when
# the link dropped) leaves a PID that no longer runs.
_RUNNER = 'l=$1; shift; printf "%s\\n" "$$" > "$l/runner.pid"; "$@"; rc=$?; rm -f -- "$l/runner.pid"; exit $rc'

# Kill a process and all its descendants (each stopped first, then its children, found through /proc,
# then itself): the runner's wrapper recorded in the lock and the runner below it.
_KILL_TREE = r"""
kill_tree() {
  kill -s STOP "$1" 2>/dev/null || kill -STOP "$1" 2>/dev/null  # frozen: it cannot react to its children dying
  for c in $(for d in /proc/[0-9]*; do
               [ "$(sed -n 's/^PPid:[[:space:]]*//p' "$d/status" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"
             done); do
    kill_tree "$c"
  done
  kill -9 "$1" 2>/dev/null
}
kill_tree "$1"
exit 0
"""

# Exit 0 while PID $1 runs (not a zombie), trying $2 times 0.1 s apart for it to go.
_ALIVE = r"""
i=0
while [ "$i" -lt "$2" ]; do
  [ -d "/proc/$1" ] || exit 1
  case "$(sed -n 's/^State:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)" in Z*|X*|"") exit 1 ;; esac
  i=$((i+1)); [ "$i" -lt "$2" ] && sleep 0.1
done
exit 0
"""

# Kill every process whose command line contains "$1$2". The pattern arrives split in two
# arguments so that this shell (and its forks for $(...)), whose own command line holds
# them, never matches itself; its ancestors (the transport's wrappers) are skipped too.
_KILL_MATCHING = r"""
target="$1$2"
anc=" $$ "; p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ] 2>/dev/null; do
  p=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null)
  anc="$anc$p "
done
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  case "$anc" in *" $pid "*) continue ;; esac
  cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) || continue
  case "$cmd" in *"$target"*) kill -9 "$pid" 2>/dev/null && echo "$pid" ;; esac
done
exit 0
"""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a device's lock: the hwnas process (``pid``) on a host, named by its host name, its machine id
    (two containers or clones may share a host name) and its boot id (a PID from before a reboot is no one's)."""

    host: str
    pid: int
    started: str
    run_id: str
    machine_id: str = ""
    boot_id: str = ""

    def to_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_line(cls, line: str) -> LockOwner | None:
        try:
            data = json.loads(line)
            return cls(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]),
                       run_id=str(data["run_id"]), machine_id=str(data.get("machine_id", "")),
                       boot_id=str(data.get("boot_id", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def same_machine(self, other: LockOwner) -> bool:
        """Both on one machine: the same host name and, where both recorded one, the same machine id."""
        if self.host != other.host:
            return False
        return not (self.machine_id and other.machine_id and self.machine_id != other.machine_id)

    def gone_on_this_machine(self, me: LockOwner) -> str | None:
        """Why this owner's process is surely gone (it ran on ``me``'s machine), or None when it may live."""
        if not self.same_machine(me):
            return None
        if self.boot_id and me.boot_id and self.boot_id != me.boot_id:
            return f"the host {self.host} rebooted since (pid {self.pid} was of an earlier boot)"
        if not _local_pid_alive(self.pid):
            return f"the hwnas process that took it (pid {self.pid} on this host) is gone"
        return None


def _read_id(*paths: str) -> str:
    for path in paths:
        try:
            with open(path) as fh:
                value = fh.read().strip()
        except OSError:
            continue
        if value:
            return value
    return ""


def machine_id() -> str:
    """This machine's id (systemd's /etc/machine-id), or "" where it has none."""
    return _read_id("/etc/machine-id", "/var/lib/dbus/machine-id")


def boot_id() -> str:
    """The id of this boot of this machine's kernel (Linux), or ""."""
    return _read_id("/proc/sys/kernel/random/boot_id")


class DeviceLock:
    """The lock of one device; use as a context manager or call acquire()/release().

    ``run_id`` identifies this run (a random one by default).
    """

    def __init__(self, transport: Transport, *, run_id: str | None = None) -> None:
        self.transport = transport
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.owner = LockOwner(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            run_id=self.run_id,
            machine_id=machine_id(),
            boot_id=boot_id(),
        )
        self.held = False

    @property
    def path(self) -> str:
        return posixpath.join(self.transport.workdir, LOCK_NAME)

    @property
    def device(self) -> str:
        return self.transport.device

    def _run(self, argv: Sequence[str], description: str, check: bool = False) -> Any:
        return self.transport.run(argv, description=description, timeout=COMMAND_TIMEOUT_S, check=check)

    def acquire(self, *, resume: bool = False) -> DeviceLock:
        """Take the lock; raises DeviceBusy when a live run holds it.

        With ``resume``, a lock left by a dead hwnas process of this host is taken over and
        its leftover runner killed.
        """
        for _ in range(5):
            res = self._run(
                ["sh", "-c", _ACQUIRE, "hwnas-lock", self.transport.workdir, self.path, self.owner.to_line()],
                "take the device lock",
            )
            if res.returncode == 0:
                self.held = True
                log.debug("%s: locked %s (run %s)", self.device, self.path, self.run_id)
                return self
            if res.returncode != 3:
                raise DeviceError(
                    f"cannot create the lock {self.path}",
                    device=self.device,
                    returncode=res.returncode,
                    output=(res.stdout + res.stderr)[-2000:],
                    hint="check that the profile's workdir is writable on the device",
                )
            lines = res.stdout.split("\n")
            owner_line = lines[0].strip() if lines else ""
            runner_pid = _int(lines[1]) if len(lines) > 1 else None
            owner = LockOwner.from_line(owner_line)
            if owner is None:
                # mkdir done, owner not yet written (a racing acquirer), or a broken lock.
                time.sleep(1.0)
                again = self._read()
                if again is not None and again[0].strip() != owner_line:
                    continue
                log.warning("%s: clearing an unreadable device lock %s", self.device, self.path)
                self._remove_if(owner_line)
                continue
            stale = self._stale_reason(owner, runner_pid)
            if stale:
                log.warning(
                    "%s: clearing a stale lock of run %s (host %s, pid %s, since %s): %s",
                    self.device,
                    owner.run_id,
                    owner.host,
                    owner.pid,
                    owner.started,
                    stale,
                )
                self._remove_if(owner_line)
                continue
            if resume and owner.gone_on_this_machine(self.owner):
                log.warning(
                    "%s: taking over the lock of the broken run %s (hwnas pid %s on this host is gone)",
                    self.device,
                    owner.run_id,
                    owner.pid,
                )
                if runner_pid is not None:
                    self._run(["sh", "-c", _KILL_TREE, "hwnas-kill-tree", str(runner_pid)], "stop the broken run's runner")
                self._remove_if(owner_line)
                continue
            raise DeviceBusy(
                f"another profiling run holds the device (run {owner.run_id}, hwnas pid {owner.pid} on "
                f"{owner.host}, since {owner.started}"
                + (f", runner pid {runner_pid} on the device" if runner_pid else "")
                + ")",
                device=self.device,
                hint=(
                    "wait for it to finish"
                    + (", or rerun with --resume if that run broke" if owner.same_machine(self.owner) else "")
                    + f"; if you are sure no run is active, remove {self.path} on the device"
                ),
            )
        raise DeviceBusy(f"could not take the lock {self.path}: it kept changing hands", device=self.device)

    def _read(self) -> tuple[str, int | None] | None:
        res = self._run(
            ["sh", "-c", '[ -d "$1" ] || exit 3; printf "%s\\n" "$(cat -- "$1/owner" 2>/dev/null)" '
             '"$(cat -- "$1/runner.pid" 2>/dev/null)"', "hwnas-lock", self.path],
            "read the device lock",
        )
        if res.returncode != 0:
            return None
        lines = res.stdout.split("\n")
        return lines[0], _int(lines[1]) if len(lines) > 1 else None

    def _stale_reason(self, owner: LockOwner, runner_pid: int | None) -> str | None:
        if runner_pid is not None:
            if not self._device_pid_alive(runner_pid):
                return f"its runner (pid {runner_pid}) no longer runs on the device"
            return None
        return owner.gone_on_this_machine(self.owner)

    def _device_pid_alive(self, pid: int, *, wait_s: float = 0.0) -> bool:
        """Whether ``pid`` runs on the device (a zombie, dead but not yet reaped, does not); with ``wait_s``, give it
        that long to go (a killed process takes a moment)."""
        res = self._run(["sh", "-c", _ALIVE, "hwnas-alive", str(int(pid)), str(max(1, int(wait_s * 10)))],
                        "check the runner on the device")
        return res.returncode == 0

    def _remove_if(self, owner_line: str) -> bool:
        res = self._run(["sh", "-c", _REMOVE_IF, "hwnas-unlock", self.path, owner_line], "clear the device lock")
        return res.returncode == 0

    def runner_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so that the lock records it (``runner.pid``) while it runs.

        The PID recorded is the wrapper's, which waits for ``argv`` and removes the record
        when it ends.
        """
        return ["sh", "-c", _RUNNER, "hwnas-runner", self.path, *[str(a) for a in argv]]

    def release(self) -> None:
        """Remove the lock if this run still holds it, and never while a runner of it still runs on the device
        (one that outlived an interrupted command is killed first; one that cannot be killed keeps the lock)."""
        if not self.held:
            return
        self.held = False
        try:
            state = self._read()
            runner_pid = state[1] if state is not None and state[0].strip() == self.owner.to_line() else None
            if runner_pid is not None and self._device_pid_alive(runner_pid):
                log.warning("%s: a runner (pid %s) still runs on the device; stopping it before unlocking",
                            self.device, runner_pid)
                self._run(["sh", "-c", _KILL_TREE, "hwnas-kill-tree", str(runner_pid)], "stop the runner")
                if self._device_pid_alive(runner_pid, wait_s=3.0):
                    log.warning("%s: the runner (pid %s) survived; the device lock %s stays (a later run clears it "
                                "once the runner is gone)", self.device, runner_pid, self.path)
                    return
            if not self._remove_if(self.owner.to_line()):
                log.warning("%s: the device lock %s was taken over by another run; left alone", self.device, self.path)
        except DeviceError as exc:
            log.warning("%s: could not remove the device lock %s: %s", self.device, self.path, exc)

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def kill_leftover_runners(transport: Transport, pattern: str | None = None, *, timeout: float = 60.0) -> list[int]:
    """Kill the processes on the device whose command line contains ``pattern``.

    ``pattern`` defaults to ``<workdir>/runner/`` (every runner version hwnas pushed).
    For ``--resume``: a runner left over from a broken run still measures and heats the
    device. Returns the PIDs killed. Uses ``/proc``, so it needs neither pkill nor ps.
    """
    pattern = pattern or posixpath.join(transport.workdir, "runner") + "/"
    if len(pattern) < 2:
        raise ValueError(f"pattern too short to match runners safely: {pattern!r}")
    half = len(pattern) // 2
    res = transport.run(
        ["sh", "-c", _KILL_MATCHING, "hwnas-kill-runners", pattern[:half], pattern[half:]],
        description="kill runners left over on the device",
        timeout=timeout,
        check=True,
    )
    pids = [p for p in (_int(line) for line in res.stdout.splitlines()) if p is not None]
    if pids:
        log.warning("%s: killed leftover runner processes %s", transport.device, ", ".join(map(str, pids)))
    return pids


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _local_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["DeviceLock", "LockOwner", "kill_leftover_runners", "LOCK_NAME"]
