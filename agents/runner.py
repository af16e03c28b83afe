#!/usr/bin/env python3
"""hwnas on-device runner: a job in, JSON lines out.

This file is copied to the device and run there with the device's own Python and
runtime. It imports only the standard library and the runtime it drives
(``onnxruntime``, or ``ai_edge_litert`` / ``tflite_runtime`` for ``litert``), so it runs
on a phone's Termux, a Raspberry Pi or a Jetson as well as on the host.

Usage::

    python3 runner.py JOB.json          # or: python3 runner.py - < JOB.json
    python3 runner.py --hello RUNTIME   # only the hello line (or - < runner.py --hello RUNTIME)

The job (JSON)::

    {"runtime": "onnxruntime", "threads": 1, "warmup": 10, "runs": 50,
     "min_seconds": 0.2, "rounds": 3, "cooldown_s": 0, "max_temp_c": 75,
     "statistic": "median_ms", "precision": 0.02, "max_entry_s": 10,
     "max_thermal_wait_s": 120, "temp_paths": ["/sys/class/thermal/thermal_zone0/temp"],
     "state_paths": ["/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"],
     "keep_samples": true, "profile_ops": false, "xnnpack": true, "flush_kb": 0,
     "models": [{"id": "k1", "path": "models/k1.onnx"}]}

The measurement keys (``warmup`` to ``max_entry_s``) are always sent by the host (their defaults live in
hwnas's ``agents/measure_settings.py``, not here). Models are measured round-robin, so that a machine
whose speed drifts affects every model alike: each round gives every model still being measured
``runs / rounds`` timed inferences. ``min_seconds`` is how long a model's timed runs must *span* (from its
first timed run to its last, the other models' rounds in between): a short fast or slow spell of the device
cannot make up all of a model's samples. Round-robin over a batch usually spans that by itself; the last of
the ``rounds`` rounds runs on until it does (a model measured alone, or in one round, is timed that long).
After ``rounds`` rounds a model is done as soon as the relative half-width of the 95% confidence interval
of its ``statistic`` (see :func:`relative_ci`) is at most ``precision``, or once ``max_entry_s`` of work
went into it; its result says which (``ci``, ``converged``) and how long its runs spanned (``span_s``).
``precision`` null: exactly ``rounds`` rounds. So a quiet device stops each model after ``runs`` runs, a
noisy one samples until its interval is narrow enough.

``samples_ms`` holds every run, in order, up to ``KEPT_SAMPLES``; past that an evenly spaced subsample of
that many (``runs`` still counts them all, and every statistic is computed from all of them): a model
of a microsecond timed for 0.2 s runs 200,000 times, and one LUT's sidecar grew to 150 MB.

Output, one JSON object per line, flushed as soon as it is known::

    {"type": "hello", "protocol": 1, "runtime": ..., "runtime_version": ..., "pid": ...}
    {"type": "result", "id": ..., "runs": n, "median_ms": ..., "p10_ms": ..., "p90_ms": ...,
     "mean_ms": ..., "std_ms": ..., "min_ms": ..., "max_ms": ..., "samples_ms": [...],
     "statistic": "median_ms", "ci": 0.012, "converged": true, "rounds": 4, "seconds": 0.9, "span_s": 1.4,
     "temp_c": ..., "state": {...}, "thermal_wait_s": ..., "ops": [...]}
    {"type": "error", "id": ..., "message": ...}
    {"type": "done", "seconds": ..., "measured": n, "failed": n}
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time

PROTOCOL = 1
RUNNER_VERSION = "1"


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def quantile(sorted_values, q):
    """Linear-interpolated quantile of an ascending list (numpy's default method)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


#: At most this many per-run samples go back to the host per model (an evenly spaced subsample beyond).
KEPT_SAMPLES = 2000


def kept_samples(samples_ms, limit=KEPT_SAMPLES):
    """``samples_ms`` itself when it holds at most ``limit`` runs, else ``limit`` of them evenly spaced in
    measurement order (first and last included)."""
    n = len(samples_ms)
    if n <= limit:
        return list(samples_ms)
    step = (n - 1) / (limit - 1)
    return [samples_ms[round(i * step)] for i in range(limit)]


def summarize(samples_ms):
    s = sorted(samples_ms)
    n = len(s)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / (n - 1) if n > 1 else 0.0
    return {
        "runs": n,
        "median_ms": quantile(s, 0.5),
        "p10_ms": quantile(s, 0.1),
        "p90_ms": quantile(s, 0.9),
        "mean_ms": mean,
        "std_ms": math.sqrt(var),
        "min_ms": s[0],
        "max_ms": s[-1],
        "tmean_ms": trimmed_mean(s),
    }


#: z of a two-sided 95% interval
Z95 = 1.959963984540054
#: statistic name -> quantile it estimates (``min_ms``: its interval is the 5th percentile's)
QUANTILES = {"median_ms": 0.5, "p10_ms": 0.1, "p90_ms": 0.9, "min_ms": 0.05}
TRIM = 0.1  # share cut from each end by the trimmed mean


def trimmed_mean(sorted_values, trim=TRIM):
    n = len(sorted_values)
    k = int(math.floor(trim * n))
    kept = sorted_values[k : n - k] or sorted_values
    return sum(kept) / len(kept)


def quantile_interval(sorted_values, q, z=Z95):
    """Distribution-free confidence interval of the ``q`` quantile: order statistics whose ranks come from
    the binomial(n, q) count of samples below the quantile (normal approximation with a continuity margin).
    ``None`` when ``n`` is too small for the interval to lie inside the sample."""
    n = len(sorted_values)
    if n < 2:
        return None
    half = z * math.sqrt(n * q * (1 - q))
    lo = int(math.floor(n * q - half))  # 1-based ranks
    hi = int(math.ceil(n * q + half)) + 1
    if lo < 1 or hi > n:
        return None
    return sorted_values[lo - 1], sorted_values[hi - 1]


def relative_ci(samples_ms, statistic):
    """Relative half-width (a fraction of the statistic) of the 95% confidence interval of ``statistic``
    over ``samples_ms``; ``inf`` while there are too few samples to say.

    Quantiles (``median_ms``, ``p10_ms``, ``p90_ms``; ``min_ms`` through the 5th percentile) use order
    statistics, which hold whatever the distribution (bimodal, long-tailed); ``mean_ms`` uses the
    standard error, ``tmean_ms`` (10% trimmed mean) the winsorised standard error."""
    s = sorted(samples_ms)
    n = len(s)
    if n < 2:
        return math.inf
    if statistic in QUANTILES:
        q = QUANTILES[statistic]
        ci = quantile_interval(s, q)
        if ci is None:
            return math.inf
        centre = quantile(s, q) if statistic != "min_ms" else s[0]
        return (ci[1] - ci[0]) / 2 / centre if centre > 0 else math.inf
    if statistic == "tmean_ms":
        k = int(math.floor(TRIM * n))
        w = [min(max(x, s[k]), s[n - 1 - k]) for x in s]
        mw = sum(w) / n
        sw = math.sqrt(sum((x - mw) ** 2 for x in w) / (n - 1))
        centre = trimmed_mean(s)
        return Z95 * sw / ((1 - 2 * TRIM) * math.sqrt(n)) / centre if centre > 0 else math.inf
    mean = sum(s) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1))
    return Z95 * sd / math.sqrt(n) / mean if mean > 0 else math.inf


