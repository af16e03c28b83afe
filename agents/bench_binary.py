"""Measure models with a benchmark program on the device: TFLite/LiteRT ``benchmark_model``
(runtime ``tflite-benchmark``) or ``onnxruntime_perf_test`` (runtime ``onnxruntime-perf-test``).

One process per model, started through :meth:`Transport.run` with an argv only (no command string is
ever built here)::

    sh -c 'exec "$@" 2>&1' hwnas [taskset MASK] BINARY --graph=MODEL --num_threads=N ...

``sh`` only redirects the program's stderr into its stdout (``2>&1``, so warnings and errors are read
in order with the timings) and ``exec``s it; every other word is a separate argument. The output goes
to the colleague's parsers (:mod:`.parsers`), and each model becomes a result dict of the same schema
as the Python runner's (``agents/runner.py``), see :func:`result_from_benchmark`.

A profile's ``benchmark_binary`` is a path on the device. ``push_benchmark_binary``, when set, names a
local executable that is sent there first (checked by checksum, made executable): only an ELF program of
the device's own architecture (``uname -m`` there) is sent, so that a profile cannot carry any other local
file (a key, a token) off to a host it names.

Per-operator times (``profile_ops``): ``benchmark_model --enable_op_profiling=true`` prints op tables,
read by the parser (:func:`op_rows`); ``onnxruntime_perf_test -p PREFIX`` writes ONNX Runtime's
profile JSON on the device, which is pulled, read (:func:`ort_profile_ops`) and removed.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import runtimes
from .errors import DeviceError, ProfileError
from .parsers import BenchmarkOutputError, BenchmarkResult, parse_benchmark_model, parse_ort_perf_test

if TYPE_CHECKING:
    from .device import Device, ModelFile

log = logging.getLogger(__name__)

BINARY_RUNTIMES = runtimes.BINARY_RUNTIMES
#: ``sh -c SCRIPT NAME ARGV...``: the one shell word, fixed; ARGV stays separate arguments.
MERGE_STDERR = 'exec "$@" 2>&1'
OUTPUT_TAIL_LINES = 12
DEFAULT_MODEL_TIMEOUT_S = 600.0

ResultCallback = Callable[[dict[str, Any]], None]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def benchmark_model_args(
    model: str,
    *,
    threads: int,
    warmup: int,
    runs: int,
    min_seconds: float,
    xnnpack: bool = True,
    gpu: bool = False,
    profile_ops: bool = False,
) -> list[str]:
    """``benchmark_model`` flags for one model.

    ``--use_xnnpack`` is always given (its default changed between TFLite versions, so the set-up is
    explicit); ``--use_gpu`` and ``--enable_op_profiling`` only when asked for, so an old binary that
    lacks them still runs the plain case.
    """
    args = [
        f"--graph={model}",
        f"--num_threads={int(threads)}",
        f"--warmup_runs={int(warmup)}",
        f"--num_runs={int(runs)}",
        f"--min_secs={float(min_seconds):g}",
        f"--use_xnnpack={_flag(xnnpack)}",
    ]
    if gpu:
        args.append("--use_gpu=true")
    if profile_ops:
        args.append("--enable_op_profiling=true")
    return args


def ort_perf_test_args(model: str, *, threads: int, runs: int, profile_prefix: str | None = None) -> list[str]:
    """``onnxruntime_perf_test`` flags: ``-m times -r RUNS -x THREADS -y 1 -e cpu -I [-p PREFIX] MODEL``.

    ``-I`` makes the tool generate its inputs (no test-data folder); ``-p PREFIX`` turns on ONNX Runtime's
    profiler, which writes ``PREFIX_<timestamp>.json``. The tool has no warm-up-count or minimum-time
    flag in ``times`` mode; it runs one untimed first inference itself.
    """
    args = ["-m", "times", "-r", str(int(runs)), "-x", str(int(threads)), "-y", "1", "-e", "cpu", "-I"]
    if profile_prefix:
        args += ["-p", profile_prefix]
    return [*args, model]


def ort_profile_ops(events: Any) -> list[dict[str, Any]]:
    """Per-node times from an ONNX Runtime profile (the JSON list of trace events): events with
    ``cat: Node`` named ``*_kernel_time``, ``dur`` in us, ``args.op_name``/``args.provider``; per node the
    median over the runs (the first run dropped when there are more than two) in ms."""
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    per_node: dict[str, dict[str, Any]] = {}
    for ev in events if isinstance(events, list) else []:
        if not isinstance(ev, dict) or ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])[: -len("_kernel_time")]
        args = ev.get("args") or {}
        entry = per_node.setdefault(
            name, {"node": name, "op_type": str(args.get("op_name", "")), "provider": str(args.get("provider", "")), "us": []}
        )
        entry["us"].append(float(ev.get("dur", 0)))
    rows = []
    for entry in per_node.values():
        us = entry.pop("us")
        if len(us) > 2:
            us = us[1:]
        entry["ms"] = statistics.median(us) / 1000.0
        rows.append(entry)
    return rows


# ``uname -m`` of a device -> the ELF ``e_machine`` values it runs (a 64-bit ARM or x86 kernel runs 32-bit too).
_ELF_MACHINES: dict[str, tuple[int, ...]] = {
    "x86_64": (62, 3), "amd64": (62, 3), "i386": (3,), "i486": (3,), "i586": (3,), "i686": (3,),
    "aarch64": (183, 40), "arm64": (183, 40), "armv8l": (40,), "armv7l": (40,), "armv7": (40,), "armv6l": (40,),
    "riscv64": (243,), "ppc64le": (21,), "s390x": (22,), "mips": (8,), "mips64": (8,),
}
_ELF_NAMES = {62: "x86-64", 3: "x86", 183: "AArch64", 40: "ARM", 243: "RISC-V", 21: "PowerPC64", 22: "S/390", 8: "MIPS"}


def elf_machine(path: Path) -> int | None:
    """The ``e_machine`` of an ELF executable or shared object, None for any other file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    order = "little" if head[5] == 1 else "big"
    if int.from_bytes(head[16:18], order) not in (2, 3):  # ET_EXEC or ET_DYN (PIE)
        return None
    return int.from_bytes(head[18:20], order)


