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
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
APT_LOCK = Path("/tmp/hwnas-tests-apt.lock")
BACKPORTS_SOURCES = Path("/etc/apt/sources.list.d/hwnas-tests-backports.sources")


# --------------------------------------------------------------------------- namespaces


def netns_unavailable_reason() -> str | None:
    """Why the netns tests cannot run here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root for ip netns: run the tests as root (CI does)"
    if shutil.which("ip") is None:
        return "needs root for ip netns: the 'ip' command (iproute2) is not installed"
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
        raise RuntimeError("cannot tell the Debian release from /etc/os-release (VERSION_CODENAME)")
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
    raise RuntimeError(f"no apt source for Debian {codename} found to derive the backports suite from")


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
    proc = subprocess.run(
        [argv[0], "-o", "DPkg::Lock::Timeout=300", *argv[1:]], capture_output=True, text=True, env=env, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")


def ensure_system_package(binary: str, package: str, backports: bool = False) -> str:
    """Path of ``binary``, installing Debian ``package`` with apt first when it is missing.

    ``binary`` is a name looked up on PATH (and in the package's file list) or an absolute
    path. With ``backports``, the package comes from ``<codename>-backports``, added as an
    apt source copied from the machine's own Debian source. Raises RuntimeError when it
    cannot be installed (the fixtures turn that into a skip with the reason).
    """
    found = _find_binary(binary, package)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{binary} is missing and installing {package} needs root")
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{binary} is missing and there is no apt-get to install {package}")
    APT_LOCK.touch(exist_ok=True)
    with open(APT_LOCK) as lock:  # one installer at a time among concurrent test runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _find_binary(binary, package)
        if found:
            return found
        if backports:
            suite = _enable_backports()
            _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-t", suite, package])
        else:
            try:
                _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", package])
            except RuntimeError:
                _apt(["apt-get", "update", "-q"])
                _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", package])
    found = _find_binary(binary, package)
    if not found:
        raise RuntimeError(f"installed {package} but found no executable {binary}")
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
    plain_rc: Path | None = None  # an empty file mounted over ~/.bashrc for the server's sessions

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
        rc = Path(os.path.expanduser("~root/.bashrc"))
        if self.plain_rc is not None and rc.exists():
            # ip netns exec runs its command in a mount namespace of its own (slave to the host's), so this
            # bind mount is seen by sshd and its sessions only: the machine's ~/.bashrc is left as it is.
            argv = ["sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "hwnas-sshd", str(self.plain_rc),
                    str(rc), *argv]
        self.proc = subprocess.Popen(
            ns_argv(self.ns, argv),
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 - the child owns it
        )
        wait_for_port(self.ns, self.port, proc=self.proc)

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


def start_sshd(ns: str, workdir: Path, *, plain_rc: bool = False) -> SSHServer:
    """Throw-away host key and user key, an sshd_config in ``workdir``, sshd started in ``ns``.

    bash sources ``~/.bashrc`` for every command sshd runs; with ``plain_rc`` the server's sessions see an
    empty one instead, as on a board with stock dotfiles (benchmarks: this machine's runs ``pyenv init``,
    which costs 0.2-0.45 s per command). The tests keep the real one.
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
    empty_rc = workdir / "empty_bashrc" if plain_rc else None
    if empty_rc is not None:
        empty_rc.write_text("")
    server = SSHServer(
        ns=ns,
        host="127.0.0.1",
        port=port,
        user="root",
        key_file=user_key,
        known_hosts=known_hosts,
        host_key=host_key,
        config=config,
        log=workdir / "sshd.log",
        proc=None,  # type: ignore[arg-type]
        sshd=sshd,
        plain_rc=empty_rc,
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
    adbd = find_adbd()
    port = random_port()
    log = workdir / "adbd.log"
    env = dict(os.environ, ADBD_PORT=str(port))
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
    except RuntimeError:
        server.stop()
        raise
    return server
