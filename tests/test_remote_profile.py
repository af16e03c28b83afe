"""``hwnas profile`` over SSH and ADB for real, link cuts and ``--resume`` included.

Real: OpenSSH's sshd and Android's adbd (Debian packages) on 127.0.0.1 inside a network
namespace the test creates; the hwnas CLI runs as a subprocess inside that namespace
(``ip netns exec``), and the "device" behind each daemon is this machine, whose runner runs
with the project's interpreter and its ONNX Runtime. Every latency in every LUT is measured.
Links are cut the two ways the issue names: the daemon and its session processes killed
(the kernel closes the sockets), and the namespace's loopback set down (packets vanish, no
FIN, no RST). Small settings (one resolution, two calibration subnets, no minimum span, a 5%
precision or 0.5 s per model, no wait for a quiet spell) keep the file short: these tests are about
the link, not the numbers; speed and fidelity of the remote path are benchmarks
(benchmarks/bench_remote.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import netns as ns_helpers
import pandas as pd
import pytest
import yaml

from hwnas.profiler.lut import LUT, OVERHEAD_KEY
from hwnas.profiler.profile import LUT_STATISTIC
from hwnas.supernet import get_space

pytestmark = pytest.mark.netns

PYTHON = sys.executable  # the "device" runs the runner with our venv's interpreter (it has onnxruntime)
ENTRIES = 79  # compact at resolution 32: 78 entries and the per-inference overhead row
SMALL = ["--space", "compact", "--resolutions", "32", "--runs", "2", "--rounds", "1", "--min-seconds", "0", "--precision", "0.05",
         "--max-entry-s", "0.5", "--max-wait", "0", "--calibration-subnets", "2"]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def workload_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache for the session (shared with test_profiler), never the user's."""
    return tmp_path_factory.getbasetemp() / "workload-cache"


@pytest.fixture
def env(tmp_path: Path, workload_cache: Path) -> dict[str, str]:
    """The CLI's environment: its own HOME and XDG folders, the session's workload cache."""
    out = dict(os.environ)
    out.pop("SSH_AUTH_SOCK", None)  # the test's key files only, never a user's agent
    for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"),
                     ("XDG_DATA_HOME", "data")):
        (tmp_path / sub).mkdir(exist_ok=True)
        out[var] = str(tmp_path / sub)
    out["HWNAS_CACHE_DIR"] = str(workload_cache)
    return out


class CLI:
    """``hwnas`` run as a subprocess inside the namespace, from ``cwd``."""

    def __init__(self, ns: str, env: dict[str, str], cwd: Path) -> None:
        self.ns, self.env, self.cwd = ns, env, cwd

    def argv(self, *args: str) -> list[str]:
        return ns_helpers.ns_argv(self.ns, [PYTHON, "-m", "hwnas", *args])

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, cwd=str(self.cwd), start_new_session=True)

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env, cwd=str(self.cwd),
                              timeout=timeout)


@pytest.fixture
def cli(netns: str, env: dict[str, str], tmp_path: Path) -> CLI:
    return CLI(netns, env, tmp_path)


