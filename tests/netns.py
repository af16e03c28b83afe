"""Helpers for the tests that start real servers (sshd, adbd) in a network namespace.

Not a test module. Everything here is real: ``ip netns`` namespaces, Debian packages
installed with apt when missing, OpenSSH's ``sshd`` and Android's ``adbd`` as child
processes. The servers listen on 127.0.0.1 *inside* a namespace the test creates, so the
hwnas client under test runs inside it too (:func:`ns_python`); nothing connects to any
address outside the namespace's loopback.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
APT_LOCK = Path("/tmp/hwnas-tests-apt.lock")
BACKPORTS_SOURCES = Path("/etc/apt/sources.list.d/hwnas-tests-backports.sources")
APT_TIMEOUT_S = 600  # one apt-get call; below pytest's timeout (pyproject.toml), so a stuck apt fails with a message
#: Every system package the tests use: (binary, Debian package, from backports).
SYSTEM_PACKAGES = (
    ("ip", "iproute2", False),
    ("/usr/sbin/sshd", "openssh-server", False),
    ("ssh-keygen", "openssh-client", False),
    ("adbd", "adbd", True),
    ("adb", "adb", True),
    ("chromium", "chromium", False),
)
#: What the test set-up installed in this process ("package (binary)"), for the end-of-run summary.
INSTALLED: list[str] = []


class Unavailable(RuntimeError):
    """A real component this machine cannot provide (no root, no apt-get, the install failed).

    The fixtures skip with the reason, or fail in strict mode (``HWNAS_STRICT=1``, as ``.ci/run``
    runs). Any other RuntimeError from here (a server that does not start) is a failure, never a skip."""


def read_line(stream: IO[str], *, timeout: float, what: str) -> str:
    """One line from a child's pipe within ``timeout`` seconds; AssertionError naming ``what`` otherwise.

    Never a bare ``readline()``: a child that hangs without printing fails the test with a message. (A
    thread reads, not select(): lines already in the pipe object's buffer are not visible to select.)"""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not got:
        raise AssertionError(f"no line from {what} within {timeout:g} s")
    return got[0]


# --------------------------------------------------------------------------- namespaces


def netns_unavailable_reason() -> str | None:
    """Why the netns tests cannot run here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root for ip netns: run the tests as root (CI does)"
    try:
        ensure_system_package("ip", "iproute2")
    except Unavailable as exc:
        return f"needs the 'ip' command (iproute2): {exc}"
    name = f"hwnas-probe-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"needs root for ip netns: 'ip netns add' failed ({exc})"
    if proc.returncode != 0:
        return f"needs root for ip netns: 'ip netns add' failed ({proc.stderr.strip()})"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)
    return None


def create_netns() -> str:
    """A fresh namespace ``hwnas-test-<random>`` with its loopback up."""
    name = f"hwnas-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=20)
    return name


def delete_netns(name: str) -> None:
    """Kill what still runs in the namespace, then delete it."""
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=20)
    for pid in proc.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)


def set_loopback(ns: str, up: bool) -> None:
    """Bring the namespace's loopback up or down (down: packets vanish, no reset is sent)."""
    state = "up" if up else "down"
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", state], check=True, capture_output=True, timeout=20)


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def random_port() -> int:
    """A port for a server in a fresh namespace (nothing else listens there)."""
    return random.randint(20000, 60000)


def wait_for_port(ns: str, port: int, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port inside ``ns``."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(1)\n"
        f"sys.exit(s.connect_ex(('127.0.0.1', {port})))\n"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on port {port}")
        if subprocess.run(ns_argv(ns, [PYTHON, "-c", code]), capture_output=True, timeout=20).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} in {ns} after {timeout:g} s")


@dataclass
class ClientRun:
    """What a client script run inside the namespace printed."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> dict:
        """The last stdout line, parsed as JSON (the client scripts print one)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"client printed nothing; rc={self.returncode} stderr:\n{self.stderr}")
        return json.loads(lines[-1])


