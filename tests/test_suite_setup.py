"""The suite's own set-up (tests/conftest.py, tests/netns.py): strict mode, the seal between the tests and
the machine, and the rules that keep a hung test from hanging the run."""

from __future__ import annotations

import ast
import os
import pwd
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import netns as ns_helpers
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

_SAMPLE = '''
import pytest

def test_passes():
    pass

def test_needs_a_component():
    pytest.skip("no such component here")

@pytest.mark.skipif(True, reason="a statement about this configuration")
def test_skipped_by_configuration():
    pass

@pytest.mark.netns
@pytest.mark.skipif(True, reason="needs root")
def test_real_component_skipped_by_a_mark():
    pass
'''


_SAMPLE_MODULE_SKIP = '''
import pytest

pytest.importorskip("hwnas_no_such_runtime")


def test_never_collected():
    pass
'''


def _run_sample(tmp_path: Path, strict: bool, module_only: bool = False) -> str:
    """pytest on sample files with this suite's conftest loaded as a plugin; its summary line and exit code."""
    if not module_only:
        (tmp_path / "test_sample.py").write_text(_SAMPLE)
    (tmp_path / "test_sample_module.py").write_text(_SAMPLE_MODULE_SKIP)
    env = dict(os.environ, PYTHONPATH=str(TESTS), HWNAS_STRICT="1" if strict else "0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "-W", "ignore",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    summary = proc.stdout.strip().splitlines()[-1] + f" rc={proc.returncode}"
    return summary + (" module-skip-reported" if "a module may not skip here" in proc.stdout else "")


def test_strict_mode_turns_skips_into_failures(tmp_path: Path) -> None:
    summary = _run_sample(tmp_path, strict=True)
    # the skip inside the test fails, the real-component test's skipif mark errors in set-up, the
    # configuration's skipif mark stays a skip, and the module skipped at collection fails the run
    assert re.search(r"\b1 failed, 1 passed, 2 skipped, 1 error\b.* rc=1 module-skip-reported$", summary), summary


def test_strict_mode_fails_a_run_whose_only_skip_is_a_module(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    summary = _run_sample(tmp_path / "only", strict=True, module_only=True)
    assert re.search(r"\b1 skipped\b.* rc=1 module-skip-reported$", summary), summary


def test_without_strict_mode_the_same_tests_skip(tmp_path: Path) -> None:
    summary = _run_sample(tmp_path, strict=False)
    assert re.search(r"\b1 passed, 4 skipped\b.* rc=0$", summary), summary


def test_the_run_is_sealed_from_the_users_files() -> None:
    from hwnas.agents.profiles import config_dir, load_profile
    from hwnas.profiler.workloads import cache_dir

    real_home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
    assert Path(os.environ["HOME"]) != real_home and not Path(os.environ["HOME"]).is_relative_to(real_home)
    assert not config_dir().is_relative_to(real_home) and not cache_dir().is_relative_to(real_home)
    assert Path.cwd() != REPO  # profiles and LUTs a test writes to ./device_profiles land in the run's folder
    workdir = Path(load_profile("local").workdir)
    assert workdir != Path("/tmp/hwnas") and workdir.is_relative_to(Path(os.environ["HOME"]).parents[1])
    assert (Path(os.environ["HOME"]) / ".bashrc").read_text().startswith("# written by the hwnas tests")


def test_each_test_gets_its_own_home(tmp_path: Path) -> None:
    marker = Path(os.environ["HOME"]) / "left-by-a-test"
    assert not marker.exists()
    marker.write_text("the next test must not see this")


def test_each_test_gets_its_own_home_again() -> None:
    assert not (Path(os.environ["HOME"]) / "left-by-a-test").exists()


@pytest.mark.netns
def test_ssh_sessions_start_in_the_throw_away_home(sshd_server: ns_helpers.SSHServer, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import json
        from hwnas.agents.ssh import SSHTransport
        t = SSHTransport(device="board", workdir={str(tmp_path / "wd")!r}, **{sshd_server.settings()!r})
        script = 'echo "$HOME"; echo "${{HWNAS_TEST_HOME:-unset}}"; echo "${{PYENV_ROOT:-unset}}"; echo "$PATH"'
        print(json.dumps(t.run(["sh", "-c", script], description="env", timeout=30).stdout.splitlines()))
    """)
    run = ns_helpers.ns_python(sshd_server.ns, code, timeout=120)
    assert run.returncode == 0, run.stderr
    home, own_rc, pyenv, path = run.json()
    assert home == str(sshd_server.home) and own_rc == "1"  # the session ran the .bashrc the test wrote
    assert pyenv == "unset" and ".pyenv" not in path  # and nothing of the machine's own start-up files


@pytest.mark.netns
def test_install_all_names_every_system_package() -> None:
    proc = subprocess.run([sys.executable, str(TESTS / "netns.py"), "install"], capture_output=True, text=True,
                          timeout=ns_helpers.APT_TIMEOUT_S * len(ns_helpers.SYSTEM_PACKAGES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for _, package, _ in ns_helpers.SYSTEM_PACKAGES:
        assert re.search(rf"^(installed|present  ) {re.escape(package)} \(/", proc.stdout, flags=re.M), proc.stdout


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Call)]


def test_every_subprocess_timeout_is_shorter_than_pytests(pytestconfig: pytest.Config) -> None:
    """A subprocess that hangs must fail its test with a message before pytest-timeout kills the run's test."""
    limit = float(pytestconfig.getini("timeout"))
    too_long = []
    for path in sorted(TESTS.glob("*.py")):
        for call in _calls(path):
            for kw in call.keywords:
                if kw.arg == "timeout" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, (int, float)):
                    if kw.value.value >= limit:
                        too_long.append(f"{path.name}:{call.lineno} timeout={kw.value.value}")
    assert ns_helpers.APT_TIMEOUT_S < limit
    assert not too_long, f"subprocess timeouts not below pytest's {limit:g} s: {too_long}"


def test_no_readline_without_a_timeout() -> None:
    """``readline()`` on a child's pipe waits forever; tests use ``netns.read_line(stream, timeout=...)``."""
    bare = [
        f"{path.name}:{call.lineno}"
        for path in sorted(TESTS.glob("*.py"))
        for call in _calls(path)
        if isinstance(call.func, ast.Attribute) and call.func.attr == "readline"
        and not (path.name == "netns.py")  # read_line's own reader thread
    ]
    assert not bare, f"readline() without a timeout (use netns.read_line): {bare}"
