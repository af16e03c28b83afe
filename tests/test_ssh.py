"""SSHTransport against a real OpenSSH server.

Real: sshd (Debian ``openssh-server``) on 127.0.0.1 inside a network namespace made by the
test, throw-away host and user keys, the hwnas client (paramiko) running inside the same
namespace as a subprocess, real processes killed and real links cut (sshd killed; the
namespace's loopback set down so packets vanish without a reset). Nothing is mocked.
The "device" shares this machine's file system and PID space, so the tests check remote
effects (files, processes) directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import netns as ns_helpers
import pytest

pytestmark = pytest.mark.netns

# A client script run inside the namespace: builds an SSHTransport from argv[1] (JSON
# settings), runs BODY (which fills ``out``), prints ``out`` as JSON on the last line.
CLIENT = """
import json, sys, time
from hwnas.agents.ssh import SSHTransport
from hwnas.agents import errors
from hwnas.agents.lock import DeviceLock, kill_leftover_runners
settings = json.loads(sys.argv[1])
workdir = settings.pop("workdir", "/tmp/hwnas-ssh-test")
out = {}
def describe(exc):
    return {"error": type(exc).__name__, "message": str(exc), "exit_code": getattr(exc, "exit_code", None),
            "device": getattr(exc, "device", None), "hint": getattr(exc, "hint", None),
            "classes": [c.__name__ for c in type(exc).__mro__]}
try:
    t = SSHTransport(device="board", workdir=workdir, **settings)
%s
except Exception as exc:
    out.update(describe(exc))
print(json.dumps(out), flush=True)
"""


def client(server: ns_helpers.SSHServer, body: str, *, timeout: float = 60, **settings: object) -> dict:
    code = CLIENT % textwrap.indent(textwrap.dedent(body), "    ")
    run = ns_helpers.ns_python(server.ns, code, args=[json.dumps(server.settings(**settings))], timeout=timeout)
    result = run.json()
    result["_seconds"] = run.seconds
    result["_stderr"] = run.stderr
    return result


def start_client(server: ns_helpers.SSHServer, body: str, **settings: object) -> subprocess.Popen[str]:
    code = CLIENT % textwrap.indent(textwrap.dedent(body), "    ")
    return subprocess.Popen(
        ns_helpers.ns_argv(server.ns, [sys.executable, "-c", code, json.dumps(server.settings(**settings))]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ns_helpers.REPO,
        env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
    )


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 30) -> None:
    """Read the client's stdout until a line containing ``text`` (printed from on_line)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = ns_helpers.read_line(proc.stdout, timeout=max(0.0, deadline - time.monotonic()),
                                    what=f"the client, waiting for {text!r}")
        if not line:
            raise AssertionError(f"client ended before printing {text!r}: {proc.stderr.read() if proc.stderr else ''}")
        if text in line:
            return
    raise AssertionError(f"client did not print {text!r} within {timeout} s")


def last_json(proc: subprocess.Popen[str], timeout: float) -> tuple[dict, float]:
    start = time.monotonic()
    stdout, stderr = proc.communicate(timeout=timeout)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the client; stderr:\n{stderr}"
    return json.loads(lines[-1]), time.monotonic() - start


HOSTILE = [
    "; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "a b  c",
    "it's",
    'say "hi"',
    "new\nline",
    "tab\there",
    "*",
    "$HOME",
    "back\\slash",
    "-n",
    "",
    "| touch {marker}",
    "&& touch {marker} &",
    "ünïcødé ✓",
]


def hostile_args(marker: Path) -> list[str]:
    return [a.format(marker=marker) for a in HOSTILE]


