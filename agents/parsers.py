"""Parsers for the console output of on-device benchmark tools.

Two tools are understood:

* TFLite/LiteRT ``benchmark_model`` (:func:`parse_benchmark_model`): every format from
  TFLite 1.12 (``Average inference timings in us: ...``) through TF 2.x
  (``Inference timings in us: ...``) to the LiteRT CompiledModel tool
  (``========== BENCHMARK RESULTS ==========``), with or without ``INFO: [file:line]``
  prefixes, with or without op profiling (``--enable_op_profiling=true``).
* ``onnxruntime_perf_test`` (:func:`parse_ort_perf_test`).

Both return a :class:`BenchmarkResult` whose times are in milliseconds. Output that holds no
timing, or that reports a failure (a delegate that did not apply, a model that did not load),
raises :class:`BenchmarkOutputError` quoting the tool's error lines and saying what is missing: a
failed run is never turned into a latency. A ``benchmark_model`` log holding only the op-profiling
tables still yields its per-op rows with ``parse_benchmark_model(text, need_timing=False)``.

Pure functions over text; standard library only (they run on the host).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import DeviceError

__all__ = [
    "BenchmarkOutputError",
    "BenchmarkResult",
    "OpTiming",
    "OpTypeSummary",
    "delegate_label",
    "parse_benchmark_model",
    "parse_ort_perf_test",
]

_US_PER_MS = 1000.0
_BYTES_PER_MB = 1024.0 * 1024.0
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class BenchmarkOutputError(DeviceError):
    """A benchmark tool ran but its output holds no usable timing (or reports a failure).

    The message quotes the tool's own error lines; ``output`` holds the tail of the output.
    """

    exit_code = 1


@dataclass(frozen=True)
class OpTiming:
    """One row of an op-profiling table (Run Order) of ``benchmark_model``.

    ``name`` is the node name as printed (e.g. ``[Identity]:77``,
    ``Delegate/Fully Connected (NC, PF32) GEMM:1``); ``node_type`` the op or delegate kernel
    (``CONV_2D``, ``TfLiteXNNPackDelegate``); times in ms; ``pct``/``cdf_pct`` in percent
    (0-100) of the profiled run. Columns a tool version does not print are None.
    """

    name: str
    node_type: str
    avg_ms: float
    pct: float | None = None
    times_called: int | None = None
    first_ms: float | None = None
    start_ms: float | None = None
    cdf_pct: float | None = None
    mem_kb: float | None = None


@dataclass(frozen=True)
class OpTypeSummary:
    """One row of the "Summary by node type" table: all nodes of one type together."""

    node_type: str
    count: int
    avg_ms: float
    pct: float | None = None
    cdf_pct: float | None = None
    mem_kb: float | None = None
    times_called: int | None = None


@dataclass(frozen=True)
class BenchmarkResult:
    """What one benchmark run measured; times in ms, memory in MiB; None where not printed.

    ``mean_ms`` and the other statistics describe the regular (timed) runs; ``first_ms`` is the
    very first inference (cold), ``warmup_mean_ms`` the mean of the warm-up runs, ``init_ms``
    the session/interpreter initialisation. ``ops`` is the per-node table of the regular runs
    (in run order), ``op_summary`` its per-node-type summary, ``init_ops`` the separate
    initialisation-profiling table (``ModifyGraphWithDelegate``, ``AllocateTensors``).
    ``delegates`` names the delegates (TFLite) or execution providers (ORT) that ran part of
    the graph, ``delegate_kernels`` the node types of the delegates' partitions as the tool named
    them (``TfLiteXNNPackDelegate``, a vendor NPU's own kernel name); ``warnings`` are the tool's
    non-fatal complaints. Memory (``benchmark_model``): ``init_memory_mb`` and ``memory_mb`` are the
    footprint after initialisation and overall (older tools: "Peak memory footprint (MB): init=
    overall=", newer: "Memory footprint delta from the start of the tool (MB): init= overall="),
    ``peak_memory_mb`` the peak seen by the tool's periodic monitoring.
    """

    tool: str
    mean_ms: float | None
    runs: int | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None
    p5_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    first_ms: float | None = None
    init_ms: float | None = None
    warmup_mean_ms: float | None = None
    warmup_runs: int | None = None
    memory_mb: float | None = None
    init_memory_mb: float | None = None
    peak_memory_mb: float | None = None
    threads: int | None = None
    cpu_usage_pct: float | None = None
    inferences_per_second: float | None = None
    ops: tuple[OpTiming, ...] = ()
    op_summary: tuple[OpTypeSummary, ...] = ()
    init_ops: tuple[OpTiming, ...] = ()
    delegates: tuple[str, ...] = ()
    delegate_kernels: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples become lists, rows become dicts)."""
        out = asdict(self)
        for key in ("ops", "op_summary", "init_ops", "delegates", "delegate_kernels", "warnings"):
            out[key] = list(out[key])
        return out


# --------------------------------------------------------------------------- shared helpers

# "INFO: ", "INFO: [litert/tools/benchmark_litert_model.h:81] ", "VERBOSE: ", "WARNING: [x.cc:3] "
_PREFIX_RE = re.compile(r"^(?:INFO|VERBOSE|DEBUG): (?:\[[^\]\s]+:\d+\] ?)?")
_LEVEL_RE = re.compile(r"^(ERROR|WARNING|WARN):")


def _strip_prefix(line: str) -> str:
    return _PREFIX_RE.sub("", line.rstrip("\r\n"), count=1)


def _num(text: str) -> float:
    return float(text)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return tuple(seen)


def _fail(tool: str, what: str, error_lines: Iterable[str], text: str) -> BenchmarkOutputError:
    quoted = list(_dedupe(error_lines))[:6]
    message = f"{tool}: {what}"
    if quoted:
        message += ": " + " | ".join(quoted)
    # The quoted lines say what went wrong; without any, the last lines show where it stopped.
    return BenchmarkOutputError(message, output=None if quoted else (_tail(text, 3) or None))


# --------------------------------------------------------------------------- benchmark_model

# Fatal markers: any of these means the numbers (if any) are not of the requested set-up.
_TFLITE_FATAL_RE = re.compile(
    r"benchmarking failed|failed to apply .*delegate|failed to prepare|failed to load model"
    r"|failed to (?:allocate|invoke|initialize|construct|create|mmap)|could not (?:open|load|read)"
    r"|model file .*(?:not found|doesn't exist)|segmentation fault|aborted",
    re.IGNORECASE,
)
# Non-fatal: the default (XNNPACK) delegate failing falls back to the CPU kernels.
_TFLITE_BENIGN_RE = re.compile(r"default TensorFlow Lite delegate|ignoring failed application", re.IGNORECASE)

_STATS_RE = re.compile(r"^count=(\d+)((?:\s+\w+=" + _NUM + r")*)\s*$")
_KV_RE = re.compile(r"(\w+)=(" + _NUM + r")")
_RUNNING_RE = re.compile(r"^Running benchmark for ")
_SUMMARY_RE = re.compile(r"^Inference timings in us:\s*(.*)$")
_OLD_SUMMARY_RE = re.compile(r"^Average inference timings in us:\s*(.*)$")
_SUMMARY_ITEM_RE = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*(" + _NUM + r")")
_INIT_SESSION_RE = re.compile(r"^Initialized session in (" + _NUM + r")\s*ms")
_PEAK_MEM_RE = re.compile(
    r"^(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\):\s*init=(" + _NUM
    + r")\s+overall=(" + _NUM + r")"
)
_PERIODIC_PEAK_RE = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUM + r")")
_LITERT_ITEM_RE = re.compile(
    r"^(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \(avg\)|Inference \(min\)"
    r"|Inference \(max\)|Inference \(std\)|Init footprint|Overall footprint|Peak memory usage)"
    r":\s*(" + _NUM + r")\s*(ms|MB)?(?:\s*\((\d+) runs\))?"
)
_NUM_THREADS_RE = re.compile(r"^(?:Num threads|#threads used for CPU inference):\s*\[(\d+)\]")
_TABLE_TITLE_RE = re.compile(r"^=+ (Run Order|Top by Computation Time|Summary by node type) =+$")
_APPLIED_RE = re.compile(r"^(?:Explicitly )?[Aa]pplied (\w+) delegate")
_REPLACING_RE = re.compile(r"Replacing (\d+) out of \d+ node\(s\) with delegate \((\w+)\) node")
_DELEGATE_TYPE_RE = re.compile(r"^\w*Delegate\w*$", re.IGNORECASE)

_DELEGATE_NAMES = (
    ("xnnpack", "XNNPACK"),
    ("gpu", "GPU"),
    ("nnapi", "NNAPI"),
    ("hexagon", "Hexagon"),
    ("coreml", "CoreML"),
    ("external", "external"),
)


def _delegate_name(raw: str) -> str:
    low = raw.lower()
    for needle, name in _DELEGATE_NAMES:
        if needle in low:
            return name
    return raw


def delegate_label(kernel: str) -> str:
    """The delegate a partition's node type belongs to: ``XNNPACK``, ``GPU``, ``NNAPI``, ... for the known
    ones, else the kernel name itself with a trailing ``Delegate`` and a leading ``TfLite`` dropped
    (``QnnDelegate`` -> ``Qnn``; a vendor's name stays recognisable, never ``CPU``)."""
    name = _delegate_name(kernel)
    if name != kernel:
        return name
    short = re.sub(r"(?i)^tflite|delegate\w*$", "", kernel).strip("_") or kernel
    return short


def _stats(rest: str, count: str) -> dict[str, float]:
    values = {key: _num(val) for key, val in _KV_RE.findall(rest)}
    values["count"] = float(count)
    return values


def _summary_items(rest: str) -> dict[str, float]:
    return {key.strip().lower(): _num(val) for key, val in _SUMMARY_ITEM_RE.findall(rest)}


def _header_key(cell: str) -> str:
    return cell.strip().strip("[]").lower().replace(" ", "")


def _split_row(line: str, width: int) -> list[str]:
    cells = line.rstrip("\r\n").split("\t")
    if len(cells) > width:  # a tab inside the last column (the node name)
        cells = cells[: width - 1] + ["\t".join(cells[width - 1 :])]
    return [cell.strip() for cell in cells]


def _opt_float(row: dict[str, str], key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        return float(value.rstrip("%"))
    except ValueError:
        return None


def _opt_int(row: dict[str, str], key: str) -> int | None:
    value = _opt_float(row, key)
    return None if value is None else int(value)


def _op_row(row: dict[str, str]) -> OpTiming | None:
    avg = _opt_float(row, "avgms")
    node_type = row.get("nodetype")
    if avg is None or not node_type:
        return None
    return OpTiming(
        name=row.get("name", ""),
        node_type=node_type,
        avg_ms=avg,
        pct=_opt_float(row, "%"),
        times_called=_opt_int(row, "timescalled"),
        first_ms=_opt_float(row, "first"),
        start_ms=_opt_float(row, "start"),
        cdf_pct=_opt_float(row, "cdf%"),
        mem_kb=_opt_float(row, "memkb"),
    )


def _summary_row(row: dict[str, str]) -> OpTypeSummary | None:
    avg = _opt_float(row, "avgms")
    node_type = row.get("nodetype")
    count = _opt_int(row, "count")
    if avg is None or not node_type or count is None:
        return None
    return OpTypeSummary(
        node_type=node_type,
        count=count,
        avg_ms=avg,
        pct=_opt_float(row, "avg%"),
        cdf_pct=_opt_float(row, "cdf%"),
        mem_kb=_opt_float(row, "memkb"),
        times_called=_opt_int(row, "timescalled"),
    )


@dataclass
class _Tables:
    """Op tables of one profiling section (initialisation or regular runs)."""

    run_order: list[OpTiming] = field(default_factory=list)
    top: list[OpTiming] = field(default_factory=list)
    summary: list[OpTypeSummary] = field(default_factory=list)


def _parse_tables(lines: list[str]) -> tuple[_Tables, _Tables]:
    """Read every op-profiling table; return (initialisation, regular runs).

    Tables follow a ``==== Title ====`` line; the next line holds the ``[column]`` headers
    (tab-separated, read by name, so a missing ``[start]`` column does not shift anything); rows
    follow until a blank line. Tables after "Profiling Info for Benchmark Initialization" belong
    to initialisation until "Operator-wise Profiling Info for Regular Benchmark Runs"; tables
    under no such heading (older tools, LiteRT) belong to the regular runs.
    """
    init, regular = _Tables(), _Tables()
    current = regular
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("Profiling Info for Benchmark Initialization"):
            current = init
        elif line.startswith("Operator-wise Profiling Info for Regular Benchmark Runs"):
            current = regular
        title = _TABLE_TITLE_RE.match(line)
        if not title or i + 1 >= len(lines) or "[" not in lines[i + 1]:
            i += 1
            continue
        header = [_header_key(cell) for cell in lines[i + 1].rstrip("\r\n").split("\t")]
        i += 2
        while i < len(lines) and lines[i].strip() and not _TABLE_TITLE_RE.match(lines[i].strip()):
            row = dict(zip(header, _split_row(lines[i], len(header)), strict=False))
            if title.group(1) == "Summary by node type":
                parsed_summary = _summary_row(row)
                if parsed_summary is not None:
                    current.summary.append(parsed_summary)
            else:
                parsed = _op_row(row)
                if parsed is not None:
                    (current.run_order if title.group(1) == "Run Order" else current.top).append(parsed)
            i += 1
    return init, regular


def parse_benchmark_model(text: str, *, need_timing: bool = True) -> BenchmarkResult:
    """Parse the console output of TFLite/LiteRT ``benchmark_model`` into milliseconds.

    With ``need_timing=False`` a log holding only the op-profiling tables (no ``count=`` line, no
    summary) gives its per-op rows with ``mean_ms`` None instead of an error.

    Raises:
        BenchmarkOutputError: the output reports a failure (``Benchmarking failed``, a delegate
            that failed to apply or prepare, a model that failed to load), or holds no timing of
            the regular runs (empty or truncated output; with ``need_timing``): the message says
            what is missing and what was found.
    """
    tool = "benchmark_model"
    raw_lines = text.splitlines()
    lines = [_strip_prefix(line) for line in raw_lines]

    errors: list[str] = []
    fatal: list[str] = []
    warnings: list[str] = []
    stats_blocks: list[dict[str, float]] = []  # top-level count= lines, in order
    summary: dict[str, float] = {}
    old_summary: dict[str, float] = {}
    litert: dict[str, tuple[float, int | None]] = {}
    delegates: list[str] = []
    init_session_ms: float | None = None
    memory: tuple[float, float] | None = None
    periodic_peak: float | None = None
    kernels: list[str] = []
    threads: int | None = None

    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        level = _LEVEL_RE.match(stripped)
        benign = bool(_TFLITE_BENIGN_RE.search(stripped))
        if _TFLITE_FATAL_RE.search(stripped) and not benign:
            fatal.append(stripped)
            errors.append(stripped)
        elif level and level.group(1) == "ERROR":
            (warnings if benign else errors).append(stripped)
        elif level or stripped.startswith("Duplicate flags") or stripped.startswith("Though "):
            warnings.append(stripped)

        if m := _STATS_RE.match(stripped):
            stats_blocks.append(_stats(m.group(2), m.group(1)))
        elif m := _SUMMARY_RE.match(stripped):
            summary = _summary_items(m.group(1))
        elif m := _OLD_SUMMARY_RE.match(stripped):
            old_summary = _summary_items(m.group(1))
        elif m := _LITERT_ITEM_RE.match(stripped):
            litert[m.group(1)] = (_num(m.group(2)), int(m.group(4)) if m.group(4) else None)
        elif m := _INIT_SESSION_RE.match(stripped):
            init_session_ms = _num(m.group(1))
        elif m := _PEAK_MEM_RE.match(stripped):
            memory = (_num(m.group(1)), _num(m.group(2)))
        elif m := _PERIODIC_PEAK_RE.match(stripped):
            periodic_peak = _num(m.group(1))
        elif m := _NUM_THREADS_RE.match(stripped):
            threads = threads if threads is not None else int(m.group(1))
        elif (m := _APPLIED_RE.match(stripped)) and not stripped.startswith("Though"):
            delegates.append(delegate_label(m.group(1)))
        if (m := _REPLACING_RE.search(stripped)) and int(m.group(1)) > 0:
            delegates.append(delegate_label(m.group(2)))
            kernels.append(m.group(2))

    if fatal:
        raise _fail(tool, "the benchmark failed", errors, text)

    warmup = stats_blocks[0] if len(stats_blocks) >= 2 else None
    regular = stats_blocks[1] if len(stats_blocks) >= 2 else None
    if len(stats_blocks) == 1 and (summary or old_summary or litert):
        regular = stats_blocks[0]  # a tool that printed no warm-up line

    # The mean of the regular runs: the count= line is the most precise (LiteRT rounds its
    # summary to 0.01 ms); then the summary lines of each generation of the tool.
    mean_us: float | None = None
    if regular is not None and "avg" in regular:
        mean_us = regular["avg"]
    elif "inference (avg)" in summary:
        mean_us = summary["inference (avg)"]
    elif "no stats" in old_summary:
        mean_us = old_summary["no stats"]
    elif "Inference (avg)" in litert:
        mean_us = litert["Inference (avg)"][0] * _US_PER_MS
    init_tables, regular_tables = _parse_tables(lines)
    ops = regular_tables.run_order or regular_tables.top
    if mean_us is None and (need_timing or not (ops or regular_tables.summary)):
        missing = ("no timing of the regular runs: no 'count=... avg=...' line of the regular runs and no "
                   "'Inference timings in us:' summary")
        if ops or regular_tables.summary:
            what = (f"{missing}; the output holds only the op-profiling tables ({len(ops)} op rows, "
                    f"{len(regular_tables.summary)} node types)")
        elif stats_blocks:
            what = f"{missing} (only the warm-up's count= line: the output stops before the regular runs)"
        else:
            what = f"{missing} in the output (empty, truncated, or not benchmark_model)"
        raise _fail(tool, what, errors, text)

    def ms(value: float | None) -> float | None:
        return None if value is None else value / _US_PER_MS

    def reg(key: str) -> float | None:
        return None if regular is None else regular.get(key)

    def litert_ms(key: str) -> float | None:
        return litert[key][0] if key in litert else None

    runs = int(regular["count"]) if regular is not None else None
    if runs is None and "Inference (avg)" in litert:
        runs = litert["Inference (avg)"][1]

    # First (cold) inference: the summary's "First inference", else the first warm-up run.
    first_us = summary.get("first inference")
    if first_us is None and warmup is not None:
        first_us = warmup.get("first", warmup.get("curr") if warmup["count"] == 1 else None)
    first_ms = ms(first_us) if first_us is not None else litert_ms("Warmup (first)")

    warmup_us: float | None = None
    if warmup is not None:
        warmup_us = warmup.get("avg", warmup.get("curr") if warmup["count"] == 1 else None)
    if warmup_us is None:
        warmup_us = summary.get("warmup (avg)", old_summary.get("warmup"))
    warmup_ms = ms(warmup_us) if warmup_us is not None else litert_ms("Warmup (avg)")
    warmup_runs = int(warmup["count"]) if warmup is not None else None
    if warmup_runs is None and "Warmup (avg)" in litert:
        warmup_runs = litert["Warmup (avg)"][1]

    init_us = summary.get("init", old_summary.get("init"))
    init_ms = ms(init_us) if init_us is not None else init_session_ms
    if init_ms is None:
        init_ms = litert_ms("Model initialization")

    std_us = reg("std")
    std_ms = ms(std_us) if std_us is not None else litert_ms("Inference (std)")
    min_us, max_us = reg("min"), reg("max")
    min_ms = ms(min_us) if min_us is not None else litert_ms("Inference (min)")
    max_ms = ms(max_us) if max_us is not None else litert_ms("Inference (max)")

    if memory is not None:
        init_memory_mb, memory_mb = memory
    else:
        init_memory_mb = litert_ms("Init footprint")
        memory_mb = litert_ms("Peak memory usage") or litert_ms("Overall footprint")

    for op in ops:
        if _DELEGATE_TYPE_RE.match(op.node_type) or op.node_type in kernels:
            delegates.append(delegate_label(op.node_type))
            kernels.append(op.node_type)

    return BenchmarkResult(
        tool=tool,
        mean_ms=None if mean_us is None else mean_us / _US_PER_MS,
        runs=runs,
        std_ms=std_ms,
        min_ms=min_ms,
        max_ms=max_ms,
        median_ms=ms(reg("median")),
        p5_ms=ms(reg("p5")),
        p95_ms=ms(reg("p95")),
        first_ms=first_ms,
        init_ms=init_ms,
        warmup_mean_ms=warmup_ms,
        warmup_runs=warmup_runs,
        memory_mb=memory_mb,
        init_memory_mb=init_memory_mb,
        peak_memory_mb=periodic_peak,
        threads=threads,
        ops=tuple(ops),
        op_summary=tuple(regular_tables.summary),
        init_ops=tuple(init_tables.run_order or init_tables.top),
        delegates=_dedupe(delegates),
        delegate_kernels=_dedupe(kernels),
        warnings=_dedupe(warnings + errors),
    )


# --------------------------------------------------------------------------- onnxruntime_perf_test

_ORT_FATAL_RE = re.compile(
    r"failed|exception|error|invalid argument|no such file|not found|could not|unable to",
    re.IGNORECASE,
)
_ORT_MEAN_RE = re.compile(r"^Average inference time cost(?: total)?:\s*(" + _NUM + r")\s*ms")
_ORT_LATENCY_RE = re.compile(r"^(Min|Max|P50|P90|P95|P99|P999) Latency:\s*(" + _NUM + r")\s*s\b")
_ORT_RUNS_RE = re.compile(r"^Runs:\s*(\d+)")
_ORT_REQUESTS_RE = re.compile(r"^Total inference requests:\s*(\d+)")
_ORT_THREADS_RE = re.compile(r"^Setting intra_op_num_threads to (\d+)")
_ORT_SESSION_RE = re.compile(r"^Session creation time cost:\s*(" + _NUM + r")\s*s\b")
_ORT_FIRST_RE = re.compile(r"^First inference time cost:\s*(" + _NUM + r")\s*ms")
_ORT_PEAK_RE = re.compile(r"^Peak working set size:\s*(\d+)")
_ORT_CPU_RE = re.compile(r"^Avg CPU usage:\s*(" + _NUM + r")")
_ORT_THROUGHPUT_RE = re.compile(r"^Number of inferences per second:\s*(" + _NUM + r")")
_ORT_EP_RE = re.compile(r"^using (\w+ExecutionProvider)\b")


def parse_ort_perf_test(text: str) -> BenchmarkResult:
    """Parse the console output of ``onnxruntime_perf_test`` (``-m times`` or ``-m duration``).

    Latencies printed in seconds (``Min Latency: 0.0197812 s``) become ms; ``median_ms`` is P50.

    Raises:
        BenchmarkOutputError: no ``Average inference time cost`` line (a failed or truncated run);
            the message quotes the lines that look like errors.
    """
    tool = "onnxruntime_perf_test"
    mean_ms: float | None = None
    latencies: dict[str, float] = {}
    runs: int | None = None
    requests: int | None = None
    threads: int | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    memory_mb: float | None = None
    cpu: float | None = None
    throughput: float | None = None
    providers: list[str] = []
    errors: list[str] = []
    warnings: list[str] = []

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _ORT_MEAN_RE.match(line):
            mean_ms = _num(m.group(1))
        elif m := _ORT_LATENCY_RE.match(line):
            latencies[m.group(1)] = _num(m.group(2)) * _US_PER_MS
        elif m := _ORT_RUNS_RE.match(line):
            runs = int(m.group(1))
        elif m := _ORT_REQUESTS_RE.match(line):
            requests = int(m.group(1))
        elif m := _ORT_THREADS_RE.match(line):
            threads = int(m.group(1))
        elif m := _ORT_SESSION_RE.match(line):
            init_ms = _num(m.group(1)) * _US_PER_MS
        elif m := _ORT_FIRST_RE.match(line):
            first_ms = _num(m.group(1))
        elif m := _ORT_PEAK_RE.match(line):
            memory_mb = int(m.group(1)) / _BYTES_PER_MB
        elif m := _ORT_CPU_RE.match(line):
            cpu = _num(m.group(1))
        elif m := _ORT_THROUGHPUT_RE.match(line):
            throughput = _num(m.group(1))
        elif m := _ORT_EP_RE.match(line):
            providers.append(m.group(1))
        elif _ORT_FATAL_RE.search(line):
            errors.append(line)
        elif line.lower().startswith(("warning", "[w:")):
            warnings.append(line)

    if mean_ms is None:
        raise _fail(tool, "no 'Average inference time cost' line in the output", errors, text)
    return BenchmarkResult(
        tool=tool,
        mean_ms=mean_ms,
        runs=runs if runs is not None else requests,
        min_ms=latencies.get("Min"),
        max_ms=latencies.get("Max"),
        median_ms=latencies.get("P50"),
        p90_ms=latencies.get("P90"),
        p95_ms=latencies.get("P95"),
        p99_ms=latencies.get("P99"),
        p999_ms=latencies.get("P999"),
        first_ms=first_ms,
        init_ms=init_ms,
        memory_mb=memory_mb,
        threads=threads,
        cpu_usage_pct=cpu,
        delegates=_dedupe(providers),
        warnings=_dedupe(warnings + errors),
        inferences_per_second=throughput,
    )
