"""Export a standalone subnet to ONNX or TFLite and check the file against PyTorch.

- ``onnx``: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``, opset 17, constant folding so BN
  folds into the convs), batch 1, input ``input`` (N, 3, r, r) and output ``logits``; checked with ONNX
  Runtime on random inputs. ``int8``: ONNX Runtime's static quantisation (QDQ, int8 weights per channel and
  int8 activations calibrated on real images).
- ``tflite``: litert-torch (``litert_torch.convert(module, (example,))``, no TensorFlow) with channel-last
  (NHWC) image input, as on a phone and as ``profiler/`` exports its LUT entries; checked with
  ``ai_edge_litert``'s interpreter. ``int8``: full-integer post-training quantisation with
  ``ai_edge_quantizer``'s ``static_wi8_ai8`` recipe (weights int8 per channel, activations int8 from
  min/max over the calibration images, int8 input and output).

``max_abs_diff`` is the largest absolute difference of the logits over the check inputs (by default random
normal inputs; ``hwnas export`` passes random images of the data's kind -- random pixels at the data's
stored size, resized and normalised like it -- and real images), one at a
time at batch 1. For int8 files it measures quantisation error, not a bug.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import SupernetError
from .files import atomic_write
from .spaces import Arch, SearchSpace

__all__ = ["DTYPES", "FORMATS", "ExportError", "check_onnx", "check_tflite", "export_subnet"]

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
DTYPES = ("float32", "int8")
ONNX_OPSET = 17
TFLITE_INT8_RECIPE = "static_wi8_ai8"
N_CHECK_INPUTS = 4


class ExportError(SupernetError, RuntimeError):
    """The conversion or its runtime check failed, or the converter is missing (exit code 1)."""

    exit_code = 1


class ExportUsageError(SupernetError, ValueError):
    """An unknown format or dtype (exit code 2)."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep converters' prints off stdout (``--json`` prints one object there)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    text = buf.getvalue().strip()
    if text:
        log.debug("converter output: %s", text[-2000:])


def _check_inputs(resolution: int, given: Sequence[torch.Tensor] | None, seed: int) -> list[torch.Tensor]:
    if given:
        return [x[i : i + 1] for x in given for i in range(x.shape[0])]
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, resolution, resolution, generator=gen) for _ in range(N_CHECK_INPUTS)]


# --------------------------------------------------------------------------------------------------------
# ONNX


def _onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            model, (example,), buf, input_names=["input"], output_names=["logits"], opset_version=ONNX_OPSET,
            do_constant_folding=True, dynamo=False,
        )
    return buf.getvalue()


def _onnx_int8(float_model: bytes, calibration: Sequence[torch.Tensor]) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": x[:1].numpy().astype(np.float32)} for x in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_model)
        with _quiet():
            quantize_static(
                str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            )
        return dst.read_bytes()


def check_onnx(path: Path, model: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[float, float]:
    """``(max abs difference, max abs PyTorch output)`` of ONNX Runtime (CPU) running ``path`` vs ``model``
    on ``inputs``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"{path}: does not load in ONNX Runtime: {exc}") from None
    name = sess.get_inputs()[0].name
    diff = scale = 0.0
    model = model.eval()
    for x in inputs:
        with torch.no_grad():
            ref = model(x).numpy()
        y = sess.run(None, {name: x.numpy().astype(np.float32)})[0]
        if y.shape != ref.shape:
            raise ExportError(f"{path}: output shape {y.shape} differs from PyTorch's {ref.shape}")
        diff = max(diff, float(np.max(np.abs(y.astype(np.float64) - ref.astype(np.float64)))))
        scale = max(scale, float(np.max(np.abs(ref))))
    return diff, scale


# --------------------------------------------------------------------------------------------------------
# TFLite


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def _tflite_bytes(model: nn.Module, example: torch.Tensor, dtype: str, calibration: Sequence[torch.Tensor]) -> bytes:
    try:
        import litert_torch
    except ImportError as exc:
        raise ExportError(f"TFLite export needs litert-torch ({exc}); run `make .venv` or pip install litert-torch") from None
    wrapped = litert_torch.to_channel_last_io(model, args=[0]).eval()
    with _quiet():
        edge = litert_torch.convert(wrapped, (_nhwc(example),))
        data = bytes(edge.model_content())
    if dtype == "int8":
        data = _tflite_int8(data, [_nhwc(x[:1]) for x in calibration])
    return data


def _tflite_int8(float_model: bytes, samples: Sequence[torch.Tensor]) -> bytes:
    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise ExportError(f"int8 TFLite export needs ai-edge-quantizer and ai-edge-litert ({exc})") from None
    sig = Interpreter(model_content=float_model).get_signature_list()
    key = next(iter(sig))
    name = sig[key]["inputs"][0]
    data = [{name: x.numpy().astype(np.float32)} for x in samples]
    qt = quantizer.Quantizer(bytearray(float_model))
    qt.load_quantization_recipe(getattr(recipe, TFLITE_INT8_RECIPE)())
    with _quiet():
        calib = qt.calibrate({key: data}, num_threads=1)
        result = qt.quantize(calib, enable_progress_bar=False, enable_progress_report=False)
    if result.quantized_model is None:
        raise ExportError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)


def check_tflite(path: Path, model: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[float, float]:
    """``(max abs difference, max abs PyTorch output)`` of ``ai_edge_litert`` running ``path`` (NHWC input;
    int8 input/output (de)quantised with the file's scales) vs ``model`` on ``inputs`` (NCHW)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ExportError(f"checking a .tflite needs ai-edge-litert ({exc})") from None
    try:
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: does not load in ai_edge_litert: {exc}") from None
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    diff = scale = 0.0
    model = model.eval()
    for x in inputs:
        with torch.no_grad():
            ref = model(x).numpy().astype(np.float64)
        a = _nhwc(x).numpy().astype(np.float32)
        if tuple(inp["shape"]) != a.shape:
            raise ExportError(f"{path}: input shape {tuple(inp['shape'])} is not {a.shape}")
        if np.issubdtype(inp["dtype"], np.integer):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / scale) + zero, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], a)
        it.invoke()
        y = it.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        if y.shape != ref.shape:
            raise ExportError(f"{path}: output shape {y.shape} differs from PyTorch's {ref.shape}")
        diff = max(diff, float(np.max(np.abs(y.astype(np.float64) - ref))))
        scale = max(scale, float(np.max(np.abs(ref))))
    return diff, scale


