"""Export torch modules to ``.tflite`` with litert-torch (no TensorFlow), float32 or int8.

``float32``: ``litert_torch.convert(module, (example,))``. The model's image input and output are
channel-last (NHWC), as on a phone: the module is wrapped with ``litert_torch.to_channel_last_io``, so
the converter's layout pass leaves no ``TRANSPOSE`` at the boundaries of an entry (a LUT entry must
cost what the same operators cost inside a network, which holds no such transposes).

``int8``: full-integer post-training quantisation, weights *and* activations, of that float model with
``ai_edge_quantizer`` (the quantiser litert-torch brings) and its recipe ``static_wi8_ai8``: weights
int8 symmetric per channel, activations int8 from min/max calibration, int8 model input and output.
Calibration data: by default the workload's own example input (a latency workload needs valid
ranges, not accuracy; ai-edge-quantizer folds further samples in with a moving average of factor 0.95,
so random extra samples would narrow the ranges below what the example needs and clip it); pass
``calibration=`` real inputs for a model meant to be accurate (``hwnas export --dtype int8``).
Chosen over litert-torch's PT2E ``PT2EQuantizer``: that quantiser annotates only
conv/linear/add/pooling, so an MobileNetV3 block keeps float ``HARD_SWISH``/``MUL``/``ADD`` islands
between ``DEQUANTIZE``/``QUANTIZE`` pairs -- not the model a phone runs -- while ``static_wi8_ai8``
leaves every operator integer (and costs ~0.1 s on top of the float conversion instead of a second
export). The price is a larger output error (see :func:`check_tflite`): the numbers are for latency,
not for accuracy.

:func:`convert_many` converts several workloads in parallel worker processes (conversion is
single-threaded and takes seconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..supernet.errors import ExportError
from ..supernet.formats import DTYPES
from ..supernet.formats import TFLITE_INT8_RECIPE as INT8_RECIPE
from .errors import ProfilerError

log = logging.getLogger(__name__)

EXPORT_VERSION = 2  # 2: batch norms folded before conversion (same operators). Bump when the export recipe changes (invalidates cached files)
MIN_PARALLEL_JOBS = 4  # fewer conversions run in this process: starting a worker costs a few seconds


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ProfilerError(f"dtype {dtype!r} is not supported for .tflite workloads; expected one of {list(DTYPES)}")


def exporter_info(dtype: str = "float32") -> dict[str, Any]:
    """Name, version and settings of the ``.tflite`` exporter (recorded in LUTs and in cache keys).

    Reads package versions only (no heavy import). Raises ProfilerError (exit 2) for an unknown dtype,
    ExportError (exit 1) when litert-torch is not installed.
    """
    _check_dtype(dtype)
    version = _version("litert-torch")
    if version is None:
        raise ExportError("litert-torch is not installed: .tflite workloads need it (run `make .venv`)")
    info: dict[str, Any] = {
        "name": "litert-torch",
        "version": version,
        "io_layout": "NHWC",
        "export_version": EXPORT_VERSION,
        "quantization": None,
    }
    if dtype == "int8":
        info["quantization"] = {
            "method": "post-training static, full integer (weights and activations int8, int8 input/output)",
            "tool": "ai-edge-quantizer",
            "version": _version("ai-edge-quantizer"),
            "recipe": INT8_RECIPE,
            "calibration": {"data": "the workload's example input", "ranges": "min/max (moving average 0.95)"},
        }
    return info


# --------------------------------------------------------------------------- conversion


def export_tflite(
    module: Any, example: Any, path: Path, dtype: str = "float32", *, calibration: Sequence[Any] | None = None
) -> Path:
    """Convert an eval-mode torch ``module`` (input ``example``, NCHW) to ``path`` (written atomically) with
    the one exporter (:func:`hwnas.supernet.export.export_tflite`).

    Image inputs/outputs (rank >= 3) become NHWC in the file. ``int8`` calibrates on ``calibration``
    (NCHW inputs like ``example``; default: the example alone). Raises ProfilerError for an unknown
    dtype, ExportError when the conversion or the quantisation fails.
    """
    _check_dtype(dtype)
    from ..supernet import export

    return export.export_tflite(module, example, path, dtype, calibration=calibration)


def check_tflite(path: Path, module: Any, example: Any) -> float:
    """Max abs difference between the ``.tflite`` at ``path`` and ``module`` on ``example`` (NCHW)
    (:func:`hwnas.supernet.export.check_tflite`: ``ai_edge_litert``, one thread, int8 (de)quantised with
    the file's scales). Raises ExportError when the file does not load or its shapes do not match."""
    from ..supernet import export

    return export.check_tflite(path, module, [example])[0]


# --------------------------------------------------------------------------- parallel conversion


@dataclass(frozen=True)
class ConvertJob:
    """One file to make: ``build(*args)`` returns ``(module, example)`` in the worker process.

    ``build`` must be a module-level function and ``args`` picklable (the job crosses processes).
    ``what`` names the job in progress reports and errors.
    """

    path: Path
    dtype: str
    build: Callable[..., tuple[Any, Any]]
    args: tuple[Any, ...] = ()
    what: str = ""


def _run_job(job: ConvertJob) -> str:
    if job.path.exists():
        return str(job.path)
    import torch

    torch.manual_seed(0)
    module, example = job.build(*job.args)
    export_tflite(module, example, job.path, dtype=job.dtype)
    return str(job.path)


def _worker_init() -> None:
    # One thread per worker (the workers are the parallelism). The converters' native logs (oneDNN,
    # absl) would land on the parent's stdout/stderr, through its progress bar and `--json` output:
    # a worker's own output goes nowhere; its errors come back to the parent as exceptions.
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
    import torch

    torch.set_num_threads(1)


def default_workers(n_jobs: int) -> int:
    """``HWNAS_CONVERT_WORKERS`` if set, else one per CPU core (at most 8), never more than the jobs."""
    env = os.environ.get("HWNAS_CONVERT_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return min(int(env), max(1, n_jobs))
    return max(1, min(n_jobs, os.cpu_count() or 1, 8))


def convert_many(
    jobs: Sequence[ConvertJob],
    workers: int | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Make every job's file, ``workers`` conversions at a time in spawned processes.

    Files that exist are skipped (the cache). With one worker, or fewer than ``MIN_PARALLEL_JOBS``
    files to make, the work runs in this process. Returns the paths in job order. Raises ExportError naming the first job that failed
    (the others still finish, so their files are cached).
    """
    todo = [j for j in jobs if not j.path.exists()]
    total = len(todo)
    n = default_workers(total) if workers is None else max(1, min(int(workers), max(1, total)))
    done = 0
    if total and (n == 1 or total < MIN_PARALLEL_JOBS):
        for job in todo:
            _run_job(job)
            done += 1
            if on_progress is not None:
                on_progress(done, total, job.what)
    elif total:
        import multiprocessing

        first_error: BaseException | None = None
        failed_what = ""
        ctx = multiprocessing.get_context("spawn")  # fork after torch started its threads can hang
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(_run_job, job): job for job in todo}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    fut.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below with the job named
                    if first_error is None:
                        first_error, failed_what = exc, job.what or job.path.name
                done += 1
                if on_progress is not None:
                    on_progress(done, total, job.what)
        if first_error is not None:
            if isinstance(first_error, ExportError):
                raise ExportError(f"{failed_what}: {first_error}") from first_error
            raise ExportError(f"{failed_what}: conversion failed: {type(first_error).__name__}: {first_error}") from first_error
    return [j.path for j in jobs]


__all__ = [
    "ConvertJob",
    "DTYPES",
    "ExportError",
    "INT8_RECIPE",
    "check_tflite",
    "convert_many",
    "default_workers",
    "export_tflite",
    "exporter_info",
]