def ns_python(
    ns: str,
    code: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    args: Sequence[str] = (),
) -> ClientRun:
    """Run Python ``code`` with the project's interpreter inside ``ns`` (the hwnas client side)."""
    full_env = dict(os.environ)
    full_env.pop("SSH_AUTH_SOCK", None)  # tests use the key files they make, never a user's agent
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.run(
        ns_argv(ns, [PYTHON, "-c", code, *args]),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(REPO),
    )
    return ClientRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


# --------------------------------------------------------------------------- system packages


def _find_binary(binary: str, package: str | None = None) -> str | None:
    if os.path.isabs(binary):
        return binary if os.access(binary, os.X_OK) else None
    found = shutil.which(binary)
    if found:
        return found
    if package is not None:
        # Not on PATH (adbd lands in /usr/lib/android-sdk/platform-tools): ask dpkg.
        proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if os.path.basename(line) == binary and os.path.isfile(line) and os.access(line, os.X_OK):
                return line
    return None


def _debian_source() -> tuple[str, str, str, str | None]:
    """(codename, mirror URI, components, signed-by) of the machine's main Debian source."""
    codename = ""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
    if not codename:
        raise Unavailable("cannot tell the Debian release from /etc/os-release (VERSION_CODENAME)")
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.is_file():
        for stanza in deb822.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if codename in fields.get("suites", "").split() and fields.get("uris"):
                return codename, fields["uris"].split()[0], fields.get("components", "main"), fields.get("signed-by")
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 4 and parts[0] == "deb":
                options = None
                if parts[1].startswith("["):
                    end = next(i for i, p in enumerate(parts) if p.endswith("]"))
                    options, parts = " ".join(parts[1 : end + 1]), [parts[0], *parts[end + 1 :]]
                if parts[2] == codename:
                    signed = None
                    if options and "signed-by=" in options:
                        signed = options.split("signed-by=", 1)[1].split()[0].rstrip("]")
                    return codename, parts[1], " ".join(parts[3:]), signed
    raise Unavailable(f"no apt source for Debian {codename} found to derive the backports suite from")


def _enable_backports() -> str:
    """Add ``<codename>-backports`` from the machine's own Debian mirror; returns the suite."""
    codename, uri, components, signed_by = _debian_source()
    suite = f"{codename}-backports"
    lines = ["Types: deb", f"URIs: {uri}", f"Suites: {suite}", f"Components: {components}"]
    if signed_by:
        lines.append(f"Signed-By: {signed_by}")
    text = "\n".join(lines) + "\n"
    if not BACKPORTS_SOURCES.is_file() or BACKPORTS_SOURCES.read_text() != text:
        BACKPORTS_SOURCES.write_text(text)
    _apt(["apt-get", "update", "-q"])
    return suite


