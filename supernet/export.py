"""The one exporter: every model file hwnas writes -- a LUT entry or subnet workload (``profiler``), a
standalone subnet (``hwnas export``), a PaS network (``search.pas``) -- goes through this module, with the
same tensor names (input ``input``, output ``output``) and the same checks against PyTorch.

- ONNX: :func:`onnx_bytes` is the one ``torch.onnx.export`` call (TorchScript exporter, ``dynamo=False``,
  opset 17, constant folding so BN folds into the convs; batch 1, or a dynamic batch axis). ``int8``: ONNX
  Runtime's static quantisation (QDQ, int8 weights per channel and int8 activations calibrated on real
  images). :func:`check_onnx` compares the file (ONNX Runtime, CPU) with the module.
- TFLite: :func:`tflite_bytes` is the one litert-torch conversion (``litert_torch.convert``, no TensorFlow)
  with channel-last (NHWC) image inputs and outputs, as on a phone (``to_channel_last_io``, so an entry
  holds no boundary ``TRANSPOSE``). ``int8``: full-integer post-training quantisation with
  ``ai_edge_quantizer``'s ``static_wi8_ai8`` recipe (weights int8 per channel, activations int8 from
  min/max over the calibration inputs, int8 input and output). :func:`check_tflite` compares the file
  (``ai_edge_litert``) with the module.
- :func:`export_onnx` / :func:`export_tflite` write a module's file atomically; :func:`export_subnet` writes
  and checks a standalone subnet (``hwnas export``).

One error type, :class:`ExportError` (exit code 1): a conversion or its check failed, or a converter is
missing. ``max_abs_diff`` is the largest absolute difference over the check inputs, one at a time at batch
1 (by default random normal inputs; ``hwnas export`` passes random and real images of the data's kind).
For int8 files it measures quantisation error, not a bug.
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

from .errors import ExportError, ExportUsageError
from .files import atomic_write
from .formats import DTYPES, FORMATS, ONNX_OPSET, TFLITE_INT8_RECIPE
from .spaces import Arch, SearchSpace

__all__ = [
    "DTYPES",
    "FORMATS",
    "INPUT_NAME",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "TFLITE_INT8_RECIPE",
    "ExportError",
    "ExportUsageError",
    "channel_last",
    "check_onnx",
    "check_tflite",
    "export_onnx",
    "export_subnet",
    "export_tflite",
    "fold_batch_norms",
    "onnx_bytes",
    "quiet",
    "tflite_bytes",
]

log = logging.getLogger(__name__)

#: The tensor names of every exported model.
INPUT_NAME = "input"
OUTPUT_NAME = "output"
N_CHECK_INPUTS = 4


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep converters' prints and warnings off stdout/stderr (``--json`` prints one object there)."""
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
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


def onnx_bytes(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = False) -> bytes:
    """The ONNX file of eval-mode ``model`` traced on ``example`` (input ``input``, output ``output``; with
    ``dynamic_batch`` the first axis of both is ``batch``). The one ``torch.onnx.export`` call."""
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    with quiet(), torch.no_grad():
        torch.onnx.export(
            model.eval(), (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False, dynamic_axes=axes,
        )
    return buf.getvalue()


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *, dynamic_batch: bool = False) -> Path:
    """Write :func:`onnx_bytes` to ``path`` atomically (folders created); returns the path."""
    return atomic_write(Path(path), onnx_bytes(model, example, dynamic_batch=dynamic_batch), make_parents=True)


def _onnx_int8(float_model: bytes, calibration: Sequence[torch.Tensor]) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{INPUT_NAME: x[:1].numpy().astype(np.float32)} for x in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_model)
        with quiet():
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


def channel_last(x: torch.Tensor) -> torch.Tensor:
    """NCHW (or NC...) to channel-last, as image tensors are in a ``.tflite``."""
    return x.permute(0, *range(2, x.ndim), 1).contiguous()


def _channel_last_io(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor, bool]:
    """``model`` with NHWC input/output where they are images (rank >= 3), its example, and whether the
    input was made channel-last."""
    import litert_torch

    with torch.no_grad():
        out = model(example)
    in_cl = example.ndim >= 3
    out_cl = isinstance(out, torch.Tensor) and out.ndim >= 3
    if not in_cl and not out_cl:
        return model, example, False
    wrapped = litert_torch.to_channel_last_io(model, args=[0] if in_cl else [], outputs=[0] if out_cl else [])
    return wrapped.eval(), channel_last(example) if in_cl else example, in_cl


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of eval-mode ``model`` in which every ``bn`` (BatchNorm2d) that follows its sibling ``conv``
    (Conv2d) -- the layout of every conv in :mod:`hwnas.supernet.blocks` -- is folded into the conv's weight
    and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by an identity.

    The converter folds them too, so the ``.tflite`` holds the same operators; folding first only spares
    it the graph work: a compact subnet converts in 5.8 s instead of 9.3 s (BENCHMARKS.md)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
            names = list(module._modules)
            if names.index("bn") == names.index("conv") + 1:  # conv feeds bn directly
                module.conv = fuse_conv_bn_eval(conv, bn)
                module.bn = nn.Identity()
    return folded