# --------------------------------------------------------------------------------------------------------


def export_subnet(
    model: nn.Module,
    arch: Arch,
    fmt: str,
    out: str | Path,
    dtype: str = "float32",
    *,
    space: SearchSpace,
    calibration: Sequence[torch.Tensor] | None = None,
    check_inputs: Sequence[torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``model`` (the standalone subnet of ``arch``, BN already recalibrated) to ``out`` as ``fmt``
    (``onnx`` or ``tflite``) in ``dtype`` (``float32`` or ``int8``) at batch 1 and resolution ``arch.r``,
    then run the file on random inputs (and the first calibration images) and compare with PyTorch.

    ``calibration``: NCHW image batches for int8 activation ranges (required for int8). ``check_inputs``:
    NCHW batches the file and PyTorch are compared on (default: 4 standard-normal inputs; pass inputs in the
    data's range -- ``ImageDataset.random_images``, real images -- since pure noise drives an
    image classifier to logits in the hundreds, where float32 rounding alone exceeds 1e-4). Returns ``{file,
    format, dtype, resolution, macs, params, max_abs_diff, max_rel_diff, check_inputs}`` (``max_rel_diff``:
    ``max_abs_diff`` over the largest absolute PyTorch logit). Raises ExportUsageError (exit 2) for an
    unknown format/dtype or int8 without calibration data, ExportError (exit 1) when conversion or the
    check fails."""
    if fmt not in FORMATS:
        raise ExportUsageError(f"unknown export format {fmt!r}; expected one of {list(FORMATS)}")
    if dtype not in DTYPES:
        raise ExportUsageError(f"unknown dtype {dtype!r}; expected one of {list(DTYPES)}")
    calib = [c if c.ndim == 4 else c[None] for c in (calibration or [])]
    if dtype == "int8" and not calib:
        raise ExportUsageError("int8 export needs calibration images")
    out = Path(out)
    model = model.eval().cpu()
    example = torch.zeros(1, 3, arch.r, arch.r)
    try:
        if fmt == "onnx":
            data = _onnx_bytes(model, example)
            if dtype == "int8":
                data = _onnx_int8(data, [x[i : i + 1] for x in calib for i in range(x.shape[0])])
        else:
            data = _tflite_bytes(model, example, dtype, [x[i : i + 1] for x in calib for i in range(x.shape[0])])
    except ExportError:
        raise
    except Exception as exc:  # the exporters and quantisers raise many kinds of errors
        raise ExportError(f"{out.name}: {fmt} export ({dtype}) failed: {type(exc).__name__}: {exc}") from exc
    try:
        atomic_write(out, data, make_parents=True)
    except OSError as exc:
        raise ExportUsageError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    inputs = _check_inputs(arch.r, check_inputs, seed)
    diff, scale = check_onnx(out, model, inputs) if fmt == "onnx" else check_tflite(out, model, inputs)
    return {
        "file": str(out),
        "format": fmt,
        "dtype": dtype,
        "resolution": arch.r,
        "macs": space.macs(arch),
        "params": space.params(arch),
        "max_abs_diff": diff,
        "max_rel_diff": diff / scale if scale > 0 else diff,
        "check_inputs": len(inputs),
    }
