"""ADBTransport against a real adbd, and the ADB RSA key.

Real: Debian's ``adbd`` (from bookworm-backports) started by the test inside a network
namespace with ``ADBD_PORT``, the hwnas client (adb-shell) running inside the namespace,
real commands, files and processes. Not real: this adbd asks no authentication, so the RSA
handshake itself is not exercised here; the key's creation, permissions and signing are
tested on their own. USB cannot exist here: the USB paths are tested only for their
error messages (a missing ``usb`` extra; a libusb "busy" error, simulated by an exception
of libusb's name, which is said where it happens).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import netns as ns_helpers
import pytest

CLIENT = """
import json, sys, time
from hwnas.agents.adb import ADBTransport
from hwnas.agents import errors
settings = json.loads(sys.argv[1])
out = {}
def describe(exc):
    return {"error": type(exc).__name__, "message": str(exc), "exit_code": getattr(exc, "exit_code", None),
            "device": getattr(exc, "device", None), "hint": getattr(exc, "hint", None)}
try:
    t = ADBTransport(device="phone", workdir=settings.pop("workdir", "/tmp/hwnas-adb-test"), **settings)
%s
except Exception as exc:
    out.update(describe(exc))
print(json.dumps(out), flush=True)
"""


def client(server: ns_helpers.ADBServer, body: str, *, tmp: Path, timeout: float = 90, **settings: object) -> dict:
    code = CLIENT % textwrap.indent(textwrap.dedent(body), "    ")
    run = ns_helpers.ns_python(
        server.ns,
        code,
        args=[json.dumps(server.settings(**settings))],
        timeout=timeout,
        env={"XDG_CONFIG_HOME": str(tmp / "config")},  # never the user's own ADB key
    )
    result = run.json()
    result["_stderr"] = run.stderr
    return result


HOSTILE = [
    "; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "a b  c",
    "it's",
    'say "hi"',
    "new\nline",
    "*",
    "$HOME",
    "back\\slash",
    "",
    "| touch {marker}",
    "ünïcødé ✓",
]


@pytest.mark.netns
def test_run_exit_codes_and_hostile_arguments(adbd_server: ns_helpers.ADBServer, tmp_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    args = [a.format(marker=marker) for a in HOSTILE]
    body = f"""
    args = {args!r}
    lines = []
    r = t.run([{sys.executable!r}, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *args],
              description="echo args", timeout=30, on_line=lines.append)
    out["argv"] = json.loads(r.stdout)
    out["lines"] = lines
    out["rcs"] = [t.run(argv, description="rc", timeout=30, check=False).returncode
                  for argv in (["true"], ["sh", "-c", "exit 3"], ["no-such-command-hwnas"])]
    out["partial"] = t.run(["printf", "no newline"], description="partial", timeout=30).stdout
    out["two"] = t.run(["printf", "a\\\\nb\\\\n"], description="two lines", timeout=30).stdout
    out["stdin"] = t.run(["cat"], description="stdin", timeout=30, stdin=b"via a file\\n").stdout
    try:
        t.run(["sh", "-c", "echo oops; exit 3"], description="failing step", timeout=30)
    except errors.DeviceError as exc:
        out["check"] = describe(exc)
    start = time.monotonic()
    r = t.run(["sleep", "3"], description="silent", timeout=30)  # longer than connect_timeout_s
    out["silent"] = [r.returncode, time.monotonic() - start]
    """
    res = client(adbd_server, body, tmp=tmp_path, connect_timeout_s=1)
    assert "error" not in res, res
    assert res["argv"] == args
    assert res["lines"] == [json.dumps(args)]  # the PID line and the exit marker are taken out
    assert res["rcs"] == [0, 3, 127]
    assert res["partial"] == "no newline"
    assert res["two"] == "a\nb\n"
    assert res["stdin"] == "via a file\n"
    assert res["check"]["error"] == "DeviceError" and "exit code 3" in res["check"]["message"]
    assert "oops" in res["check"]["message"]  # stderr and stdout are one stream on ADB
    assert res["silent"][0] == 0 and res["silent"][1] >= 3
    assert not marker.exists()


@pytest.mark.netns
def test_push_pull_round_trip_and_timeout(adbd_server: ns_helpers.ADBServer, tmp_path: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 5)
    src = tmp_path / "model.tflite"
    src.write_bytes(payload)
    src.chmod(0o750)
    remote = tmp_path / "on device $(touch x) 'q'" / "mödel; 1.tflite"
    back = tmp_path / "back" / "model.tflite"
    tag = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 1000 + 1000}"
    body = f"""
    t.push({str(src)!r}, {str(remote)!r})
    t.pull({str(remote)!r}, {str(back)!r})
    try:
        t.pull({str(remote.parent / 'missing')!r}, {str(tmp_path / 'missing')!r})
    except errors.DeviceError as exc:
        out["missing"] = describe(exc)
    start = time.monotonic()
    try:
        t.run(["sh", "-c", "echo begun; sleep 1{tag} & sleep 2{tag}; wait"], description="hang", timeout=2)
    except errors.DeviceTimeout as exc:
        out["timeout"] = describe(exc)
    out["elapsed"] = time.monotonic() - start
    out["after"] = t.run(["echo", "usable"], description="after", timeout=10).stdout
    """
    res = client(adbd_server, body, tmp=tmp_path)
    assert "error" not in res, res
    assert remote.read_bytes() == payload and back.read_bytes() == payload
    assert stat.S_IMODE(remote.stat().st_mode) == 0o750
    assert not list(remote.parent.glob("*hwnas-part*"))
    assert res["missing"]["error"] == "DeviceError"
    assert res["timeout"]["error"] == "DeviceTimeout" and "begun" in res["timeout"]["message"]
    assert res["elapsed"] < 8 and res["after"] == "usable\n"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pids(tag):
        time.sleep(0.1)
    assert not _pids(tag), "the command or its child survived the timeout"


def _pids(tag: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", f"sleep [12]{tag}"], capture_output=True, text=True).stdout.split()


@pytest.mark.netns
def test_silently_dropped_tcp_link_is_link_lost(adbd_server: ns_helpers.ADBServer, tmp_path: Path) -> None:
    body = """
    start = time.monotonic()
    try:
        t.run(["sh", "-c", "echo started; sleep 60"], description="benchmark", timeout=120,
              on_line=lambda line: print(line, flush=True))
    except errors.LinkLost as exc:
        out.update(describe(exc))
    out["elapsed"] = time.monotonic() - start
    """
    code = CLIENT % textwrap.indent(textwrap.dedent(body), "    ")
    proc = subprocess.Popen(
        ns_helpers.ns_argv(
            adbd_server.ns,
            [sys.executable, "-c", code, json.dumps(adbd_server.settings(keepalive_s=1, keepalive_count=3))],
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")),
    )
    assert proc.stdout is not None
    assert "started" in ns_helpers.read_line(proc.stdout, timeout=60, what="the adb client")
    dropped = time.monotonic()
    ns_helpers.set_loopback(adbd_server.ns, up=False)  # packets vanish: no FIN, no RST
    try:
        stdout, stderr = proc.communicate(timeout=40)
        noticed = time.monotonic() - dropped
    finally:
        ns_helpers.set_loopback(adbd_server.ns, up=True)
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res.get("error") == "LinkLost", (res, stderr)
    assert res["device"] == "phone" and "--resume" in res["hint"]
    assert noticed < 15, f"took {noticed:.1f} s to notice a silent link"


@pytest.mark.netns
def test_killed_adbd_is_link_lost(adbd_server: ns_helpers.ADBServer, tmp_path: Path) -> None:
    body = """
    try:
        t.run(["sh", "-c", "echo started; sleep 60"], description="benchmark", timeout=120,
              on_line=lambda line: print(line, flush=True))
    except errors.LinkLost as exc:
        out.update(describe(exc))
    """
    code = CLIENT % textwrap.indent(textwrap.dedent(body), "    ")
    proc = subprocess.Popen(
        ns_helpers.ns_argv(adbd_server.ns, [sys.executable, "-c", code, json.dumps(adbd_server.settings())]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")),
    )
    assert proc.stdout is not None
    assert "started" in ns_helpers.read_line(proc.stdout, timeout=60, what="the adb client")
    adbd_server.stop()  # adbd and the shell it started: the kernel closes the socket
    stdout, stderr = proc.communicate(timeout=30)
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res.get("error") == "LinkLost", (res, stderr)
    assert res["exit_code"] == 1 and res["device"] == "phone" and "--resume" in res["hint"]
    assert stderr == ""  # one message, from hwnas, and no noise


@pytest.mark.netns
def test_command_killed_on_a_live_device_is_a_device_error(adbd_server: ns_helpers.ADBServer, tmp_path: Path) -> None:
    # The command kills hwnas's wrapper shell (its parent): the stream ends without an exit status
    # while adbd stays up, so this is the command's failure, not a lost link; the link still works.
    body = """
    try:
        t.run(["sh", "-c", "echo started; kill -9 $PPID; sleep 5"], description="benchmark", timeout=60)
    except errors.DeviceError as exc:
        out.update(describe(exc))
    out["after"] = t.run(["echo", "still here"], description="echo", timeout=30).stdout
    """
    res = client(adbd_server, body, tmp=tmp_path)
    assert res.get("error") == "DeviceError", res
    assert res["exit_code"] == 1 and res["device"] == "phone" and "exit code -1" in res["message"], res
    assert res["after"] == "still here\n"


@pytest.mark.netns
def test_unreachable_port_names_the_device(netns: str, tmp_path: Path) -> None:
    port = ns_helpers.random_port()  # nothing listens in a fresh namespace
    code = CLIENT % "    t.connect()"
    run = ns_helpers.ns_python(
        netns, code, args=[json.dumps({"host": "127.0.0.1", "port": port, "connect_timeout_s": 3})],
        env={"XDG_CONFIG_HOME": str(tmp_path)},
    )
    res = run.json()
    assert res.get("error") == "DeviceError" and res["exit_code"] == 1, res
    assert res["device"] == "phone" and f"127.0.0.1:{port}" in res["message"]


# -- the RSA key (no device needed) ----------------------------------------------------------


def test_adb_key_created_with_0600_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adb_shell.auth.sign_cryptography import CryptographySigner

    from hwnas.agents.adb import default_key_path, load_or_create_adb_key

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    path = load_or_create_adb_key()
    assert path == default_key_path() == tmp_path / "cfg" / "hwnas" / "adbkey"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}.pub").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".adbkey-")]
    first = path.read_bytes()
    signer = CryptographySigner(str(path))
    assert len(signer.Sign(b"x" * 20)) == 256  # RSA-2048 signature of an ADB token
    public = signer.GetPublicKey()
    public = public.decode() if isinstance(public, bytes) else public
    assert Path(f"{path}.pub").read_text().split()[0] == public.split()[0]
    assert load_or_create_adb_key() == path and path.read_bytes() == first  # reused, not remade


def test_adb_key_readable_by_others_is_tightened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hwnas.agents.adb import load_or_create_adb_key

    path = load_or_create_adb_key(tmp_path / "k" / "adbkey")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert load_or_create_adb_key(path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "readable by others" in caplog.text


def test_adb_settings_errors() -> None:
    from hwnas.agents.adb import ADBTransport
    from hwnas.agents.errors import ProfileError

    with pytest.raises(ProfileError, match="transport.adb.key_file"):
        ADBTransport(device="phone", workdir="/data/local/tmp/hwnas", host="127.0.0.1", key_file="/nonexistent/adbkey")
    with pytest.raises(ProfileError, match="'serial' \\(USB\\) or 'host'"):
        ADBTransport(device="phone", workdir="/data/local/tmp/hwnas")
    t = ADBTransport(device="phone", workdir="/data/local/tmp/hwnas", serial="192.168.1.7:5555")
    assert (t.host, t.port, t.serial, t.address) == ("192.168.1.7", 5555, None, "192.168.1.7:5555")


@pytest.mark.skipif(importlib.util.find_spec("usb1") is not None, reason="the usb extra is installed here")
def test_usb_without_the_extra_is_a_profile_error() -> None:
    from hwnas.agents.adb import ADBTransport
    from hwnas.agents.errors import ProfileError

    t = ADBTransport(device="phone", workdir="/data/local/tmp/hwnas", serial="R58M123")
    with pytest.raises(ProfileError, match=r"hwnas\[usb\]") as info:
        t.connect()
    assert info.value.exit_code == 2


def test_busy_usb_device_says_adb_kill_server() -> None:
    # Simulated: no USB device exists here. The exception carries libusb's name for the
    # error that claiming an interface held by a running adb server raises.
    from hwnas.agents.adb import ADBTransport, usb_error_hint

    class USBErrorBusy(Exception):
        pass

    exc = USBErrorBusy("LIBUSB_ERROR_BUSY [-6]")
    assert "adb kill-server" in (usb_error_hint(exc) or "")
    t = ADBTransport(device="phone", workdir="/data/local/tmp/hwnas", serial="R58M123")
    err = t._connect_error(exc)
    assert err.exit_code == 1 and "in use by another program" in str(err) and "adb kill-server" in str(err)