def tflite_bytes(
    model: nn.Module, example: torch.Tensor, dtype: str = "float32", calibration: Sequence[torch.Tensor] | None = None
) -> bytes:
    """The ``.tflite`` file of eval-mode ``model`` (input ``example``, NCHW): the one litert-torch conversion.
    Image inputs/outputs become NHWC; batch norms are folded into their convs first (:func:`fold_batch_norms`).
    ``int8`` calibrates on ``calibration`` (NCHW inputs like ``example``; default: the example alone).
    Raises ImportError when a converter is missing; the converters' own errors propagate."""
    import litert_torch

    with quiet():
        wrapped, ex, in_cl = _channel_last_io(fold_batch_norms(model.eval()), example)
        data = bytes(litert_torch.convert(wrapped, (ex,)).model_content())
        if dtype == "int8":
            samples = [example] if calibration is None else list(calibration)
            data = _tflite_int8(data, [channel_last(x) if in_cl else x for x in samples])
    return data


def _tflite_int8(float_model: bytes, samples: Sequence[torch.Tensor]) -> bytes:
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
    qt.load_quantization_recipe(getattr(recipe, TFLITE_INT8_RECIPE)())
    calib = qt.calibrate({key: data}, num_threads=1)
    result = qt.quantize(calib, enable_progress_bar=False, enable_progress_report=False)
    if result.quantized_model is None:
        raise ExportError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)


def export_tflite(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    dtype: str = "float32",
    *,
    calibration: Sequence[torch.Tensor] | None = None,
) -> Path:
    """Write :func:`tflite_bytes` to ``path`` atomically (folders created); returns the path. Raises
    ExportError naming the file when the conversion or the quantisation fails or a converter is missing."""
    path = Path(path)
    try:
        data = tflite_bytes(model, example, dtype, calibration)
    except ImportError as exc:
        raise ExportError(f"{path.name}: cannot convert to .tflite: {exc} (run `make .venv`)") from exc
    except ExportError as exc:
        raise ExportError(f"{path.name}: conversion to .tflite ({dtype}) failed: {exc}") from exc
    except Exception as exc:  # the converters raise many kinds; report them as one
        raise ExportError(f"{path.name}: conversion to .tflite ({dtype}) failed: {type(exc).__name__}: {exc}") from exc
    return atomic_write(path, data, make_parents=True)


def check_tflite(path: Path, model: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[float, float]:
    """``(max abs difference, max abs PyTorch output)`` of ``ai_edge_litert`` (one thread) running ``path``
    vs ``model`` on ``inputs`` (NCHW, batch 1 each). Rank >= 3 tensors are NHWC in the file (as
    :func:`tflite_bytes` writes them); int8 inputs/outputs are (de)quantised with the file's own scales.
    Raises ExportError when the file does not load or its shapes do not match the module's."""
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
            ref = model(x).detach().numpy().astype(np.float64)
        a = x.detach().numpy().astype(np.float32)
        if a.ndim >= 3:
            a = np.ascontiguousarray(np.moveaxis(a, 1, -1))
        if tuple(inp["shape"]) != a.shape:
            raise ExportError(f"{path}: input shape {tuple(inp['shape'])} does not match the module's {tuple(x.shape)}")
        if np.issubdtype(inp["dtype"], np.integer):
            q_scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / q_scale) + zero, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], a)
        it.invoke()
        y = it.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            q_scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * q_scale
        if y.ndim >= 3:
            y = np.moveaxis(y, -1, 1)
        if y.shape != ref.shape:
            raise ExportError(f"{path}: output shape {y.shape} does not match the module's {ref.shape}")
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
            data = onnx_bytes(model, example)
            if dtype == "int8":
                data = _onnx_int8(data, [x[i : i + 1] for x in calib for i in range(x.shape[0])])
        else:
            data = tflite_bytes(model, example, dtype, [x[i : i + 1] for x in calib for i in range(x.shape[0])])
    except ImportError as exc:
        raise ExportError(f"{fmt} export needs its converter ({exc}); run `make .venv`") from None
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
