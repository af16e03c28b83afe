"""A real slowdown caused on purpose: a device profile whose runtime takes longer for chosen models.

:func:`write_slow_profile` writes, into a folder, a device profile for this machine (``transport: local``,
ONNX Runtime) whose ``python`` is a wrapper script. The wrapper runs the real on-device runner, with
one change: every ``InferenceSession.run`` of a model whose job id is one of ``slow_ids`` (LUT entries
are ``KEY@RESOLUTION``) is followed by a busy wait of ``factor - 1`` times the time the run itself
took, so those models really take ``factor`` times as long, whatever the machine's speed, and every
other model and the reference workload are untouched. Everything else the profile's interpreter is
asked to do (probes, hellos) goes to the real interpreter unchanged.

Used by ``bench_diff`` (``lut diff --recheck`` on a slowdown a file edit cannot fake: re-measuring an
edited file would rightly clear it) and by the tests of ``--recheck``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

_WRAPPER = '''#!{python}
"""hwnas benchmark wrapper: the real runner, with chosen models made slower by a factor."""
import json, os, sys

SLOW_IDS = set({ids})
FACTOR = {factor!r}
args = sys.argv[1:]
if len(args) >= 2 and args[0].endswith("runner.py") and os.path.isfile(args[1]):
    with open(args[1]) as fh:
        job = json.load(fh)
    # a model measured in several passes has the id ENTRY~PASS
    slow = {{os.path.basename(str(m["path"])) for m in job.get("models", [])
             if str(m.get("id")).split("~")[0] in SLOW_IDS}}
    import time

    import onnxruntime as ort

    class _Slow(ort.InferenceSession):
        def __init__(self, path, *a, **k):
            super().__init__(path, *a, **k)
            self._slow = os.path.basename(str(path)) in slow

        def run(self, *a, **k):
            t0 = time.perf_counter()
            out = super().run(*a, **k)
            if self._slow:
                t1 = time.perf_counter()
                end = t1 + (t1 - t0) * (FACTOR - 1.0)
                while time.perf_counter() < end:
                    pass
            return out

    ort.InferenceSession = _Slow
    import runpy

    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
else:
    os.execv(sys.executable, [sys.executable, *args])
'''


def write_slow_profile(folder: Path, slow_ids: Iterable[str], factor: float, *, name: str = "local-slow",
                       threads: int = 1) -> Path:
    """Write ``folder/NAME.yaml`` and its wrapper; returns the profile's path (``--recheck PATH`` takes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / f"{name}-python"
    wrapper.write_text(_WRAPPER.format(python=sys.executable, ids=json.dumps(sorted(slow_ids)), factor=float(factor)))
    wrapper.chmod(0o755)
    profile = folder / f"{name}.yaml"
    profile.write_text(
        f"# this machine, with {', '.join(sorted(slow_ids))} made {factor:g}x slower by {wrapper.name}\n"
        f"name: {name}\ntransport:\n  local: {{}}\nruntime: onnxruntime\nthreads: {threads}\ncores: all\n"
        f"python: {json.dumps(str(wrapper))}\nworkdir: {json.dumps(os.path.join('/tmp', 'hwnas-' + name))}\n"
    )
    return profile
