"""The runtime registry: every runtime hwnas measures with, and what follows from its name.

One entry per runtime. Adding a runtime (say a vendor's own benchmark program) means one entry here plus,
for a benchmark program, its output parser (:mod:`.parsers`) and its argv (:mod:`.bench_binary`).

Each entry says:

- ``driver``: who runs a model on the device: ``python`` (``agents/runner.py`` with the device's own
  Python and runtime) or ``binary`` (the profile's benchmark program, one process per model);
- ``model_format``: the file a workload is exported to (``onnx`` or ``tflite``);
- ``modules``: the Python modules the runner imports for it, in order of preference (``python`` only);
- ``statistic``: the latency statistic measurements are compared by (LUT values, validations, diffs);
- ``stat_keys``: the statistics every result carries (the LUT's latency columns);
- ``samples``: whether results carry per-run samples (the Python runner does; benchmark programs print
  only summaries), which decides whether sampling can stop adaptively on the device;
- ``normalise``: whether values are normalised by the reference workload measured in the same batch
  (the machine's speed when that batch ran) before they go into a LUT or a validation;
- ``comparability``: the LUT metadata fields (dotted) whose values, besides :data:`COMPARABILITY_FIELDS`'
  common ones, say what this runtime measured (execution provider, delegate).

Why the statistics: per-run samples of a model on a busy machine are a fast mode plus a long right tail
(interference only ever adds time). Their 10th percentile is the Python runtimes' statistic: quiet, no
other statistic made a more faithful LUT by more than one repeat's spread, and on a busy machine its
confidence interval is the narrowest for the same runs, so adaptive sampling converges (BENCHMARKS.md,
"Measurement: statistic and adaptive sampling"). Benchmark programs print no per-run samples and not every variant prints a median,
but every one prints the mean, the standard deviation, the minimum and the maximum: they are measured by
their mean.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Statistics the Python runner reports for every result (see ``runner.summarize``).
PYTHON_STAT_KEYS = ("median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "min_ms", "tmean_ms")
#: Statistics every benchmark program prints.
BINARY_STAT_KEYS = ("mean_ms", "std_ms", "min_ms", "max_ms")
#: onnxruntime_perf_test prints no standard deviation (its mean, min, max and percentiles only).
ORT_PERF_STAT_KEYS = ("mean_ms", "min_ms", "max_ms")


@dataclass(frozen=True)
class Runtime:
    """One runtime's registry entry (see the module docstring for each field)."""

    name: str
    driver: str
    model_format: str
    statistic: str
    stat_keys: tuple[str, ...]
    samples: bool
    modules: tuple[str, ...] = ()
    comparability: tuple[str, ...] = ()
    normalise: bool = True

    @property
    def python(self) -> bool:
        return self.driver == "python"


REGISTRY: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(
            name="onnxruntime", driver="python", model_format="onnx", statistic="p10_ms",
            stat_keys=PYTHON_STAT_KEYS, samples=True, modules=("onnxruntime",),
            comparability=("runtime.providers",),
        ),
        Runtime(
            name="litert", driver="python", model_format="tflite", statistic="p10_ms",
            stat_keys=PYTHON_STAT_KEYS, samples=True, modules=("ai_edge_litert", "tflite_runtime"),
            comparability=("runtime.delegate",),
        ),
        Runtime(
            name="tflite-benchmark", driver="binary", model_format="tflite", statistic="mean_ms",
            stat_keys=BINARY_STAT_KEYS, samples=False, comparability=("runtime.delegate",),
        ),
        Runtime(
            name="onnxruntime-perf-test", driver="binary", model_format="onnx", statistic="mean_ms",
            stat_keys=ORT_PERF_STAT_KEYS, samples=False, comparability=("runtime.providers",),
        ),
    )
}

#: Every runtime name, in the registry's order.
NAMES: tuple[str, ...] = tuple(REGISTRY)
#: Runtimes driven by the Python runner / by a benchmark program on the device.
PYTHON_RUNTIMES: tuple[str, ...] = tuple(n for n, r in REGISTRY.items() if r.driver == "python")
BINARY_RUNTIMES: tuple[str, ...] = tuple(n for n, r in REGISTRY.items() if r.driver == "binary")

#: LUT metadata fields (dotted paths) that must agree for two tables to hold comparable numbers: the one
#: list that both ``--resume`` (appending to a file) and ``lut diff`` (comparing two files) check.
COMPARABILITY_FIELDS: tuple[str, ...] = (
    "space",
    "statistic",
    "runtime.name",
    "runtime.version",
    *dict.fromkeys(f for r in REGISTRY.values() for f in r.comparability),
    "exporter.name",
    "exporter.version",
    "exporter.opset",
    "dtype",
    "batch",
    "threads",
    "cores",
    "device.model",
    "device.soc",
)


def get_runtime(name: str) -> Runtime:
    """The registry entry of ``name``; KeyError naming the known runtimes otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown runtime {name!r}; expected one of {', '.join(NAMES)}") from None


__all__ = [
    "BINARY_RUNTIMES",
    "COMPARABILITY_FIELDS",
    "NAMES",
    "PYTHON_RUNTIMES",
    "REGISTRY",
    "Runtime",
    "get_runtime",
]
