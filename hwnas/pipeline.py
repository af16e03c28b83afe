"""A small step runner for the demo: each step's result is cached by a hash of its inputs.

``state.json`` in the output folder records, per step, the hash of its inputs and its
result (plain JSON). Re-running skips a step whose inputs are unchanged and whose output
files still exist; a step interrupted half-way is re-run (steps that can resume, such as
profiling and supernet training, resume inside themselves).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwnas.supernet.files import atomic_write

STATE_FILE = "state.json"
MARKER = "hwnas-demo"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    """Runs named steps in order, caching their JSON results under ``out/state.json``."""

    def __init__(self, out: Path, *, on_step: Callable[[str, int, int], None] | None = None, total: int = 0) -> None:
        self.out = out
        self.on_step = on_step
        self.total = total
        self.index = 0
        self.state_path = out / STATE_FILE
        self.state: dict[str, Any] = {"format": MARKER, "version": 1, "steps": {}}
        if self.state_path.exists():
            loaded = json.loads(self.state_path.read_text())
            if loaded.get("format") == MARKER:
                self.state = loaded
        self.timings: dict[str, float] = {}
        self.loads: dict[str, float] = {}  # the 1-minute load average when each step ended
        self.cached: list[str] = []

    def _save(self) -> None:
        atomic_write(self.state_path, json.dumps(self.state, indent=1, default=str))

    def step(self, name: str, inputs: Any, fn: Callable[[], dict[str, Any]], *, files: tuple[str, ...] = ()) -> dict[str, Any]:
        """Run ``fn`` unless a finished result for the same ``inputs`` exists (and its ``files``)."""
        self.index += 1
        if self.on_step is not None:
            self.on_step(name, self.index, self.total)
        key = _hash(inputs)
        rec = self.state["steps"].get(name)
        if rec and rec.get("inputs") == key and rec.get("done") and all((self.out / f).exists() for f in rec.get("files", [])):
            self.cached.append(name)
            self.timings[name] = 0.0
            return rec["result"]
        self.state["steps"][name] = {"inputs": key, "done": False, "started": time.time()}
        self._save()
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = time.perf_counter() - t0
        self.loads[name] = round(os.getloadavg()[0], 2)
        self.state["steps"][name] = {
            "inputs": key,
            "done": True,
            "seconds": self.timings[name],
            "result": result,
            "files": [f for f in files],
        }
        self._save()
        return result


def is_demo_folder(path: Path) -> bool:
    """True for a folder that is empty, missing, or holds an earlier demo's output."""
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    state = path / STATE_FILE
    if not state.is_file():
        return False
    try:
        return json.loads(state.read_text()).get("format") == MARKER
    except (OSError, ValueError):
        return False