def check_device_executable(path: Path, device_machine: str, *, source: str) -> None:
    """Refuse (ProfileError, exit 2) to send ``path`` unless it is an ELF program the device can run."""
    field = f"{source}: field 'push_benchmark_binary'"
    if not path.is_file():
        raise ProfileError(f"{field}: {path} is not a file")
    machine = elf_machine(path)
    if machine is None:
        raise ProfileError(f"{field}: {path} is not an ELF executable; only a benchmark program is sent to a device")
    allowed = _ELF_MACHINES.get(device_machine.lower())
    if allowed is None:
        raise ProfileError(f"{field}: the device's architecture {device_machine!r} is not one hwnas knows; "
                           "copy the program there yourself and leave push_benchmark_binary out")
    if machine not in allowed:
        raise ProfileError(f"{field}: {path} is built for {_ELF_NAMES.get(machine, f'machine {machine}')}, "
                           f"the device runs {device_machine}")


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def op_rows(parsed: BenchmarkResult) -> list[dict[str, Any]]:
    """The op profiler's Run Order table as ``[{node, op_type, provider, ms}]`` (ms per inference).

    ``provider`` is the delegate that ran the node (``XNNPACK``, ``GPU``, ...) for delegate partitions
    (a node type the tool named in "Replacing N out of M node(s) with delegate (KERNEL)", any node type
    holding ``Delegate`` such as a vendor NPU's ``QnnDelegate``, or a LiteRT name ``Delegate/...``),
    ``LiteRT`` for the LiteRT runtime's own ``LiteRT::Run[...]`` steps, else ``CPU`` (TFLite's builtin
    kernels). With several delegates a partition is labelled by its own kernel's delegate. Rows called 0
    times per inference (``AllocateTensors`` in LiteRT's table) are initialisation, not inference,
    and are left out.
    """
    from .parsers import delegate_label

    delegate = parsed.delegates[0] if len(parsed.delegates) == 1 else ("delegate" if parsed.delegates else "")
    kernels = set(parsed.delegate_kernels)
    rows = []
    for op in parsed.ops:
        if op.times_called == 0:
            continue
        if op.node_type in kernels or "delegate" in op.node_type.lower():
            provider = delegate if len(parsed.delegates) == 1 else delegate_label(op.node_type)
        elif op.name.startswith("Delegate/"):
            provider = delegate or "delegate"
        elif op.node_type.startswith("LiteRT::"):
            provider = "LiteRT"
        else:
            provider = "CPU"
        rows.append({"node": op.name, "op_type": op.node_type, "provider": provider, "ms": op.avg_ms})
    return rows


