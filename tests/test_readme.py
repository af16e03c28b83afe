"""README's user guide, run as written: every command in its code blocks is either run here, from a copy
of the repository's files (the commands that need no phone or board and take seconds), or, when it needs
a phone, a board or minutes of training, checked against its command's ``--help`` (the subcommand exists,
every flag it uses is still one of the command's). A README command this file does not know fails the
suite until it is classified below, so the guide cannot drift away from the CLI.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.cli._app import main

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent  # the interpreter running the tests: its venv has hwnas
COMMAND_TIMEOUT_S = 300

#: Run as written, in this order, from a copy of the repository (later ones read what earlier ones wrote).
RUN = (
    ".venv/bin/hwnas devices",
    ".venv/bin/hwnas probe local",
    ".venv/bin/hwnas lut import-ofa profiler/data/ofa-note10/*_lookup_table.yaml --space ofa-mbv3-w1.2 --out note10.csv",
    ".venv/bin/hwnas predictor accuracy --ofa-checkpoint profiler/data/ofa-note10/acc_predictor.pth --out ofa-acc.pt",
    ".venv/bin/hwnas search --space ofa-mbv3-w1.2 --lut note10.csv --accuracy ofa-acc.pt --latency-ms 15,20,25,30,40",
    ".venv/bin/hwnas predictor latency --space ofa-mbv3-w1.2 --suggest 30 --out archs.jsonl",
)
#: Checked against ``--help`` only, with the reason they are not run here.
HELP_ONLY = {
    "profile local --space ofa-mbv3-w1.0": "profiles a whole OFA space on this CPU: minutes (test_profiler profiles compact)",
    "lut validate local --lut device_profiles/local/ofa-mbv3-w1.0": "needs the LUT of the profile above",
    "probe pixel-usb": "needs a phone on USB",
    "profile pixel-usb": "needs a phone on USB",
    "probe rpi4": "needs a Raspberry Pi",
    "profile rpi4": "needs a Raspberry Pi",
    "supernet train": "trains a supernet: minutes (test_supernet and test_demo train tiny ones)",
    "predictor accuracy supernet.pt": "needs the supernet trained above",
    "profile local --space compact": "minutes of profiling (test_profiler profiles compact at one resolution)",
    "search --space compact --device local": "needs the supernet, predictor and LUT above",
    "export supernet.pt": "needs the supernet trained above",
    "lut diff device_profiles/pixel-usb": "needs a phone's LUTs",
    "predictor measure rpi4": "needs a Raspberry Pi (test_fewshot measures subnets on this machine)",
    "predictor latency --space ofa-mbv3-w1.2 --data": "needs the measurements above (test_fewshot fits CSVs)",
    "predictor predict rpi4-latency.json": "needs the predictor above",
    "search --space ofa-mbv3-w1.2 --latency-predictor": "needs the predictor above and a Raspberry Pi",
}
#: Not hwnas commands: the two make targets are this suite and the demo (test_demo), pip is pip.
OTHER = ("make demo", "make test", "pip install 'hwnas[usb]'", ".venv/bin/python -c ")


def readme_commands() -> list[str]:
    """Every command line of README's ``bash`` blocks, and the ``run:`` steps of its ``yaml`` blocks."""
    out: list[str] = []
    lang = None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            lang = line[3:].strip() if lang is None else None
            continue
        if lang == "bash":
            command = re.split(r"\s+#\s", line.strip(), maxsplit=1)[0].strip()
        elif lang == "yaml" and line.strip().startswith("- run:"):
            command = line.strip()[len("- run:"):].strip()
        else:
            continue
        if command:
            out.append(command)
    return out


def _hwnas_args(command: str) -> str:
    return command.split(".venv/bin/hwnas ", 1)[1] if ".venv/bin/hwnas " in command else ""


def test_every_readme_command_is_classified() -> None:
    commands = readme_commands()
    assert len(commands) >= 15, "README's code blocks were not found"
    unknown = [
        c for c in commands
        if c not in RUN and not c.startswith(OTHER) and not any(_hwnas_args(c).startswith(k) for k in HELP_ONLY)
    ]
    assert not unknown, f"README commands not classified in tests/test_readme.py (RUN or HELP_ONLY): {unknown}"
    missing = [c for c in RUN if c not in commands]
    assert not missing, f"commands this test runs are no longer in README.md: {missing}"


def _help(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``hwnas ARGS --help``, in this process (the CLI's own entry point; no interpreter start-up per call)."""
    capsys.readouterr()
    try:
        main([*args, "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None), f"hwnas {' '.join(args)} --help exited {exc.code}"
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [c for c in readme_commands() if _hwnas_args(c) and c not in RUN])
def test_readme_command_matches_its_help(command: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that needs a phone, a board or minutes: its subcommand exists and takes every flag it uses."""
    for var, value in (("COLUMNS", "200"), ("TERM", "dumb"), ("NO_COLOR", "1")):
        monkeypatch.setenv(var, value)
    argv = shlex.split(_hwnas_args(command))
    path = [argv[0]]
    top = _help(path, capsys)
    if re.search(r"\bCommands\b", top):  # a command group: the next word is the subcommand
        path.append(argv[1])
        top = _help(path, capsys)
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    offered = set(re.findall(r"--[a-z][a-z0-9-]*", top))
    assert flags <= offered, f"hwnas {' '.join(path)} no longer takes {sorted(flags - offered)} (README: {command})"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (tracked, and new ones not ignored) copied to a fresh folder, with the venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    dest = tmp_path_factory.mktemp("clone")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(VENV)
    return dest


def test_readme_guide_runs_from_a_copy_of_the_repository(clone: Path) -> None:
    outputs = {}
    for command in (".venv/bin/hwnas --help", *RUN):
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=clone,
                              timeout=COMMAND_TIMEOUT_S, env=dict(os.environ, COLUMNS="200"))
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {command}\n{proc.stderr[-2000:]}"
        outputs[command] = proc.stdout
    assert "profile" in outputs[".venv/bin/hwnas --help"] and "search" in outputs[".venv/bin/hwnas --help"]
    assert "local" in outputs[RUN[0]]  # the packaged local device is listed
    assert re.search(r"entries:\s*480\b", outputs[RUN[2]]), outputs[RUN[2]]
    assert (clone / "note10.csv").is_file() and (clone / "ofa-acc.pt").is_file()
    found = re.findall(r"^(\d+) ms: top-1 ([\d.]+)% at ([\d.]+) ms", outputs[RUN[4]], flags=re.M)
    assert [int(b) for b, _, _ in found] == [15, 20, 25, 30, 40], outputs[RUN[4]]
    for budget, top1, ms in found:
        assert float(ms) <= int(budget) and 60 < float(top1) < 90  # OFA's predictor: ImageNet top-1
    assert re.search(r"^30 archs to measure: archs.jsonl$", outputs[RUN[5]], flags=re.M), outputs[RUN[5]]
    assert len((clone / "archs.jsonl").read_text().splitlines()) == 30
