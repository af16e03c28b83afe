#!/usr/bin/env python3
"""Stand-in for a benchmark program (``benchmark_model`` / ``onnxruntime_perf_test``) in tests.

No ``benchmark_model`` binary exists for this machine, so the end-to-end tests of the
``tflite-benchmark`` and ``onnxruntime-perf-test`` runtimes run this program instead: it prints a
recorded real output from ``tests/fixtures/`` (the file named by ``HWNAS_STANDIN_FIXTURE``) and exits
with ``HWNAS_STANDIN_EXIT`` (default 0). Like the real tools it writes the ``INFO:``/``ERROR:``/
``WARNING:``/``VERBOSE:`` log lines to stderr and the rest to stdout, so the ``2>&1`` merge is
exercised. It fails as the real tool does when the ``--graph=`` model (or the ORT perf test's last
argument) does not exist. ``HWNAS_STANDIN_ARGV_LOG`` names a file where it appends its argv as one
JSON line (to check that every argument arrived whole). Given ``-p PREFIX`` (``onnxruntime_perf_test``'s
profiler), it copies the ONNX Runtime profile named by ``HWNAS_STANDIN_PROFILE`` (a real one, made by
the test) to ``PREFIX_<timestamp>.json``, as the tool does. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time


def main(argv: list[str]) -> int:
    log = os.environ.get("HWNAS_STANDIN_ARGV_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps(argv[1:]) + "\n")
    graphs = [a[len("--graph="):] for a in argv[1:] if a.startswith("--graph=")]
    model = graphs[0] if graphs else (argv[-1] if len(argv) > 1 else "")
    if not model or not os.path.isfile(model):
        sys.stderr.write(f"ERROR: Could not open '{model}'.\nFailed to load model.\n")
        return 1
    fixture = os.environ.get("HWNAS_STANDIN_FIXTURE")
    if not fixture:
        sys.stderr.write("ERROR: HWNAS_STANDIN_FIXTURE is not set\n")
        return 2
    with open(fixture, encoding="utf-8") as fh:
        for line in fh:
            to_err = line.startswith(("INFO:", "ERROR:", "WARNING:", "VERBOSE:"))
            stream = sys.stderr if to_err else sys.stdout
            stream.write(line)
            stream.flush()
    if "-p" in argv[1:-1]:
        prefix = argv[argv.index("-p") + 1]
        shutil.copyfile(os.environ["HWNAS_STANDIN_PROFILE"], f"{prefix}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")
    return int(os.environ.get("HWNAS_STANDIN_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