def result_from_benchmark(model_id: str, parsed: BenchmarkResult) -> dict[str, Any]:
    """A runner-schema result dict from what the tool printed; nothing is derived that it did not print.

    Field by field (``benchmark_model`` / ``onnxruntime_perf_test``):

    - ``runs``: ``count=`` of the regular runs / ``Runs:`` (or ``Total inference requests``);
    - ``mean_ms``: ``avg=`` of the regular runs (else ``Inference (avg)``, or the old ``no stats``) /
      ``Average inference time cost``;
    - ``std_ms``, ``min_ms``, ``max_ms``: ``std=``, ``min=``, ``max=`` / -, ``Min Latency``, ``Max Latency``;
    - ``median_ms``: ``median=`` (LiteRT's tool only) / ``P50 Latency``;
    - ``p90_ms``: never printed by ``benchmark_model`` / ``P90 Latency``;
    - ``p10_ms``: printed by neither tool, always None (a p10 is never made up from a mean and a std);
    - also kept when printed: ``p5_ms``, ``p95_ms``, ``p99_ms``, ``first_ms``, ``init_ms``,
      ``warmup_mean_ms``, ``memory_mb``; no ``samples_ms`` (the tools print no per-run times).

    Fields the tool did not print are None. ``statistic_fallback`` names the statistic a consumer
    should use in place of a missing ``p10_ms``/``median_ms``: ``median_ms`` when printed, else
    ``mean_ms`` (always printed: the parser refuses output without it). ``missing`` lists the
    runner-schema statistics that are None.
    """
    res: dict[str, Any] = {
        "type": "result",
        "id": model_id,
        "runs": parsed.runs,
        "median_ms": _finite(parsed.median_ms),
        "p10_ms": None,
        "p90_ms": _finite(parsed.p90_ms),
        "mean_ms": _finite(parsed.mean_ms),
        "std_ms": _finite(parsed.std_ms),
        "min_ms": _finite(parsed.min_ms),
        "max_ms": _finite(parsed.max_ms),
    }
    for key in ("p5_ms", "p95_ms", "p99_ms", "first_ms", "init_ms", "warmup_mean_ms", "memory_mb", "init_memory_mb",
                "peak_memory_mb"):
        value = _finite(getattr(parsed, key))
        if value is not None:
            res[key] = value
    res["missing"] = [k for k in ("median_ms", "p10_ms", "p90_ms", "std_ms", "min_ms", "max_ms") if res[k] is None]
    res["statistic_fallback"] = "median_ms" if res["median_ms"] is not None else "mean_ms"
    res["tool"] = parsed.tool
    res["delegates"] = list(parsed.delegates)
    warnings = list(parsed.warnings)[:10]
    why = outlier_reason(res["mean_ms"], res["std_ms"], res["min_ms"], res["max_ms"])
    res["outliers"] = why is not None
    if why is not None:
        # the mean of such a run says more about the interference than about the model
        res["converged"] = False
        note = f"{model_id}: the mean {res['mean_ms']:.4g} ms comes from a run with outliers ({why})"
        log.warning("%s", note)
        warnings.insert(0, note)
    if warnings:
        res["warnings"] = warnings
    return res


