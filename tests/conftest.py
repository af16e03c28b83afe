"""Shared fixtures, the strict mode, and the seal between the tests and the machine they run on.

``netns``, ``sshd_server`` and ``adbd_server`` start real things: a network namespace
(``ip netns``), OpenSSH's sshd and Android's adbd listening on 127.0.0.1 inside it. They
need root; system packages they need are installed with apt on first use
(``tests/netns.py: ensure_system_package``; the run's summary says what was installed).

**Strict mode** (``HWNAS_STRICT=1``, set by ``.ci/run``): a test that needs a real component
(sshd, adbd, network namespaces, Chromium, LiteRT, OFA's data, ...) *fails* when it cannot have
it, instead of skipping. Without it (a user's machine without root) the same tests skip with the
reason. A server that fails to start is a failure in both modes, never a skip.

**Sealed**: the whole run gets its own HOME, XDG folders, workload cache and working directory
(with a ``device_profiles/local.yaml`` whose workdir and lock are the run's own, never the
user's ``/tmp/hwnas``); every test gets a fresh HOME and config folder on top. The servers'
sessions start in a throw-away home whose start-up files the tests write (``netns.write_home``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _pytest.skipping import evaluate_skip_marks

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns as _netns  # noqa: E402  (tests/netns.py, a helper module beside this file)

# A script that starts a job with `cmd &` and no job control starts it with SIGINT ignored, and an ignored
# signal is inherited across exec: every Ctrl-C test would then send a signal nobody hears. Give the run
# (and so every process it starts) the default Ctrl-C again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
#: ``HWNAS_STRICT=1``: skipping a test that needs a real component is a failure (CI).
STRICT = os.environ.get("HWNAS_STRICT", "0") not in ("", "0")
#: Tests with these markers need a real component: in strict mode even a ``skipif`` mark on them fails.
REAL_COMPONENT_MARKERS = ("netns", "tflite", "browser")
#: Variables that point a program at the user's own files; the run gets its own.
_SEALED_DIRS = {"HOME": "home", "XDG_CONFIG_HOME": "config", "XDG_CACHE_HOME": "cache", "XDG_DATA_HOME": "data",
                "XDG_STATE_HOME": "state"}
_PER_TEST_DIRS = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")  # caches stay per session
_LEAKY_VARS = ("SSH_AUTH_SOCK", "ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_PORT", "ANDROID_SERIAL", "HWNAS_CONVERT_WORKERS")

_NETNS_REASON: list[str | None] = []
_STRICT_COLLECT_SKIPS: list[str] = []


# --------------------------------------------------------------------------- strict mode


def pytest_report_header(config: pytest.Config) -> str:
    if STRICT:
        return "hwnas: strict mode (HWNAS_STRICT=1): a test that cannot have its real component fails"
    return "hwnas: tests that need root or a missing component skip with the reason (HWNAS_STRICT=1: they fail)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In strict mode a skip is a failure, whatever raised it (a fixture, ``pytest.skip``, ``importorskip``,
    a ``skipif`` mark on a real-component test). Only a ``skipif``/``skip`` mark on a test without a
    real-component marker stays a skip: a statement about this configuration, not a missing component."""
    outcome = yield
    report = outcome.get_result()
    if not STRICT or not report.skipped or hasattr(report, "wasxfail"):
        return
    by_mark = report.when == "setup" and evaluate_skip_marks(item) is not None
    if by_mark and not any(item.get_closest_marker(m) for m in REAL_COMPONENT_MARKERS):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"HWNAS_STRICT=1: this test may not skip here, but it skipped: {reason}"