def _apt(argv: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run(
            [argv[0], "-o", "DPkg::Lock::Timeout=300", *argv[1:]],
            capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{' '.join(argv)} did not finish within {APT_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        raise Unavailable(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")


def ensure_system_package(binary: str, package: str, backports: bool = False) -> str:
    """Path of ``binary``, installing Debian ``package`` with apt first when it is missing.

    ``binary`` is a name looked up on PATH (and in the package's file list) or an absolute
    path. With ``backports``, the package comes from ``<codename>-backports``, added as an
    apt source copied from the machine's own Debian source. Raises :class:`Unavailable` when it
    cannot be installed (the fixtures skip with the reason, or fail in strict mode).
    What it installs is recorded in :data:`INSTALLED` (the test run's summary lists it).
    """
    found = _find_binary(binary, package)
    if found:
        return found
    if os.geteuid() != 0:
        raise Unavailable(f"{binary} is missing and installing {package} needs root")
    if shutil.which("apt-get") is None:
        raise Unavailable(f"{binary} is missing and there is no apt-get to install {package}")
    APT_LOCK.touch(exist_ok=True)
    with open(APT_LOCK) as lock:  # one installer at a time among concurrent test runs
        deadline = time.monotonic() + APT_TIMEOUT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"another test run held {APT_LOCK} for {APT_TIMEOUT_S} s") from None
                time.sleep(0.5)
        found = _find_binary(binary, package)
        if found:
            return found
        if backports:
            suite = _enable_backports()
            _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", suite, package])
        else:
            try:
                _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", package])
            except Unavailable:
                _apt(["apt-get", "update", "-q"])
                _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", package])
    found = _find_binary(binary, package)
    if not found:
        raise Unavailable(f"installed {package} but found no executable {binary}")
    INSTALLED.append(f"{package} ({found})")
    print(f"hwnas tests: installed {package} with apt ({found})", file=sys.stderr, flush=True)
    return found


# --------------------------------------------------------------------------- servers


@dataclass
class SSHServer:
    """A real OpenSSH server on 127.0.0.1:port inside namespace ``ns``."""

    ns: str
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    host_key: Path
    config: Path
    log: Path
    proc: subprocess.Popen[bytes]
    sshd: str
    #: The sessions' home (their ~/.bashrc, ~/.profile, caches): a throw-away folder whose start-up files the
    #: tests write, seen by sshd through a copy of /etc/passwd; None: the machine's own home (benchmarks only).
    home: Path | None = None

    def settings(self, **extra: object) -> dict[str, object]:
        """Transport settings for SSHTransport / a profile's ``transport.ssh``."""
        base: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.key_file),
            "known_hosts": str(self.known_hosts),
            "connect_timeout_s": 10,
        }
        base.update(extra)
        return base

    def start(self) -> None:
        """(Re)start sshd with the same host key, config and port."""
        argv = [self.sshd, "-D", "-e", "-f", str(self.config)]
        if self.home is not None:
            # ip netns exec runs its command in a mount namespace of its own (slave to the host's), so this
            # bind mount is seen by sshd and its sessions only: the machine's /etc/passwd is left as it is.
            passwd = _passwd_with_home(self.user, self.home, self.config.parent / "passwd")
            argv = ["sh", "-c", 'mount --bind "$1" /etc/passwd && shift && exec "$@"', "hwnas-sshd", str(passwd),
                    *argv]
        self.proc = subprocess.Popen(
            ns_argv(self.ns, argv),
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the child owns it
        )
        try:
            wait_for_port(self.ns, self.port, proc=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"sshd did not start: {exc}; its log ends: {_tail(self.log)}") from exc

    def kill_all(self) -> None:
        """Kill the listener and every session process it forked (a clean cut: the kernel sends FIN/RST)."""
        session_pids = _children_tree(self.proc.pid)
        for pid in [self.proc.pid, *session_pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill_all()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


def write_home(home: Path) -> Path:
    """A throw-away home whose shell start-up files the tests write: nothing of the machine's dotfiles
    (``pyenv init``, its locks, its PATH) reaches a session that starts there."""
    home.mkdir(parents=True, exist_ok=True)
    text = "# written by the hwnas tests: this throw-away home's only start-up file\nexport HWNAS_TEST_HOME=1\n"
    for name in (".bashrc", ".profile"):
        (home / name).write_text(text)
    return home


def _passwd_with_home(user: str, home: Path, out: Path) -> Path:
    """A copy of /etc/passwd in which ``user``'s home is ``home`` (mounted over /etc/passwd for sshd only)."""
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == user:
            fields[5] = str(home)
        lines.append(":".join(fields))
    out.write_text("\n".join(lines) + "\n")
    return out


def _children_tree(pid: int) -> list[int]:
    """Every descendant of ``pid`` (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:"):
                parents.setdefault(int(line.split()[1]), []).append(int(entry.name))
                break
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def start_sshd(ns: str, workdir: Path, *, plain_rc: bool = False, home: Path | None = None) -> SSHServer:
    """Throw-away host key and user key, an sshd_config in ``workdir``, sshd started in ``ns``.

    bash sources ``~/.bashrc`` for every command sshd runs. With ``home`` the sessions start in that
    throw-away home (:func:`write_home`), so the machine's dotfiles never run (the tests: this machine's
    ``~/.bashrc`` runs ``pyenv init``, whose rehash lock, left by a killed session, makes every later
    shell wait 60 s). ``plain_rc`` is the same with an empty ``.bashrc``, as on a board with stock
    dotfiles; with neither the sessions run the machine's own (benchmarks compare the two).
    Raises :class:`Unavailable` when sshd cannot be installed, RuntimeError when it does not start.
    """
    sshd = ensure_system_package("/usr/sbin/sshd", "openssh-server")
    keygen = ensure_system_package("ssh-keygen", "openssh-client")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    user_key = workdir / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "hwnas-test", "-f", str(key)], check=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text((workdir / "user_ed25519.pub").read_text())
    port = random_port()
    config = workdir / "sshd_config"
    sftp = "internal-sftp"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "MaxSessions 20",
                "MaxStartups 50",
                "LogLevel VERBOSE",
                f"Subsystem sftp {sftp}",
                "",
            ]
        )
    )
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_pub = (workdir / "host_ed25519.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    if plain_rc and home is None:
        home = write_home(workdir / "home")
        (home / ".bashrc").write_text("")
    user = pwd.getpwuid(os.geteuid()).pw_name
    server = SSHServer(
        ns=ns,
        host="127.0.0.1",
        port=port,
        user=user,
        key_file=user_key,
        known_hosts=known_hosts,
        host_key=host_key,
        config=config,
        log=workdir / "sshd.log",
        proc=None,  # type: ignore[arg-type]
        sshd=sshd,
        home=home,
    )
    server.start()
    return server


def find_adbd() -> str:
    """The adbd binary, installing Debian's ``adbd`` from backports when it is missing."""
    for candidate in ("/usr/lib/android-sdk/platform-tools/adbd",):
        if os.access(candidate, os.X_OK):
            return candidate
    return ensure_system_package("adbd", "adbd", backports=True)


@dataclass
class ADBServer:
    """A real adbd listening on port ``port`` (all interfaces of namespace ``ns``)."""

    ns: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def settings(self, **extra: object) -> dict[str, object]:
        base: dict[str, object] = {"host": self.host, "port": self.port, "connect_timeout_s": 10}
        base.update(extra)
        return base

    def stop(self) -> None:
        for pid in [*_children_tree(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def start_adbd(ns: str, workdir: Path) -> ADBServer:
    """adbd on a random port in ``ns``; its shells start in a throw-away home (:func:`write_home`).

    Raises :class:`Unavailable` when adbd cannot be installed, RuntimeError when it does not start."""
    adbd = find_adbd()
    port = random_port()
    log = workdir / "adbd.log"
    env = dict(os.environ, ADBD_PORT=str(port), HOME=str(write_home(workdir / "adbd-home")))
    proc = subprocess.Popen(
        ns_argv(ns, [adbd]),
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=str(workdir),
    )
    server = ADBServer(ns=ns, host="127.0.0.1", port=port, proc=proc, log=log)
    try:
        wait_for_port(ns, port, proc=proc)
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"adbd did not start: {exc}; its log ends: {_tail(log)}") from exc
    return server


# --------------------------------------------------------------------------- set-up


def install_all() -> int:
    """Install every system package the tests use (``python3 tests/netns.py install``, run by .ci/run as
    root); says what it installed and what was there already. Exit status 1 when one cannot be had."""
    status = 0
    for binary, package, backports in SYSTEM_PACKAGES:
        before = len(INSTALLED)
        try:
            path = ensure_system_package(binary, package, backports=backports)
        except Unavailable as exc:
            print(f"missing   {package}: {exc}", flush=True)
            status = 1
            continue
        print(f"{'installed' if len(INSTALLED) > before else 'present  '} {package} ({path})", flush=True)
    return status


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python3 tests/netns.py install")
    sys.exit(install_all())