#: A run whose max is more than this many times its min, or whose std is more than this share of its mean,
#: had outliers: its mean is flagged (``outliers``) and warned about.
OUTLIER_MAX_OVER_MIN = 10.0
OUTLIER_STD_OVER_MEAN = 0.5


def outlier_reason(mean: float | None, std: float | None, lo: float | None, hi: float | None) -> str | None:
    """Why a benchmark program's summary shows a run with outliers, or None."""
    if lo is not None and hi is not None and lo > 0 and hi > OUTLIER_MAX_OVER_MIN * lo:
        return f"max {hi:.4g} ms > {OUTLIER_MAX_OVER_MIN:g}x min {lo:.4g} ms"
    if std is not None and mean is not None and mean > 0 and std > OUTLIER_STD_OVER_MEAN * mean:
        return f"std {std:.4g} ms > {OUTLIER_STD_OVER_MEAN:g}x mean {mean:.4g} ms"
    return None


class BinaryRunner:
    """Runs one benchmark program on a :class:`~.device.Device`, one process per model."""

    def __init__(self, device: Device, *, runtime: str) -> None:
        if runtime not in BINARY_RUNTIMES:
            raise DeviceError(f"runtime {runtime!r} is not a benchmark program; expected one of {list(BINARY_RUNTIMES)}")
        binary = device.profile.benchmark_binary
        if not binary:
            raise DeviceError(
                f"runtime {runtime} needs the profile field 'benchmark_binary'", device=device.profile.name
            )
        self.device = device
        self.runtime = runtime
        self.binary = binary
        self.parse = parse_benchmark_model if runtime == "tflite-benchmark" else parse_ort_perf_test

    # -- files ---------------------------------------------------------------------------
    def remote_binary(self) -> str:
        """The program's path on the device, after sending ``push_benchmark_binary`` there when the profile
        names one (an ELF executable of the device's architecture only; see :func:`check_device_executable`)."""
        from .device import file_sha256
        from .profiles import push_binary_path

        local = push_binary_path(self.device.profile)
        if local is None:
            return self.binary
        res = self.device.transport.run(["uname", "-m"], description="read the device's architecture", timeout=30)
        check_device_executable(local, res.stdout.strip(), source=self.device.profile.name)
        remote = self.binary
        if self.device.profile.transport == "local":
            target = Path(remote)
            if not target.is_file() or file_sha256(target) != file_sha256(local):
                self.device.transport.push(local, remote)
        else:
            self.device.push_files([(local, remote)], executables=[remote])
        self.device.transport.run(["chmod", "755", remote], description="make the benchmark program executable", timeout=30)
        return remote

    def version(self, remote: str) -> str:
        """What identifies the program: its name and the start of its checksum on the device."""
        sums = self.device.remote_check(sums=[remote])[1] if self.device.profile.transport != "local" else {}
        if not sums and Path(remote).is_file():
            from .device import file_sha256

            sums = {remote: file_sha256(Path(remote))}
        digest = sums.get(remote)
        name = posixpath.basename(remote)
        return f"{name} sha256:{digest[:12]}" if digest else name

    # -- measuring -----------------------------------------------------------------------
    def argv(self, remote_binary: str, model: str, *, threads: int, warmup: int, runs: int, min_seconds: float,
             profile_ops: bool, extra: dict[str, Any], profile_prefix: str | None = None) -> list[str]:
        if self.runtime == "tflite-benchmark":
            args = benchmark_model_args(
                model, threads=threads, warmup=warmup, runs=runs, min_seconds=min_seconds,
                xnnpack=bool(extra.get("xnnpack", True)), gpu=bool(extra.get("gpu", False)), profile_ops=profile_ops,
            )
        else:
            args = ort_perf_test_args(model, threads=threads, runs=runs, profile_prefix=profile_prefix if profile_ops else None)
        argv = [remote_binary, *args]
        mask = self.device.core_mask()
        if mask:
            argv = ["taskset", mask, *argv]
        return ["sh", "-c", MERGE_STDERR, "hwnas", *argv]

    def read_temp_c(self, paths: Sequence[str]) -> float | None:
        if not paths:
            return None
        res = self.device.transport.run(
            ["sh", "-c", 'for f in "$@"; do cat "$f" 2>/dev/null; done; true', "hwnas-temp", *paths],
            description="read temperatures", timeout=30, check=False,
        )
        best = None
        for line in res.stdout.split():
            try:
                value = float(line)
            except ValueError:
                continue
            value = value / 1000.0 if abs(value) >= 1000 else value
            best = value if best is None else max(best, value)
        return best

    def thermal_gate(self, paths: Sequence[str], max_temp_c: float | None, max_wait_s: float) -> tuple[float | None, float]:
        temp = self.read_temp_c(paths)
        waited = 0.0
        while temp is not None and max_temp_c is not None and temp > max_temp_c and waited < max_wait_s:
            time.sleep(1.0)
            waited += 1.0
            temp = self.read_temp_c(paths)
        return temp, waited

    def profile_prefix(self, model_id: str) -> str:
        """Where ``onnxruntime_perf_test -p`` writes its profile on the device (a fresh prefix per run)."""
        import hashlib

        folder = self.device.remote("prof")
        self.device.ensure_dir(folder)
        tag = hashlib.sha256(f"{model_id}-{time.time_ns()}".encode()).hexdigest()[:16]
        return posixpath.join(folder, f"ort-{tag}")

    def fetch_ort_profile(self, prefix: str) -> list[dict[str, Any]]:
        """Pull (and remove) the JSON profile written under ``prefix``; its per-node rows."""
        res = self.device.transport.run(
            ["sh", "-c", 'for f in "$1"_*.json; do [ -f "$f" ] && echo "$f"; done; true', "hwnas-prof", prefix],
            description="find the ONNX Runtime profile", timeout=30, check=False,
        )
        found = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        if not found:
            raise DeviceError(f"onnxruntime_perf_test wrote no profile {prefix}_*.json", device=self.device.profile.name)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "profile.json"
                self.device.transport.pull(found[-1], local)
                events = json.loads(local.read_text())
        finally:
            self.device.transport.run(["rm", "-f", "--", *found], description="remove the profile", timeout=30, check=False)
        return ort_profile_ops(events)

    def run_one(self, argv: list[str], model_id: str, timeout: float, *, want_ops: bool = False,
                profile_prefix: str | None = None) -> dict[str, Any]:
        """Run one model; returns its result dict. Raises DeviceError (exit 1) with the command and the
        last lines of output when the program cannot start, fails, or prints no timing."""
        name = self.device.profile.name
        shown = self.device.transport.describe(argv)
        res = self.device.transport.run(
            argv, description=f"benchmark {model_id} with {self.runtime}", timeout=timeout, check=False
        )
        output = res.stdout + (("\n" + res.stderr) if res.stderr.strip() else "")
        tail = _tail(output)
        if res.returncode in (126, 127):
            raise DeviceError(
                f"the benchmark program {self.binary!r} could not be run (exit {res.returncode}: "
                f"{'not executable' if res.returncode == 126 else 'not found'})",
                device=name, command=shown, returncode=res.returncode, output=tail or None,
                hint="set 'benchmark_binary' in the profile to the program's path on the device (to send a local "
                     "program there, name it in 'push_benchmark_binary')",
            )
        try:
            parsed = self.parse(output)
        except BenchmarkOutputError as exc:
            raise BenchmarkOutputError(
                f"{model_id}: {exc.message}", device=name, command=shown,
                returncode=res.returncode if res.returncode != 0 else None, output=tail or None,
            ) from None
        if res.returncode != 0:
            raise DeviceError(
                f"{model_id}: the benchmark program exited with an error after printing timings",
                device=name, command=shown, returncode=res.returncode, output=tail or None,
            )
        result = result_from_benchmark(model_id, parsed)
        result["command"] = shown
        if want_ops:
            try:
                ops = self.fetch_ort_profile(profile_prefix) if profile_prefix else op_rows(parsed)
            except (DeviceError, ValueError) as exc:  # per-op data is optional, as in the runner
                ops, result["ops_error"] = [], str(exc)
            if ops:
                result["ops"] = ops
            else:
                result.setdefault("ops_error", f"{parsed.tool} printed no op-profiling table")
        return result