#: The slowest test files (seconds on 2 cores: the LiteRT CLI profile converts ~90 models, the demo trains a
#: supernet, the remote scenarios start sshd/adbd): collected first, so that pytest-xdist's workers (``make
#: test``: one per core, a file's tests kept together) start them at once instead of one waiting for the last.
SLOW_FILES_FIRST = ("test_tflite.py", "test_demo.py", "test_remote_profile.py")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES_FIRST)))  # stable: a file keeps its order


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A whole module skipped while collecting (``importorskip`` at its top) is counted, in strict mode,
    and fails the run at its end (failing the collection itself would stop every other test)."""
    if STRICT and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _STRICT_COLLECT_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _STRICT_COLLECT_SKIPS and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _netns.INSTALLED:
        terminalreporter.write_line("hwnas test set-up installed: " + ", ".join(_netns.INSTALLED))
    for line in _STRICT_COLLECT_SKIPS:
        terminalreporter.write_line(f"HWNAS_STRICT=1: a module may not skip here, but it skipped: {line}", red=True)


# --------------------------------------------------------------------------- sealed from the machine


def _local_profile(folder: Path, workdir: Path) -> None:
    """``folder/local.yaml``: the packaged ``local`` profile with this run's own workdir (lock included)."""
    data = yaml.safe_load((REPO / "device_profiles" / "local.yaml").read_text())
    data["workdir"] = str(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "local.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="session", autouse=True)
def _sealed_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run's own HOME, XDG folders, workload cache (``HWNAS_CACHE_DIR``, shared by every test: its
    entries are keyed by content) and working directory, whose ``device_profiles/local.yaml`` sends the
    ``local`` device's workdir and lock into the run's temporary folder."""
    base = tmp_path_factory.mktemp("sealed")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in _SEALED_DIRS.items():
            (base / sub).mkdir()
            mp.setenv(var, str(base / sub))
        mp.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "workload-cache"))
        for var in _LEAKY_VARS:
            mp.delenv(var, raising=False)
        _netns.write_home(base / "home")
        cwd = base / "cwd"
        _local_profile(cwd / "device_profiles", base / "local-device")
        _local_profile(base / "config" / "hwnas" / "device_profiles", base / "local-device")
        mp.chdir(cwd)
        yield base


@pytest.fixture(autouse=True)
def _sealed_test(_sealed_session: Path, tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh HOME and config/data/state folders for every test (the session's caches stay shared)."""
    base = tmp_path_factory.mktemp("home", numbered=True)
    for var in _PER_TEST_DIRS:
        (base / _SEALED_DIRS[var]).mkdir()
        monkeypatch.setenv(var, str(base / _SEALED_DIRS[var]))
    _netns.write_home(base / "home")
    _local_profile(base / "config" / "hwnas" / "device_profiles", _sealed_session / "local-device")


# --------------------------------------------------------------------------- real servers


def _netns_reason() -> str | None:
    if not _NETNS_REASON:
        _NETNS_REASON.append(_netns.netns_unavailable_reason())
    return _NETNS_REASON[0]


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace ``hwnas-test-<random>`` with loopback up; deleted afterwards."""
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    name = _netns.create_netns()
    try:
        yield name
    finally:
        _netns.delete_netns(name)


@pytest.fixture
def sshd_server(netns: str, tmp_path: Path) -> Iterator[_netns.SSHServer]:
    """A real OpenSSH server on 127.0.0.1:<random port> inside ``netns``.

    Throw-away host and user keys in ``tmp_path``; ``known_hosts`` holds the host key. Its sessions
    start in a throw-away home (``tmp_path/ssh-home``) whose start-up files the test wrote.
    Yields an :class:`netns.SSHServer` (host, port, user, key_file, known_hosts, ns, home).
    A server that does not start fails the test; only a missing sshd that cannot be installed skips.
    """
    try:
        server = _netns.start_sshd(netns, tmp_path / "sshd", home=_netns.write_home(tmp_path / "ssh-home"))
    except _netns.Unavailable as exc:
        pytest.skip(f"cannot have sshd: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def adbd_server(netns: str, tmp_path: Path) -> Iterator[_netns.ADBServer]:
    """A real adbd (Debian's ``adbd``) on a random port inside ``netns``, only for this test.

    adbd listens on every interface of the namespace and on vsock (which no namespace
    isolates), so it runs only while the test does and is killed afterwards. A server that does
    not start fails the test; only a missing adbd that cannot be installed skips.
    """
    try:
        server = _netns.start_adbd(netns, tmp_path)
    except _netns.Unavailable as exc:
        pytest.skip(f"cannot have adbd: {exc}")
    try:
        yield server
    finally:
        server.stop()
