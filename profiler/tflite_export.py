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
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ProfilerError

log = logging.getLogger(__name__)

DTYPES = ("float32", "int8")
INT8_RECIPE = "static_wi8_ai8"
EXPORT_VERSION = 1  # bump when the export recipe changes (invalidates cached files)
MIN_PARALLEL_JOBS = 4  # fewer conversions run in this process: starting a worker costs a few seconds


class ExportError(ProfilerError, RuntimeError):
    """A module could not be converted to ``.tflite`` (the converter failed or is missing)."""

    exit_code = 1


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


@contextlib.contextmanager
def _quiet() -> Any:
    """Keep the converters' progress output off stdout (``--json`` prints one object there)."""
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converters' deprecation chatter
        yield buf
    text = buf.getvalue().strip()
    if text:
        log.debug("converter output: %s", text[-2000:])


def _channel_last(t: Any) -> Any:
    return t.permute(0, *range(2, t.ndim), 1).contiguous()


def _wrap(module: Any, example: Any) -> tuple[Any, Any, bool, bool]:
    """The module with NHWC input/output where they are images, its NHWC example, and which were wrapped."""
    import litert_torch
    import torch

    with torch.no_grad():
        out = module(example)
    in_cl = example.ndim >= 3
    out_cl = isinstance(out, torch.Tensor) and out.ndim >= 3
    if not in_cl and not out_cl:
        return module, example, False, False
    wrapped = litert_torch.to_channel_last_io(module, args=[0] if in_cl else [], outputs=[0] if out_cl else []).eval()
    return wrapped, _channel_last(example) if in_cl else example, in_cl, out_cl


def _float_bytes(module: Any, example: Any) -> bytes:
    import litert_torch

    edge = litert_torch.convert(module, (example,))
    return bytes(edge.model_content())


def _quantize_int8(float_model: bytes, samples: Sequence[Any]) -> bytes:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    sig = Interpreter(model_content=float_model).get_signature_list()
    if len(sig) != 1:
        raise ExportError(f"expected one signature in the float model, got {sorted(sig)}")
    key = next(iter(sig))
    names = sig[key]["inputs"]
    if len(names) != 1:
        raise ExportError(f"expected one model input, got {names}")
    data = [{names[0]: np.asarray(x.detach().numpy(), dtype=np.float32)} for x in samples]
    qt = quantizer.Quantizer(bytearray(float_model))
    qt.load_quantization_recipe(getattr(recipe, INT8_RECIPE)())
    calib = qt.calibrate({key: data}, num_threads=1)
    result = qt.quantize(calib, enable_progress_bar=False, enable_progress_report=False)
    if result.quantized_model is None:
        raise ExportError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)




def export_tflite(
    module: Any, example: Any, path: Path, dtype: str = "float32", *, calibration: Sequence[Any] | None = None
) -> Path:
    """Convert an eval-mode torch ``module`` (input ``example``, NCHW) to ``path`` (written atomically).

    Image inputs/outputs (rank >= 3) become NHWC in the file. ``int8`` calibrates on ``calibration``
    (NCHW inputs like ``example``; default: the example alone). Raises ProfilerError for an unknown
    dtype, ExportError when the conversion or the quantisation fails.
    """
    _check_dtype(dtype)
    path = Path(path)
    try:
        with _quiet():
            module = module.eval()
            wrapped, ex, in_cl, _ = _wrap(module, example)
            data = _float_bytes(wrapped, ex)
            if dtype == "int8":
                samples = [example] if calibration is None else list(calibration)
                data = _quantize_int8(data, [_channel_last(x) if in_cl else x for x in samples])
    except ImportError as exc:
        raise ExportError(f"{path.name}: cannot convert to .tflite: {exc} (run `make .venv`)") from exc
    except ExportError as exc:
        raise ExportError(f"{path.name}: conversion to .tflite ({dtype}) failed: {exc}") from exc
    except Exception as exc:  # the converters raise many kinds; report them as one
        raise ExportError(f"{path.name}: conversion to .tflite ({dtype}) failed: {type(exc).__name__}: {exc}") from exc
    from ..supernet.files import atomic_write

    atomic_write(path, data, make_parents=True)
    return path


def check_tflite(path: Path, module: Any, example: Any) -> float:
    """Max abs difference between the ``.tflite`` at ``path`` and ``module`` on ``example`` (NCHW).

    Runs the file with ``ai_edge_litert`` (XNNPACK, one thread); int8 inputs are quantised and int8
    outputs dequantised with the file's own scales; rank >= 3 tensors are NHWC in the file (as
    :func:`export_tflite` writes them) and are permuted from/to the module's NCHW.
    Raises ExportError when the file does not load or its shapes do not match the module's.
    """
    import numpy as np
    import torch
    from ai_edge_litert.interpreter import Interpreter

    with torch.no_grad():
        ref = module.eval()(example).detach().numpy()
    try:
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: does not load in ai_edge_litert: {exc}") from exc
    inp = it.get_input_details()[0]
    x = example.detach().numpy().astype(np.float32)
    if x.ndim >= 3:  # images are NHWC in the file (see export_tflite)
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    if tuple(inp["shape"]) != x.shape:
        raise ExportError(f"{path}: input shape {tuple(inp['shape'])} does not match the module's {example.shape}")
    if np.issubdtype(inp["dtype"], np.integer):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    it.invoke()
    out = it.get_output_details()[0]
    y = it.get_tensor(out["index"])
    if np.issubdtype(out["dtype"], np.integer):
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    if y.ndim >= 3:
        y = np.moveaxis(y, -1, 1)
    if y.shape != ref.shape:
        raise ExportError(f"{path}: output shape {y.shape} does not match the module's {ref.shape}")
    return float(np.max(np.abs(y.astype(np.float64) - ref.astype(np.float64))))


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