def test_hostile_arguments_arrive_verbatim_and_exit_codes(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    args = hostile_args(marker)
    body = f"""
    args = {args!r}
    r = t.run([{sys.executable!r}, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *args],
              description="echo args", timeout=30)
    out["python_argv"] = json.loads(r.stdout)
    r = t.run(["printf", "%s\\\\000", *args], description="printf args", timeout=30)
    out["printf_argv"] = r.stdout.split("\\0")[:-1]
    out["rcs"] = [t.run(argv, description="rc", timeout=30, check=False).returncode
                  for argv in (["true"], ["sh", "-c", "exit 3"], ["no-such-command-hwnas"])]
    try:
        t.run(["sh", "-c", "echo oops >&2; exit 3"], description="failing step", timeout=30)
    except errors.DeviceError as exc:
        out["check"] = describe(exc)
    r = t.run(["printf", "no newline at the end"], description="partial line", timeout=30)
    out["partial"] = r.stdout
    r = t.run(["cat"], description="stdin", timeout=30, stdin=b"fed through stdin\\n")
    out["stdin"] = r.stdout
    """
    res = client(sshd_server, body)
    assert "error" not in res, res
    assert res["python_argv"] == args
    assert res["printf_argv"] == args
    assert res["rcs"] == [0, 3, 127]
    assert res["check"]["error"] == "DeviceError" and res["check"]["exit_code"] == 1
    assert "failing step failed" in res["check"]["message"] and "exit code 3" in res["check"]["message"]
    assert res["partial"] == "no newline at the end"
    assert res["stdin"] == "fed through stdin\n"
    assert not marker.exists(), "a hostile argument was executed by a shell"


def test_large_stdout_and_stderr_do_not_deadlock(sshd_server: ns_helpers.SSHServer) -> None:
    # 1 MiB to stderr first, then 1 MiB to stdout: a client reading only stdout would hang.
    body = """
    lines = []
    r = t.run(["sh", "-c", "yes e | head -c 1048576 >&2; yes o | head -c 1048576"],
              description="flood", timeout=60, on_line=lines.append)
    out.update(stdout=len(r.stdout), stderr=len(r.stderr), lines=len(lines), first=lines[0], seconds=r.seconds,
               rc=r.returncode)
    """
    res = client(sshd_server, body)
    assert "error" not in res, res
    assert res["stdout"] == 1048576 and res["stderr"] == 1048576
    assert res["lines"] == 1048576 // 2 and res["first"] == "o"
    assert res["rc"] == 0


def _pids_matching(text: str) -> list[int]:
    proc = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split()]


def test_timeout_kills_the_remote_process_group(sshd_server: ns_helpers.SSHServer) -> None:
    tag = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 1000 + 1000}"  # unique sleep arguments
    body = f"""
    start = time.monotonic()
    try:
        t.run(["sh", "-c", "sleep 1{tag} & sleep 2{tag}; wait"], description="hang", timeout=2)
    except errors.DeviceTimeout as exc:
        out.update(describe(exc))
    out["elapsed"] = time.monotonic() - start
    out["after"] = t.run(["echo", "still usable"], description="after", timeout=10).stdout
    def broken_parser(line):
        raise ValueError("cannot parse " + line)
    try:
        t.run(["sh", "-c", "echo x; sleep 3{tag}"], description="parse", timeout=30, on_line=broken_parser)
    except ValueError as exc:
        out["callback"] = str(exc)
    """
    res = client(sshd_server, body)
    assert res.get("error") == "DeviceTimeout", res
    assert "timeout of 2 s" in res["message"] and res["device"] == "board"
    assert res["elapsed"] < 8
    assert res["after"] == "still usable\n"
    assert res["callback"] == "cannot parse x"  # an on_line error reaches the caller...
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pids_matching(f"sleep {i}{tag}") for i in (1, 2, 3)):
        time.sleep(0.1)
    assert not _pids_matching(f"sleep 3{tag}"), "...and the command it came from is killed"
    assert not _pids_matching(f"sleep 1{tag}"), "the background child survived the timeout"
    assert not _pids_matching(f"sleep 2{tag}"), "the command survived the timeout"


