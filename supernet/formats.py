"""What the one exporter (:mod:`.export`) writes, as constants that need no torch: the model formats and
dtypes, the ONNX opset and the TFLite int8 recipe. Readers of a LUT's or a cache key's exporter settings
(``profiler/workloads.py``) take them from here, so a profile whose workloads are all cached never
imports torch."""

from __future__ import annotations

FORMATS = ("onnx", "tflite")
DTYPES = ("float32", "int8")
ONNX_OPSET = 17
TFLITE_INT8_RECIPE = "static_wi8_ai8"