def min_runs_for_interval(statistic, limit=100000):
    """The fewest runs for which ``relative_ci`` of ``statistic`` is finite (a quantile's order-statistic
    interval must lie inside the sample: 8 runs for the median, 53 for p10, 110 for the 5th percentile that
    ``min_ms`` uses); 2 for the means."""
    if statistic not in QUANTILES:
        return 2
    q = QUANTILES[statistic]
    n = 2
    while n < limit and quantile_interval(range(n), q) is None:
        n += 1
    return n


def sampling_done(samples_ms, statistic, precision, spent_s, max_entry_s):
    """The stopping rule: ``(done, ci, converged)`` for a model's samples so far."""
    ci = relative_ci(samples_ms, statistic)
    converged = precision is not None and ci <= precision
    done = precision is None or converged or spent_s >= max_entry_s
    return done, ci, converged


def read_text(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def read_temp_c(paths):
    """Highest temperature over ``paths`` (sysfs millidegrees, or degrees if < 1000)."""
    best = None
    for path in paths:
        raw = read_text(path)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if abs(value) >= 1000:
            value /= 1000.0
        best = value if best is None else max(best, value)
    return best


# --------------------------------------------------------------------------- runtimes


class OnnxRuntimeModel:
    def __init__(self, path, threads, profile_dir=None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads == 1:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile_dir is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(profile_dir, "ortprof")
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.feeds = {}
        for inp in self.session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            self.feeds[inp.name] = _random_array(shape, inp.type)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self):
        self.session.run(self.output_names, self.feeds)

    def end_profiling(self):
        return self.session.end_profiling()


def _random_array(shape, type_name):
    import numpy as np

    rng = np.random.default_rng(0)
    if "int8" in type_name and "uint8" not in type_name:
        return rng.integers(-128, 127, size=shape, dtype=np.int8)
    if "uint8" in type_name:
        return rng.integers(0, 255, size=shape, dtype=np.uint8)
    if "int64" in type_name:
        return np.zeros(shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def ort_version():
    import onnxruntime as ort

    return ort.__version__


def _litert_interpreter_module():
    try:
        from ai_edge_litert import interpreter as mod  # type: ignore

        return mod, "ai_edge_litert"
    except ImportError:
        from tflite_runtime import interpreter as mod  # type: ignore

        return mod, "tflite_runtime"


class LiteRTModel:
    def __init__(self, path, threads, xnnpack=True):
        import numpy as np

        mod, _ = _litert_interpreter_module()
        kwargs = {"model_path": path, "num_threads": threads}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = mod.Interpreter(**kwargs)
        self.interpreter.allocate_tensors()
        # which delegates took nodes (XNNPACK, when on): read back, not assumed from the setting
        try:
            n = sum(1 for op in self.interpreter._get_ops_details() if op.get("op_name") == "DELEGATE")
            self.delegates = ["XNNPACK"] if n and xnnpack else (["delegate"] if n else [])
        except Exception:  # a private API: informative only
            self.delegates = None
        rng = np.random.default_rng(0)
        for detail in self.interpreter.get_input_details():
            shape = [int(d) if d > 0 else 1 for d in detail["shape"]]
            dtype = detail["dtype"]
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                data = rng.integers(info.min, info.max, size=shape, dtype=dtype)
            else:
                data = rng.standard_normal(shape).astype(dtype)
            self.interpreter.set_tensor(detail["index"], data)

    def __call__(self):
        self.interpreter.invoke()


def litert_version():
    mod, name = _litert_interpreter_module()
    try:
        if name == "ai_edge_litert":
            from importlib.metadata import version

            return "ai-edge-litert " + version("ai-edge-litert")
        import tflite_runtime  # type: ignore

        return "tflite_runtime " + getattr(tflite_runtime, "__version__", "?")
    except Exception:  # version lookup is informative only
        return name


def load_model(job, path, profile_dir=None):
    runtime = job["runtime"]
    threads = int(job.get("threads", 1))
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(path, threads, profile_dir=profile_dir)
    if runtime == "litert":
        return LiteRTModel(path, threads, xnnpack=bool(job.get("xnnpack", True)))
    raise ValueError(f"runtime {runtime!r} is not driven by the Python runner")


def runtime_version(runtime):
    if runtime == "onnxruntime":
        return ort_version()
    if runtime == "litert":
        return litert_version()
    raise ValueError(f"unknown runtime {runtime!r}")


# --------------------------------------------------------------------------- measuring


def make_flusher(flush_kb):
    """A function that evicts the CPU caches by writing ``flush_kb`` KiB (``None`` when 0).

    A model measured alone keeps its weights in the core's private caches between runs;
    inside a whole network the other layers evict them. Writing a buffer larger than
    the private cache before each timed run puts every run in the network's situation.
    """
    if not flush_kb:
        return None
    import numpy as np

    buf = np.zeros(int(flush_kb) * 1024 // 8, dtype=np.float64)

    def flush():
        np.add(buf, 1.0, out=buf)

    return flush


def time_runs(fn, runs, min_seconds, max_runs, flush=None):
    """Run ``fn`` at least ``runs`` times and at least ``min_seconds``; samples in ms."""
    samples = []
    clock = time.perf_counter_ns
    start = clock()
    limit = int(min_seconds * 1e9)
    while len(samples) < runs or (clock() - start < limit and len(samples) < max_runs):
        if flush is not None:
            flush()
        t0 = clock()
        fn()
        samples.append((clock() - t0) / 1e6)
    return samples


def thermal_gate(job):
    paths = job.get("temp_paths") or []
    limit = job.get("max_temp_c")
    if not paths or limit is None:
        return read_temp_c(paths), 0.0
    waited = 0.0
    deadline = float(job.get("max_thermal_wait_s", 120))
    temp = read_temp_c(paths)
    while temp is not None and temp > float(limit) and waited < deadline:
        time.sleep(1.0)
        waited += 1.0
        temp = read_temp_c(paths)
    return temp, waited


def op_profile(job, model_spec, path, profile_runs):
    """Per-node latencies from ONNX Runtime's profiler: median of each node's kernel time (ms)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(job, path, profile_dir=tmp)
        for _ in range(profile_runs):
            model()
        prof_path = model.end_profiling()
        with open(prof_path) as fh:
            events = json.load(fh)
    per_node = {}
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        args = ev.get("args", {})
        entry = per_node.setdefault(
            name, {"node": name, "op_type": args.get("op_name", ""), "provider": args.get("provider", ""), "us": []}
        )
        entry["us"].append(float(ev.get("dur", 0)))
    ops = []
    for entry in per_node.values():
        us = sorted(entry.pop("us"))
        # the first call of each node is warm-up inside the profile: drop it when we can
        if len(us) > 2:
            us = sorted(us[1:])
        entry["ms"] = quantile(us, 0.5) / 1000.0
        ops.append(entry)
    return ops


def hello(runtime):
    """The hello message for ``runtime``; a fatal one when the runtime is not usable here."""
    try:
        version = runtime_version(runtime)
    except Exception as exc:  # the runtime is missing on this device
        return {"type": "fatal", "message": f"runtime {runtime} is not usable here: {type(exc).__name__}: {exc}"}
    return {
        "type": "hello",
        "protocol": PROTOCOL,
        "runner_version": RUNNER_VERSION,
        "runtime": runtime,
        "runtime_version": version,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "pid": os.getpid(),
    }


def main(argv):
    if len(argv) == 3 and argv[1] == "--hello":
        msg = hello(argv[2])
        emit(msg)
        return 3 if msg["type"] == "fatal" else 0
    if len(argv) != 2:
        sys.stderr.write("usage: runner.py JOB.json | - | --hello RUNTIME\n")
        return 2
    started = time.perf_counter()
    job = json.load(sys.stdin if argv[1] == "-" else open(argv[1]))
    base = os.path.dirname(os.path.abspath(argv[1])) if argv[1] != "-" else os.getcwd()
    runtime = job["runtime"]
    msg = hello(runtime)
    emit(msg)
    if msg["type"] == "fatal":
        return 3
    warmup = int(job["warmup"])
    runs = int(job["runs"])
    min_seconds = float(job["min_seconds"])
    rounds = max(1, int(job["rounds"]))
    cooldown = float(job["cooldown_s"])
    precision = job.get("precision")
    precision = None if precision is None else float(precision)
    max_entry_s = float(job.get("max_entry_s") or math.inf)
    statistic = job.get("statistic") or "median_ms"
    max_runs = int(job.get("max_runs", 100000))
    keep = bool(job.get("keep_samples", True))
    # ceil: at least `runs` timed runs after `rounds` rounds; when sampling to a precision, at least as many
    # as the statistic's interval needs (53 for p10_ms): 50 runs in 3 rounds gave p10 no interval, so every
    # model ran a 4th round (68 runs) before the stopping rule could even look at it
    planned = max(runs, min_runs_for_interval(statistic)) if precision is not None else runs
    per_round = max(1, -(-planned // rounds))
    flushers = {}
    state_paths = job.get("state_paths") or []
    temp_paths = job.get("temp_paths") or []
    measured = failed = 0

    models = {}
    samples = {}
    waits = {}
    spent = {}
    done_rounds = {}
    first_run = {}  # perf_counter() at each model's first timed run: its samples' span starts there
    specs = list(job["models"])
    active = [spec["id"] for spec in specs]
    by_id = {spec["id"]: spec for spec in specs}
    r = 0
    while active:
        for mid in list(active):
            spec = by_id[mid]
            path = spec["path"] if os.path.isabs(spec["path"]) else os.path.join(base, spec["path"])
            t_model = time.perf_counter()
            try:
                if mid not in models:
                    models[mid] = load_model(job, path)
                    fn = models[mid]
                    for _ in range(warmup):
                        fn()
                    t_model = time.perf_counter()  # loading and warm-up are not the entry's sampling time
                _, waited = thermal_gate(job)
                waits[mid] = waits.get(mid, 0.0) + waited
                t_model += waited
                fn = models[mid]
                fn()  # one un-timed call re-warms caches after the other models ran
                flush_kb = int(spec.get("flush_kb", job.get("flush_kb", 0)) or 0)
                if flush_kb not in flushers:
                    flushers[flush_kb] = make_flusher(flush_kb)
                now = time.perf_counter()
                first_run.setdefault(mid, now)
                # the last required round runs on until the samples span min_seconds
                span_left = min_seconds - (now - first_run[mid]) if r >= rounds - 1 else 0.0
                samples.setdefault(mid, []).extend(
                    time_runs(fn, per_round, max(0.0, span_left), max_runs, flushers[flush_kb])
                )
            except Exception as exc:
                active.remove(mid)
                models.pop(mid, None)
                failed += 1
                emit({"type": "error", "id": mid, "message": f"{type(exc).__name__}: {exc}"})
                continue
            spent[mid] = spent.get(mid, 0.0) + time.perf_counter() - t_model
            done_rounds[mid] = r + 1
            if cooldown > 0:
                time.sleep(cooldown)
            if r < rounds - 1:
                continue
            stop, ci, converged = sampling_done(samples[mid], statistic, precision, spent[mid], max_entry_s)
            if not stop and len(samples[mid]) < max_runs:
                continue
            active.remove(mid)
            result = {"type": "result", "id": mid}
            result.update(summarize(samples[mid]))
            result.update(statistic=statistic, ci=ci if math.isfinite(ci) else None, converged=converged,
                          rounds=done_rounds[mid], seconds=round(spent[mid], 6),
                          span_s=round(time.perf_counter() - first_run[mid], 6))
            if keep:
                result["samples_ms"] = [round(x, 6) for x in kept_samples(samples[mid])]
            result["temp_c"] = read_temp_c(temp_paths)
            result["thermal_wait_s"] = waits.get(mid, 0.0)
            if state_paths:
                result["state"] = {p: read_text(p) for p in state_paths}
            delegates = getattr(models.get(mid), "delegates", None)
            if delegates is not None:
                result["delegates"] = delegates
            if job.get("profile_ops") and runtime == "onnxruntime":
                try:
                    result["ops"] = op_profile(job, spec, path, int(job.get("profile_runs", 20)))
                except Exception as exc:  # per-op data is optional
                    result["ops_error"] = f"{type(exc).__name__}: {exc}"
            elif job.get("profile_ops"):
                result["ops_error"] = (
                    f"runtime {runtime} has no op profiler in its Python API; "
                    "per-op times: runtime tflite-benchmark with benchmark_model --enable_op_profiling"
                )
            emit(result)
            measured += 1
            models.pop(mid, None)
            samples.pop(mid, None)
        r += 1
    emit({"type": "done", "seconds": time.perf_counter() - started, "measured": measured, "failed": failed})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