def test_push_pull_round_trip(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "model.bin"
    src.write_bytes(payload)
    src.chmod(0o751)
    remote_dir = tmp_path / "device dir $(touch x) 'q'"
    remote = remote_dir / "mödel; v1.bin"
    back = tmp_path / "back" / "model.bin"
    body = f"""
    t.push({str(src)!r}, {str(remote)!r})
    t.pull({str(remote)!r}, {str(back)!r})
    try:
        t.pull({str(remote_dir / 'missing.bin')!r}, {str(tmp_path / 'missing.bin')!r})
    except errors.DeviceError as exc:
        out["missing"] = describe(exc)
    """
    res = client(sshd_server, body)
    assert "error" not in res, res
    assert remote.read_bytes() == payload
    assert back.read_bytes() == payload
    assert oct(remote.stat().st_mode & 0o777) == oct(0o751)
    assert not list(remote_dir.glob("*hwnas-part*")), "a temporary upload was left behind"
    assert not (Path.cwd() / "x").exists() and not (remote_dir / "x").exists()
    assert res["missing"]["error"] == "DeviceError" and "no such file" in res["missing"]["message"]


def test_changed_host_key_is_refused_even_with_trust_on_first_use(
    sshd_server: ns_helpers.SSHServer, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other_key.pub").read_text().split()
    known = tmp_path / "known_hosts_other"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {pub[0]} {pub[1]}\n")
    for tofu in (False, True):
        res = client(sshd_server, "t.connect()", known_hosts=str(known), trust_on_first_use=tofu)
        assert res.get("error") == "HostKeyError", res
        assert res["exit_code"] == 2 and "ProfileError" in res["classes"] and "DeviceError" in res["classes"]
        assert "HOST KEY CHANGED" in res["message"] and "ssh-keygen -R" in res["hint"]
    assert known.read_text().count("\n") == 1, "a changed key must never be written"


def test_unknown_host_key_refused_unless_trust_on_first_use(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "kh" / "known_hosts"
    res = client(sshd_server, "t.connect()", known_hosts=str(known))
    assert res.get("error") == "HostKeyError" and res["exit_code"] == 2, res
    assert "unknown host key" in res["message"] and "trust_on_first_use" in res["hint"]
    assert "ssh-keyscan -p" in res["hint"]
    assert not known.exists()
    res = client(
        sshd_server,
        "out['echo'] = t.run(['echo', 'ok'], description='echo', timeout=10).stdout",
        known_hosts=str(known),
        trust_on_first_use=True,
    )
    assert res.get("echo") == "ok\n", res
    host_pub = (sshd_server.host_key.parent / "host_ed25519.pub").read_text().split()[1]
    assert host_pub in known.read_text()
    assert oct(known.stat().st_mode & 0o777) == oct(0o600)
    # Now known: accepted without trust_on_first_use.
    res = client(sshd_server, "out['echo'] = t.run(['echo', 'ok'], description='echo', timeout=10).stdout",
                 known_hosts=str(known))
    assert res.get("echo") == "ok\n", res


def test_unreachable_port_names_the_device(sshd_server: ns_helpers.SSHServer) -> None:
    closed = sshd_server.port + 1 if sshd_server.port < 60000 else sshd_server.port - 1
    res = client(sshd_server, "t.connect()", port=closed, connect_timeout_s=3)
    assert res.get("error") == "DeviceError" and res["exit_code"] == 1, res
    assert res["device"] == "board" and "board:" in res["message"]
    assert f"127.0.0.1:{closed}" in res["message"] and "refused" in res["message"].lower()


def test_hostile_profile_values_execute_nothing(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    # A user name and a work folder full of shell syntax: the user is refused by sshd, the
    # folder is created under its literal name.
    res = client(sshd_server, "t.connect()", user=f"root$(touch {marker});touch {marker}")
    assert res.get("error") == "AuthenticationError" and res["exit_code"] == 2, res
    # A host full of shell syntax is only ever a name to resolve (and fails to).
    res = client(sshd_server, "t.connect()", host=f"127.0.0.1;touch {marker}", connect_timeout_s=3)
    assert res.get("error") == "DeviceError" and "cannot resolve" in res["message"], res
    workdir = tmp_path / f"w $(touch {marker}) `touch {marker}`; touch {marker} 'x'"
    body = """
    from hwnas.agents.lock import DeviceLock
    with DeviceLock(t) as lock:
        out["lock"] = lock.path
    """
    res = client(sshd_server, body, workdir=str(workdir))
    assert "error" not in res, res
    assert res["lock"] == str(workdir / "hwnas.lock") and workdir.is_dir()
    assert not marker.exists()


def test_kill_sshd_mid_command_is_link_lost(sshd_server: ns_helpers.SSHServer) -> None:
    body = """
    start = time.monotonic()
    try:
        t.run(["sh", "-c", "echo started; sleep 60"], description="measure 3 models", timeout=120,
              on_line=lambda line: print(line, flush=True))
    except errors.LinkLost as exc:
        out.update(describe(exc))
    out["elapsed"] = time.monotonic() - start
    """
    proc = start_client(sshd_server, body, keepalive_s=1, keepalive_count=3)
    wait_for_line(proc, "started")
    sshd_server.kill_all()  # the listener and its session processes: the kernel closes the sockets
    res, _ = last_json(proc, timeout=30)
    assert res.get("error") == "LinkLost", res
    assert res["exit_code"] == 1 and res["device"] == "board"
    assert "measure 3 models" in res["message"] and "--resume" in res["hint"]
    assert res["elapsed"] < 10


def test_silently_dropped_link_is_noticed_by_keepalive(sshd_server: ns_helpers.SSHServer) -> None:
    # First a silent command longer than the keepalive window: probes must not cut it.
    body = """
    r = t.run(["sleep", "4"], description="silent but alive", timeout=30)
    out["silent_rc"] = r.returncode
    start = time.monotonic()
    try:
        t.run(["sh", "-c", "echo started; sleep 60"], description="measure", timeout=120,
              on_line=lambda line: print(line, flush=True))
    except errors.LinkLost as exc:
        out.update(describe(exc))
    out["elapsed"] = time.monotonic() - start
    """
    proc = start_client(sshd_server, body, keepalive_s=1, keepalive_count=3)
    wait_for_line(proc, "started")
    dropped = time.monotonic()
    ns_helpers.set_loopback(sshd_server.ns, up=False)  # packets vanish: no FIN, no RST
    try:
        res, _ = last_json(proc, timeout=40)
        noticed = time.monotonic() - dropped
    finally:
        ns_helpers.set_loopback(sshd_server.ns, up=True)
    assert res.get("silent_rc") == 0, res
    assert res.get("error") == "LinkLost", res
    assert res["device"] == "board" and "--resume" in res["hint"]
    assert noticed < 12, f"took {noticed:.1f} s to notice a silent link (window: 3 s)"


def test_device_lock_over_ssh(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    runner = workdir / "runner" / "runner-abc.py"
    runner.parent.mkdir(parents=True)
    runner.write_text("import time\nprint('runner up', flush=True)\ntime.sleep(60)\n")
    body = f"""
    import threading
    first = DeviceLock(t).acquire()
    try:
        DeviceLock(t).acquire()
    except errors.DeviceBusy as exc:
        out["busy"] = describe(exc)
    # A runner started through the lock, then killed with its wrapper (as a reboot would):
    # its PID stays recorded but no longer runs, so the lock is stale.
    # (the runner path is put together here: this client runs on the "device" too, and
    # kill_leftover_runners must not find the path in the client's own command line)
    argv = first.runner_argv([{sys.executable!r}, workdir + "/runner/" + "runner-abc.py"])
    th = threading.Thread(target=lambda: t.run(argv, description="runner", timeout=60, check=False), daemon=True)
    th.start()
    time.sleep(1.5)
    pid = int(t.run(["cat", first.path + "/runner.pid"], description="pid", timeout=10).stdout)
    t.run(["kill", "-9", str(pid)], description="kill wrapper", timeout=10, check=False)
    out["killed"] = kill_leftover_runners(t)  # the orphaned runner itself
    th.join(10)
    second = DeviceLock(t).acquire()
    out["second"] = second.run_id != first.run_id
    second.release()
    out["left"] = t.run(["ls", "-A", {str(workdir)!r}], description="ls", timeout=10).stdout.split()
    """
    res = client(sshd_server, body, workdir=str(workdir))
    assert "error" not in res, res
    assert res["busy"]["error"] == "DeviceBusy" and res["busy"]["exit_code"] == 1
    assert "another profiling run holds the device" in res["busy"]["message"]
    assert len(res["killed"]) == 1
    assert res["second"] is True
    assert "hwnas.lock" not in res["left"]
    assert "clearing a stale lock" in res["_stderr"]


def test_push_files_checks_named_files_by_size_and_others_by_checksum(
    sshd_server: ns_helpers.SSHServer, tmp_path: Path
) -> None:
    """Models go in one archive; a file named by its checksum is then found by its size, so a push cut
    short (a shorter file) is sent again, while a file under any other name is checked by its content."""
    workdir = tmp_path / "wd"
    local = tmp_path / "local"
    local.mkdir()
    files = []
    for i in range(3):
        src = local / f"m{i}.onnx"
        src.write_bytes(os.urandom(200_000 + i))
        files.append(src)
    plain = local / "settings.txt"
    plain.write_text("version 1\n")
    body = f"""
    from pathlib import Path
    from hwnas.agents.device import Device, ModelFile
    from hwnas.agents.profiles import parse_profile
    profile = parse_profile({{"name": "board", "transport": {{"ssh": {{"host": "127.0.0.1"}}}},
                             "workdir": {str(workdir)!r}}}, source="test")
    dev = Device(profile, transport=t)
    models = [ModelFile(Path(p).stem, Path(p)) for p in {[str(f) for f in files]!r}]
    out["remote"] = [dev.model_remote_path(m) for m in models]
    pairs = [(m.path, r) for m, r in zip(models, out["remote"])] + [(Path({str(plain)!r}), dev.remote("plain", "settings.txt"))]
    out["first"] = dev.push_files(pairs)
    # a push cut short, and a same-size change under a name that says nothing about the content
    with open(out["remote"][1], "r+b") as fh:
        fh.truncate(1000)
    Path(dev.remote("plain", "settings.txt")).write_text("version 2\\n")
    out["again_cached"] = dev.push_files(pairs)  # this Device remembers what it sent: nothing asked
    out["again"] = Device(profile, transport=t).push_files(pairs)
    """
    res = client(sshd_server, body)
    assert "error" not in res, res
    assert res["first"] == 4 and res["again_cached"] == 0
    assert res["again"] == 2  # the truncated model and the changed plain file, nothing else
    for src, remote in zip(files, res["remote"], strict=True):
        assert Path(remote).read_bytes() == src.read_bytes()
    assert (workdir / "plain" / "settings.txt").read_text() == "version 1\n"


def test_runner_hello_over_ssh_sends_the_runner_on_stdin(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    """The runtime's version comes from the runner itself, run from stdin: nothing is left on the device;
    a Python that cannot import the runtime is a device error with the fix."""
    no_site = tmp_path / "python-without-site-packages"
    no_site.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    no_site.chmod(0o755)
    workdir = tmp_path / "wd"
    body = f"""
    from hwnas.agents.device import Device
    from hwnas.agents.profiles import parse_profile
    def profile(python):
        return parse_profile({{"name": "board", "transport": {{"ssh": {{"host": "127.0.0.1"}}}}, "python": python,
                              "workdir": {str(workdir)!r}}}, source="test")
    out["hello"] = Device(profile({sys.executable!r}), transport=t).runtime_hello("onnxruntime")
    try:
        Device(profile({str(no_site)!r}), transport=t).runtime_hello("onnxruntime")
    except errors.DeviceError as exc:
        out["missing"] = describe(exc)
    """
    res = client(sshd_server, body)
    assert "error" not in res, res
    import onnxruntime

    assert res["hello"]["type"] == "hello" and res["hello"]["runtime_version"] == onnxruntime.__version__
    assert res["missing"]["exit_code"] == 1 and "runtime onnxruntime is not usable here" in res["missing"]["message"]
    assert "install onnxruntime on the device" in res["missing"]["hint"]
    assert not workdir.exists()  # nothing pushed