def ssh_profile(path: Path, server: ns_helpers.SSHServer, *, name: str = "sshdev", ssh: dict | None = None,
                **fields: object) -> Path:
    data = {
        "name": name,
        "transport": {"ssh": server.settings(**(ssh or {}))},
        "python": PYTHON,
        "workdir": str(path.parent / f"{name}-device"),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def adb_profile(path: Path, server: ns_helpers.ADBServer, *, name: str = "adbdev", adb: dict | None = None,
                **fields: object) -> Path:
    data = {
        "name": name,
        "transport": {"adb": server.settings(**(adb or {}))},
        "python": PYTHON,
        "workdir": str(path.parent / f"{name}-device"),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def restart_adbd(server: ns_helpers.ADBServer) -> None:
    """Start adbd again on the same port (the fixture's teardown stops this one too)."""
    env = dict(os.environ, ADBD_PORT=str(server.port))
    server.proc = subprocess.Popen(
        ns_helpers.ns_argv(server.ns, [ns_helpers.find_adbd()]),
        env=env,
        stdout=open(server.log, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        cwd=str(server.log.parent),
    )
    ns_helpers.wait_for_port(server.ns, server.port, proc=server.proc, timeout=60)


def data_rows(path: Path) -> int:
    """Complete data rows in a LUT file (the header and metadata not counted)."""
    if not path.exists():
        return 0
    text = path.read_text()
    lines = [line for line in text.split("\n")[:-1] if line and not line.startswith("#")]
    return max(0, len(lines) - 1)


def wait_rows(proc: subprocess.Popen[str], path: Path, rows: int, *, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = data_rows(path)
        if n >= rows:
            return n
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the profile ended (rc {proc.returncode}) with {n} rows\n{err[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {rows} rows in {path} after {timeout:g} s")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hwnas: error")]


def assert_one_line_error(rc: int, stdout: str, stderr: str, *, codes: tuple[int, ...] = (1,)) -> str:
    assert rc in codes, (rc, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def measured_cells(path: Path) -> list[str]:
    """Data rows without the derived lut_ms column (the calibration refits it when a LUT completes)."""
    df = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    return [",".join(r) for r in df.drop(columns=[LUT_STATISTIC]).itertuples(index=False)]


def assert_complete(path: Path) -> None:
    lut = LUT.load(path)
    keys = list(lut.keys())
    expected = {(e.key, e.resolution) for e in get_space("compact").all_lut_entries([32])} | {(OVERHEAD_KEY, 32)}
    assert len(keys) == len(set(keys)) == ENTRIES, "duplicate or missing rows"
    assert set(keys) == expected
    assert (lut.rows["p10_ms"].astype(float) > 0).all()


def cut_and_resume(
    cli: CLI, profile: Path, out: Path, device: str, *, cut: Callable[[], None], restore: Callable[[], None],
    exit_within_s: float, while_measuring: bool = False,
) -> None:
    """Profile, cut the link once the LUT holds >= 10 rows, check the failure, restore, --resume.

    ``while_measuring``: cut while a runner runs on the device (its PID recorded in the lock),
    rather than wherever the profile happens to be (pushing, checksumming, between commands).
    """
    proc = cli.start("profile", str(profile), *SMALL, "--out", str(out), "--json")
    try:
        wait_rows(proc, out, 10)
        if while_measuring:
            runner_pid = Path(yaml.safe_load(profile.read_text())["workdir"]) / "hwnas.lock" / "runner.pid"
            deadline = time.monotonic() + 120
            while not runner_pid.exists():  # the "device" is this machine: its work folder is local
                assert proc.poll() is None and time.monotonic() < deadline, "no runner seen on the device"
                time.sleep(0.02)
        cut_at = time.monotonic()
        cut()
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        took = time.monotonic() - cut_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    line = assert_one_line_error(proc.returncode, stdout, stderr)
    assert stdout == ""
    assert f"{device}:" in line and "--resume" in line, line
    assert took < exit_within_s, f"took {took:.1f} s to give up after the cut"
    kept = data_rows(out)
    print(f"{device}: gave up {took:.1f} s after the cut with {kept} rows kept: {line}")
    assert 10 <= kept < ENTRIES, f"{kept} rows kept"
    before = measured_cells(out)
    assert len(before) == kept
    restore()
    res = cli.run("profile", str(profile), *SMALL, "--out", str(out), "--resume", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout)
    assert info["resumed"] == kept and info["measured"] + info["resumed"] == info["entries"] == ENTRIES, info
    assert_complete(out)
    after = measured_cells(out)
    missing = [row for row in before if row not in after]
    assert not missing, f"{len(missing)} rows measured before the cut changed, e.g. {missing[0]}"


# --------------------------------------------------------------------------- scenarios


def test_profile_over_ssh_and_a_second_run_is_refused(
    sshd_server: ns_helpers.SSHServer, cli: CLI, tmp_path: Path
) -> None:
    profile = ssh_profile(tmp_path / "profiles" / "sshdev.yaml", sshd_server)
    out = tmp_path / "ssh.csv"
    first = cli.start("profile", str(profile), *SMALL, "--out", str(out), "--json")
    try:
        wait_rows(first, out, 1)
        # Hold the first run still (SIGSTOP) so the second one certainly meets it mid-profile.
        os.killpg(first.pid, signal.SIGSTOP)
        try:
            second = cli.run("profile", str(profile), *SMALL, "--out", str(tmp_path / "second.csv"), "--json",
                             timeout=120)
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    line = assert_one_line_error(second.returncode, second.stdout, second.stderr)
    assert "sshdev:" in line and "another profiling run holds the device" in line, line
    assert not (tmp_path / "second.csv").exists()
    assert first.returncode == 0, stderr[-3000:]
    info = json.loads(stdout)
    assert info["entries"] == info["measured"] == ENTRIES and info["resumed"] == 0, info
    assert info["device"] == "sshdev"
    assert_complete(out)
    meta = LUT.load(out).metadata
    assert meta["device"]["name"] == "sshdev" and meta["runtime"]["name"] == "onnxruntime"
    import onnxruntime

    assert meta["runtime"]["version"] == onnxruntime.__version__  # reported by the runner on the device


def test_profile_over_adb(adbd_server: ns_helpers.ADBServer, cli: CLI, tmp_path: Path) -> None:
    profile = adb_profile(tmp_path / "profiles" / "adbdev.yaml", adbd_server)
    out = tmp_path / "adb.csv"
    res = cli.run("profile", str(profile), *SMALL, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout)
    assert info["entries"] == info["measured"] == ENTRIES and info["resumed"] == 0, info
    assert_complete(out)


def test_ssh_daemon_killed_mid_profile_then_resume(
    sshd_server: ns_helpers.SSHServer, cli: CLI, tmp_path: Path
) -> None:
    profile = ssh_profile(tmp_path / "profiles" / "sshdev.yaml", sshd_server)
    cut_and_resume(
        cli, profile, tmp_path / "ssh.csv", "sshdev",
        cut=sshd_server.kill_all,  # the listener and every session process: FIN/RST, the runner dies too
        restore=sshd_server.start,  # same port, host key and config
        exit_within_s=30,
    )


def test_ssh_link_silently_down_mid_profile_then_resume(
    sshd_server: ns_helpers.SSHServer, cli: CLI, tmp_path: Path
) -> None:
    # keepalive 1 s x 3: a silent link is declared lost after ~3 s; the lock clean-up's reconnect
    # then gives up after connect_timeout_s.
    profile = ssh_profile(tmp_path / "profiles" / "sshdev.yaml", sshd_server,
                          ssh={"keepalive_s": 1, "keepalive_count": 3, "connect_timeout_s": 3})
    ns = sshd_server.ns
    try:
        cut_and_resume(
            cli, profile, tmp_path / "ssh.csv", "sshdev",
            cut=lambda: ns_helpers.set_loopback(ns, up=False),  # packets vanish: no FIN, no RST
            restore=lambda: ns_helpers.set_loopback(ns, up=True),
            exit_within_s=30, while_measuring=True,  # keepalives must notice a silent running command
        )
    finally:
        ns_helpers.set_loopback(ns, up=True)


def test_adb_daemon_killed_mid_profile_then_resume(
    adbd_server: ns_helpers.ADBServer, cli: CLI, tmp_path: Path
) -> None:
    profile = adb_profile(tmp_path / "profiles" / "adbdev.yaml", adbd_server)
    cut_and_resume(
        cli, profile, tmp_path / "adb.csv", "adbdev",
        cut=adbd_server.stop,  # adbd and the shells it started: the kernel closes the socket
        restore=lambda: restart_adbd(adbd_server),
        exit_within_s=30, while_measuring=True,
    )


def test_hostile_profile_values_execute_nothing(
    sshd_server: ns_helpers.SSHServer, adbd_server: ns_helpers.ADBServer, cli: CLI, tmp_path: Path
) -> None:
    marker = Path(f"/tmp/hwnas-pwned-{uuid.uuid4().hex}")
    inject = f"$(touch {marker}); touch {marker} `touch {marker}` 'q' \"d\""
    profiles = tmp_path / "profiles"
    cases = [
        # sshd refuses the user name: a setting to fix (exit 2; the probe reports a device it cannot read)
        ("profile", ssh_profile(profiles / "u.yaml", sshd_server, name="u", ssh={"user": f"root{inject}"}), (2,)),
        ("probe", profiles / "u.yaml", (1, 2)),
        # a host full of shell syntax is only ever a name to resolve, and fails to (exit 1)
        ("probe", ssh_profile(profiles / "h.yaml", sshd_server, name="h",
                              ssh={"host": f"127.0.0.1;touch {marker}", "connect_timeout_s": 3}), (1,)),
        ("probe", adb_profile(profiles / "ah.yaml", adbd_server, name="ah",
                              adb={"host": f"127.0.0.1$(touch {marker})", "connect_timeout_s": 3}), (1,)),
        # work folder and interpreter full of shell syntax: the folder is made under its literal
        # name, the interpreter does not exist, so the runner cannot start (exit 1)
        ("profile", ssh_profile(profiles / "w.yaml", sshd_server, name="w", python=f"{PYTHON} {inject}",
                                workdir=str(tmp_path / f"wd {inject}")), (1,)),
        ("profile", adb_profile(profiles / "aw.yaml", adbd_server, name="aw", python=f"{PYTHON};touch {marker}",
                                workdir=str(tmp_path / f"awd {inject}")), (1,)),
    ]
    for command, profile, codes in cases:
        args = [command, str(profile), "--json"]
        if command == "profile":
            args[2:2] = [*SMALL, "--out", str(tmp_path / f"{profile.stem}.csv")]
        res = cli.run(*args, timeout=120)
        line = assert_one_line_error(res.returncode, res.stdout, res.stderr, codes=codes)
        assert line.startswith(f"hwnas: error: {profile.stem}:"), line
        assert not marker.exists(), f"{profile.name} ran an injected command"
    # the hostile work folders exist under their literal names
    assert (tmp_path / f"wd {inject}").is_dir() and (tmp_path / f"awd {inject}").is_dir()
    assert not marker.exists()


def test_several_devices_concurrently(sshd_server: ns_helpers.SSHServer, cli: CLI, tmp_path: Path) -> None:
    # Named devices are looked up in ./device_profiles first: an SSH board and a local device
    # of this test's own (its lock and work folder in tmp, never the shared /tmp/hwnas).
    folder = tmp_path / "device_profiles"
    ssh_profile(folder / "sshdev.yaml", sshd_server)
    folder.joinpath("local.yaml").write_text(
        yaml.safe_dump({"name": "local", "transport": {"local": {}}, "workdir": str(tmp_path / "local-device")})
    )
    luts = {name: folder / name / "compact_onnxruntime_float32_t1_b1.csv" for name in ("sshdev", "local")}
    res = cli.run("profile", "sshdev", "local", *SMALL, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    devices = json.loads(res.stdout)["devices"]
    assert [d["device"] for d in devices] == ["sshdev", "local"]
    for d in devices:
        assert d["ok"] is True and d["entries"] == d["measured"] == ENTRIES, d
        assert (tmp_path / d["lut"]).resolve() == luts[d["device"]].resolve()  # relative to the cwd
        assert_complete(luts[d["device"]])
    # sshdev's link broken: local still completes, the exit code says one device failed
    sshd_server.kill_all()
    luts["local"].unlink()
    res = cli.run("profile", "sshdev", "local", *SMALL, "--force", "--json")  # sshdev's LUT is there: replace it
    assert res.returncode == 1, res.stderr[-3000:]
    by_name = {d["device"]: d for d in json.loads(res.stdout)["devices"]}
    assert by_name["local"]["ok"] is True and by_name["local"]["entries"] == ENTRIES
    assert_complete(luts["local"])
    assert by_name["sshdev"]["ok"] is False and by_name["sshdev"]["exit_code"] == 1
    assert "sshdev:" in by_name["sshdev"]["error"]
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "sshdev:" in lines[0], res.stderr[-3000:]