def measure_with_binary(
    device: Device,
    models: Sequence[ModelFile],
    *,
    runtime: str,
    threads: int,
    runs: int,
    warmup: int,
    min_seconds: float,
    rounds: int = 1,
    profile_ops: bool = False,
    temp_paths: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    on_result: ResultCallback | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Measure ``models`` one process each; the result dicts go to ``on_result`` as they come.

    ``rounds`` > 1 repeats each model's run as many times, round-robin, and keeps the round with the
    lowest mean (a program's output cannot be merged run by run). With ``profile_ops`` the first round
    runs with the op profiler (its per-op table goes to ``ops``) and the later rounds without it, so
    with ``rounds`` > 1 the timings come from unprofiled runs. ``extra`` may hold ``xnnpack``
    (default True) and ``gpu`` (default False) for ``benchmark_model``. Sets ``device.hello`` to a
    runner-like hello (``runtime_version`` names the program and its checksum). Raises DeviceError
    on the first model that fails (see :meth:`BinaryRunner.run_one`).
    """
    extra = dict(extra or {})
    runner = BinaryRunner(device, runtime=runtime)
    binary = runner.remote_binary()
    device.hello = {"type": "hello", "protocol": 1, "runtime": runtime, "runtime_version": runner.version(binary), "binary": binary}
    local = device.profile.transport == "local"
    paths: list[str] = []
    files: list[tuple[Path, str]] = []
    for model in models:
        if local:
            paths.append(str(Path(model.path).resolve()))
        else:
            remote = device.model_remote_path(model)
            files.append((Path(model.path), remote))
            paths.append(remote)
    if files:
        device.push_files(files)
    m = device.profile.measure
    per_model = timeout if timeout is not None else DEFAULT_MODEL_TIMEOUT_S
    max_temp = extra.get("max_temp_c", m.max_temp_c)
    max_wait = float(extra.get("max_thermal_wait_s", 120))
    best: dict[str, dict[str, Any]] = {}
    waits: dict[str, float] = {}
    results: list[dict[str, Any]] = []
    n_rounds = max(1, rounds)
    for r in range(n_rounds):
        for model, path in zip(models, paths, strict=True):
            _, waited = runner.thermal_gate(temp_paths, max_temp, max_wait) if temp_paths else (None, 0.0)
            waits[model.id] = waits.get(model.id, 0.0) + waited
            want_ops = profile_ops and r == 0  # the op profiler slows the run: profile once, time the others
            prefix = runner.profile_prefix(model.id) if want_ops and runtime == "onnxruntime-perf-test" else None
            argv = runner.argv(
                binary, path, threads=threads, warmup=warmup, runs=runs, min_seconds=min_seconds,
                profile_ops=want_ops, extra=extra, profile_prefix=prefix,
            )
            res = runner.run_one(argv, model.id, per_model, want_ops=want_ops, profile_prefix=prefix)
            prev = best.get(model.id)
            if prev is not None:
                for key in ("ops", "ops_error"):
                    if key in prev:
                        res.setdefault(key, prev[key])
            # a profiled round's timings only count when there is no other round
            if prev is None or (profile_ops and r == 1) or res["mean_ms"] < prev["mean_ms"]:
                best[model.id] = res
            if r == n_rounds - 1:
                final = best[model.id]
                final["rounds"] = n_rounds
                final["thermal_wait_s"] = waits.get(model.id, 0.0)
                final["temp_c"] = runner.read_temp_c(temp_paths) if temp_paths else None
                results.append(final)
                if on_result is not None:
                    on_result(final)
            if m.cooldown_s > 0:
                time.sleep(m.cooldown_s)
    return results


__all__ = [
    "BINARY_RUNTIMES",
    "BinaryRunner",
    "benchmark_model_args",
    "measure_with_binary",
    "op_rows",
    "ort_perf_test_args",
    "ort_profile_ops",
    "result_from_benchmark",
]
