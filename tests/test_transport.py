"""The transport interface on this machine: quoting, the remote wrapper, LocalTransport, the lock.

Real: every command runs in a real /bin/sh (and bash where installed) or as a real
process; nothing is mocked. The remote wrapper is run by a local shell exactly as sshd or
adbd would run it (``sh -c STRING``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwnas.agents.errors import DeviceBusy, DeviceError, DeviceTimeout, ProfileError
from hwnas.agents.lock import DeviceLock, LockOwner, kill_leftover_runners
from hwnas.agents.transport import (
    LocalTransport,
    RemoteOutput,
    kill_command,
    list_transports,
    open_transport,
    remote_command,
    shell_join,
)

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
    "~",
    "$HOME",
    "${{IFS}}",
    "back\\slash",
    "-n",
    "--",
    "",
    "| touch {marker}",
    "&& touch {marker} &",
    "> {marker}",
    "ünïcødé ✓",
    "'\"'\"'",
]
SHELLS = sorted({os.path.realpath(s) for s in ("/bin/sh", "/bin/dash", "/bin/bash", "/bin/busybox") if os.path.exists(s)})
ECHO_ARGV = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    yield path
    assert not path.exists(), "a hostile argument was executed by a shell"


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_join_round_trips_through_a_real_shell(shell: str, marker: Path) -> None:
    args = [a.format(marker=marker) for a in HOSTILE]
    out = subprocess.run([shell, "-c", shell_join([*ECHO_ARGV, *args])], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == args


def test_shell_join_rejects_empty_argv() -> None:
    with pytest.raises(ValueError):
        shell_join([])


@pytest.mark.parametrize("shell", SHELLS)
def test_remote_wrapper_reports_pid_exit_code_and_verbatim_output(shell: str, marker: Path) -> None:
    args = [a.format(marker=marker) for a in HOSTILE]
    for argv, rc in (
        ([*ECHO_ARGV, *args], 0),
        (["sh", "-c", "printf partial; exit 3"], 3),
        (["no-such-command-hwnas"], 127),
    ):
        token = uuid.uuid4().hex[:16]
        proc = subprocess.run([shell, "-c", remote_command(argv, token=token, report_exit=True)], capture_output=True)
        assert proc.returncode == rc  # the wrapper also exits with the command's status
        lines: list[str] = []
        out = RemoteOutput(token, lines.append)
        out.feed(proc.stdout)
        out.finish()
        assert out.pid is not None and out.pid > 1
        assert out.returncode == rc
        if rc == 0:
            assert json.loads(out.stdout) == args
            assert lines == [out.stdout.rstrip("\n")]
        elif rc == 3:
            assert out.stdout == "partial" and lines == ["partial"]


def test_remote_wrapper_feeds_stdin_from_a_file_and_removes_it(tmp_path: Path) -> None:
    stdin_file = tmp_path / "stdin"
    stdin_file.write_bytes(b"line 1\nline 2\n")
    token = "t0k"
    proc = subprocess.run(
        ["sh", "-c", remote_command(["cat"], token=token, report_exit=True, stdin_path=str(stdin_file))],
        capture_output=True,
    )
    out = RemoteOutput(token, None)
    out.feed(proc.stdout)
    out.finish()
    assert out.stdout == "line 1\nline 2\n" and out.returncode == 0
    assert not stdin_file.exists()


def test_remote_output_split_anywhere() -> None:
    # Fed one byte at a time: multi-byte characters and markers cut across chunks.
    token = "abc"
    stream = "hwnas-pid-abc:4242\nfirst ✓ line\nlast without newlinehwnas-rc-abc:7\n".encode()
    lines: list[str] = []
    out = RemoteOutput(token, lines.append)
    for i in range(len(stream)):
        out.feed(stream[i : i + 1])
    out.finish()
    assert (out.pid, out.returncode) == (4242, 7)
    assert lines == ["first ✓ line", "last without newline"]
    assert out.stdout == "first ✓ line\nlast without newline"
    # Output that merely looks like a marker of another token stays output.
    out = RemoteOutput("xyz", None)
    out.feed(b"hwnas-pid-abc:1\nhwnas-rc-abc:2\n")
    out.finish()
    assert out.pid is None and out.returncode is None
    assert out.stdout == "hwnas-pid-abc:1\nhwnas-rc-abc:2\n"


def test_kill_command_kills_the_whole_process_group() -> None:
    tag = f"{uuid.uuid4().int % 10**6}.5"
    leader = subprocess.Popen(["sh", "-c", f"sleep 1{tag} & sleep 2{tag}; wait"], start_new_session=True)
    time.sleep(0.3)
    subprocess.run(["sh", "-c", kill_command(leader.pid)], check=True)
    leader.wait(timeout=5)
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", f"sleep [12]{tag}"], capture_output=True).returncode == 1


# -- LocalTransport ------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalTransport:
    return LocalTransport(device="here", workdir=str(tmp_path / "wd"))


def test_local_exit_codes_and_check(local: LocalTransport, marker: Path) -> None:
    args = [a.format(marker=marker) for a in HOSTILE]
    assert json.loads(local.run([*ECHO_ARGV, *args], description="echo", timeout=30).stdout) == args
    assert local.run(["true"], description="t", timeout=10).returncode == 0
    assert local.run(["sh", "-c", "exit 3"], description="t", timeout=10, check=False).returncode == 3
    with pytest.raises(DeviceError, match="cannot start"):
        local.run(["no-such-command-hwnas"], description="missing", timeout=10)
    with pytest.raises(DeviceError, match=r"here: step failed.*exit code 3") as info:
        local.run(["sh", "-c", "echo why >&2; exit 3"], description="step", timeout=10)
    assert info.value.exit_code == 1 and "why" in str(info.value)


def test_local_large_output_no_deadlock(local: LocalTransport) -> None:
    lines: list[str] = []
    r = local.run(
        ["sh", "-c", "yes e | head -c 1048576 >&2; yes o | head -c 1048576"],
        description="flood",
        timeout=60,
        on_line=lines.append,
    )
    assert len(r.stdout) == len(r.stderr) == 1048576 and len(lines) == 524288


def test_local_timeout_kills_the_process_group(local: LocalTransport) -> None:
    tag = f"{uuid.uuid4().int % 10**6}.25"
    with pytest.raises(DeviceTimeout, match="timeout of 1 s"):
        local.run(["sh", "-c", f"sleep 1{tag} & sleep 2{tag}; wait"], description="hang", timeout=1)
    time.sleep(0.3)
    assert subprocess.run(["pgrep", "-f", f"sleep [12]{tag}"], capture_output=True).returncode == 1


def test_local_push_pull(local: LocalTransport, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(70000))
    remote = str(tmp_path / "dev ice" / "b.bin")
    local.push(src, remote)
    local.pull(remote, tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == src.read_bytes()
    with pytest.raises(DeviceError, match="no such file"):
        local.pull(str(tmp_path / "nope"), tmp_path / "d.bin")


# -- registry and settings ----------------------------------------------------------------


def test_registry_knows_ssh_and_adb_and_suggests() -> None:
    assert {"local", "ssh", "adb"} <= set(list_transports())
    with pytest.raises(ProfileError, match="did you mean ssh"):
        open_transport("shh", {}, device="d", workdir="/tmp")


def test_ssh_settings_errors_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProfileError, match="transport.ssh.key_file.*no such file") as info:
        open_transport("ssh", {"host": "127.0.0.1", "key_file": str(tmp_path / "nokey")}, device="pi", workdir="/tmp")
    assert info.value.exit_code == 2
    monkeypatch.delenv("HWNAS_TEST_PW", raising=False)
    with pytest.raises(ProfileError, match="HWNAS_TEST_PW.*not set"):
        open_transport("ssh", {"host": "127.0.0.1", "password_env": "HWNAS_TEST_PW"}, device="pi", workdir="/tmp")
    t = open_transport("ssh", {"host": "pi.local", "port": 2222, "user": "me"}, device="pi", workdir="/tmp")
    assert t.address == "me@pi.local:2222"  # nothing connected yet


# -- the device lock (over LocalTransport: the lock only uses transport.run) --------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _plant(path: Path, owner: LockOwner, runner_pid: int | None = None) -> None:
    path.mkdir(parents=True)
    (path / "owner").write_text(owner.to_line() + "\n")
    if runner_pid is not None:
        (path / "runner.pid").write_text(f"{runner_pid}\n")


def test_lock_busy_then_released(local: LocalTransport) -> None:
    first = DeviceLock(local, run_id="first").acquire()
    lock_dir = Path(first.path)
    assert LockOwner.from_line((lock_dir / "owner").read_text()).run_id == "first"
    with pytest.raises(DeviceBusy, match="another profiling run holds the device") as info:
        DeviceLock(local).acquire()
    assert info.value.exit_code == 1 and "run first" in str(info.value)
    first.release()
    assert not lock_dir.exists()
    with DeviceLock(local) as again:
        assert Path(again.path).is_dir()
    assert not lock_dir.exists()


def test_stale_lock_of_a_dead_local_process_is_cleared(local: LocalTransport, caplog: pytest.LogCaptureFixture) -> None:
    lock_dir = Path(local.workdir) / "hwnas.lock"
    _plant(lock_dir, LockOwner(host=socket.gethostname(), pid=_dead_pid(), started="2024-01-01T00:00:00+00:00", run_id="old"))
    with caplog.at_level(logging.WARNING):
        lock = DeviceLock(local).acquire()
    assert "clearing a stale lock of run old" in caplog.text and "is gone" in caplog.text
    assert LockOwner.from_line((lock_dir / "owner").read_text()).run_id == lock.run_id
    lock.release()


def test_stale_lock_whose_runner_died_is_cleared(local: LocalTransport, caplog: pytest.LogCaptureFixture) -> None:
    lock_dir = Path(local.workdir) / "hwnas.lock"
    # Another host, so only the runner's PID on the device can tell.
    _plant(lock_dir, LockOwner(host="elsewhere", pid=1, started="2024-01-01T00:00:00+00:00", run_id="r1"), _dead_pid())
    with caplog.at_level(logging.WARNING):
        DeviceLock(local).acquire().release()
    assert "no longer runs on the device" in caplog.text


def test_lock_of_another_host_with_a_live_runner_is_busy(local: LocalTransport) -> None:
    lock_dir = Path(local.workdir) / "hwnas.lock"
    runner = subprocess.Popen(["sleep", "30"])
    try:
        _plant(lock_dir, LockOwner(host="elsewhere", pid=1, started="2024-01-01T00:00:00+00:00", run_id="r2"), runner.pid)
        with pytest.raises(DeviceBusy, match=f"runner pid {runner.pid}") as info:
            DeviceLock(local).acquire(resume=True)  # resume never steals another host's run
        assert str(lock_dir) in (info.value.hint or "")
        assert runner.poll() is None
    finally:
        runner.kill()
        runner.wait()


def test_resume_takes_over_a_broken_run_and_kills_its_runner(
    local: LocalTransport, caplog: pytest.LogCaptureFixture
) -> None:
    lock_dir = Path(local.workdir) / "hwnas.lock"
    tag = f"{uuid.uuid4().int % 10**6}.75"
    # The recorded PID is the runner's wrapper; the runner itself is its child.
    runner = subprocess.Popen(["sh", "-c", f"sleep 3{tag}; exit 0"])
    try:
        owner = LockOwner(host=socket.gethostname(), pid=_dead_pid(), started="2024-01-01T00:00:00+00:00", run_id="b")
        _plant(lock_dir, owner, runner.pid)
        with pytest.raises(DeviceBusy, match="--resume"):
            DeviceLock(local).acquire()  # its runner still runs: busy without --resume
        with caplog.at_level(logging.WARNING):
            lock = DeviceLock(local).acquire(resume=True)
        assert "taking over the lock of the broken run b" in caplog.text
        assert runner.wait(timeout=5) == -signal.SIGKILL
        assert subprocess.run(["pgrep", "-f", f"sleep 3{tag}"], capture_output=True).returncode == 1
        lock.release()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_runner_argv_records_the_runner_while_it_runs(local: LocalTransport) -> None:
    with DeviceLock(local) as lock:
        pid_file = Path(lock.path) / "runner.pid"
        r = local.run(
            lock.runner_argv(["sh", "-c", 'cat "$1"; exit 5', "x", str(pid_file)]),
            description="runner",
            timeout=10,
            check=False,
        )
        assert r.returncode == 5 and r.stdout.strip().isdigit()
        assert not pid_file.exists()  # removed when the runner ended


def test_lock_in_a_hostile_workdir(tmp_path: Path, marker: Path) -> None:
    workdir = tmp_path / f"w $(touch {marker}) `touch {marker}`; touch {marker} 'x' \"y\""
    t = LocalTransport(device="here", workdir=str(workdir))
    with DeviceLock(t) as lock:
        assert Path(lock.path).is_dir()


def test_kill_leftover_runners_kills_matches_only(local: LocalTransport, tmp_path: Path) -> None:
    runner_dir = Path(local.workdir) / "runner"
    runner_dir.mkdir(parents=True)
    script = runner_dir / "runner-0123.py"
    script.write_text("import time\ntime.sleep(60)\n")
    other = tmp_path / "other.py"
    other.write_text("import time\ntime.sleep(60)\n")
    runners = [subprocess.Popen([sys.executable, str(script)]) for _ in range(2)]
    bystander = subprocess.Popen([sys.executable, str(other)])
    try:
        time.sleep(0.3)
        killed = kill_leftover_runners(local)
        assert sorted(killed) == sorted(p.pid for p in runners)
        for p in runners:
            assert p.wait(timeout=5) == -signal.SIGKILL
        assert bystander.poll() is None
        assert kill_leftover_runners(local) == []
    finally:
        for p in [*runners, bystander]:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_local_runs_argv_without_a_shell(local: LocalTransport, marker: Path) -> None:
    # LocalTransport runs argv without any shell: hostile strings are plain arguments.
    r = local.run(["printf", "%s", f"$(touch {marker})"], description="printf", timeout=10)
    assert r.stdout == f"$(touch {marker})"


def test_a_line_longer_than_one_read_reaches_on_line_whole(local: LocalTransport) -> None:
    """A runner's result line carries every per-run sample: a sub-microsecond model timed for 0.2 s gives a
    JSON line of several MiB. It must reach the parser as one line (it was handed on in 1 MiB pieces, and
    the result was lost without a word), over the local transport and a remote stream alike."""
    big = "x" * (3 * (1 << 20) + 17)
    code = f"import sys; sys.stdout.write('x' * {len(big)} + '\\n' + 'end\\n')"
    lines: list[str] = []
    res = local.run([sys.executable, "-c", code], description="long line", timeout=60, on_line=lines.append)
    assert lines == [big, "end"] and res.stdout == big + "\nend\n"
    got: list[str] = []
    out = RemoteOutput("tok", got.append)
    payload = (big + "\nend\n").encode()
    for i in range(0, len(payload), 65536):
        out.feed(payload[i : i + 65536])
    out.finish()
    assert got == [big, "end"]
