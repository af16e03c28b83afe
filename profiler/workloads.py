"""Workloads: the model files a device measures, one per LUT entry or subnet.

Every LUT entry and every subnet is built by the search space (``supernet``) from the
same block code and exported to the format of the device's runtime. Exports are
cached by content: a hash of what the file is made of (space, entry key or arch,
batch, dtype, exporter and its version), so re-profiling converts nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents import runtimes
from ..supernet import Arch, Entry, SearchSpace

log = logging.getLogger(__name__)

WORKLOAD_VERSION = 1
#: The model file format of each runtime (from the runtime registry).
RUNTIME_FORMAT = {name: r.model_format for name, r in runtimes.REGISTRY.items()}


def cache_dir() -> Path:
    base = os.environ.get("HWNAS_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hwnas" / "workloads"


@dataclass(frozen=True)
class Workload:
    """A model file to measure. ``id`` is echoed back by the runner."""

    id: str
    path: Path
    kind: str  # "entry" | "subnet" | "reference" | "overhead"
    key: str = ""
    resolution: int = 0


def exporter_info(fmt: str, dtype: str = "float32") -> dict[str, Any]:
    """Name, version and settings of the exporter that makes ``fmt`` files (recorded in LUTs and cache keys).
    Reads installed versions only: torch is imported when a workload is built, not to name it (3.3 s of a
    23 s re-profile whose workloads were all cached, BENCHMARKS.md)."""
    if fmt == "onnx":
        from importlib import metadata

        from ..supernet.formats import ONNX_OPSET

        return {"name": "torch.onnx", "version": metadata.version("torch"), "onnx": metadata.version("onnx"), "opset": ONNX_OPSET}
    if fmt == "tflite":
        from . import tflite_export

        return tflite_export.exporter_info(dtype)
    raise ValueError(f"unknown model format {fmt!r}")


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def export_model(module_fn: Callable[[], tuple[Any, Any]], fmt: str, dtype: str, path: Path) -> Path:
    """The cached workload file ``path``: if missing, ``module_fn()`` builds ``(module, example input)`` and
    the one exporter (:mod:`hwnas.supernet.export`) writes it as ``fmt`` (``onnx``: float32 only)."""
    if path.exists():
        return path
    module, example = module_fn()
    if fmt == "onnx":
        if dtype != "float32":
            raise ValueError(f"dtype {dtype!r} is not supported for ONNX workloads; use float32 (int8: runtime litert)")
        from ..supernet.export import export_onnx

        return export_onnx(module, example, path)
    from . import tflite_export

    return tflite_export.export_tflite(module, example, path, dtype=dtype)


class WorkloadBuilder:
    """Builds (and caches) the model files of a space for one format, dtype and batch."""

    def __init__(
        self, *, space: SearchSpace, fmt: str = "onnx", dtype: str = "float32", batch: int = 1, cache: Path | None = None
    ) -> None:
        self.space = space
        self.fmt = fmt
        self.dtype = dtype
        self.batch = batch
        self.cache = cache or cache_dir()
        self._exporter = exporter_info(fmt, dtype)

    @property
    def suffix(self) -> str:
        return "." + self.fmt

    def _path(self, parts: dict[str, Any]) -> Path:
        parts = {
            **parts,
            "space": self.space.name,
            "batch": self.batch,
            "dtype": self.dtype,
            "exporter": self._exporter,
            "v": WORKLOAD_VERSION,
        }
        return self.cache / self.fmt / f"{_digest(parts)}{self.suffix}"

    def _entry_path(self, entry: Entry) -> Path:
        return self._path({"entry": entry.key, "r": entry.resolution})

    def entry(self, entry: Entry) -> Workload:
        def make() -> tuple[Any, Any]:  # torch only when the file is not cached
            import torch

            torch.manual_seed(0)
            return _build_entry(self.space, entry, self.batch)

        path = export_model(make, self.fmt, self.dtype, self._entry_path(entry))
        return Workload(id=f"{entry.key}@{entry.resolution}", path=path, kind="entry", key=entry.key, resolution=entry.resolution)

    def subnet(self, arch: Arch) -> Workload:
        def make() -> tuple[Any, Any]:
            import torch

            torch.manual_seed(0)
            net = self.space.build_subnet(arch)
            return net, torch.randn(self.batch, 3, arch.r, arch.r)

        path = export_model(make, self.fmt, self.dtype, self._path({"arch": arch.to_dict()}))
        return Workload(id=f"subnet:{arch.to_json()}", path=path, kind="subnet", resolution=arch.r)

    def overhead(self, resolution: int) -> Workload:
        """The smallest possible model with the network's input and output: what one inference costs
        beyond its operators (runtime call, feeding the input, fetching the output)."""
        n_out = self.space.fixed_entries(resolution)[-1].out_channels

        def make() -> tuple[Any, Any]:
            import torch

            return overhead_model(n_out), torch.randn(self.batch, 3, resolution, resolution)

        path = self._path({"overhead": resolution, "n_out": n_out})
        path = export_model(make, self.fmt, self.dtype, path)
        return Workload(id=f"Overhead-inference@{resolution}", path=path, kind="overhead", key="Overhead-inference", resolution=resolution)

    def reference(self) -> Workload:
        """A fixed reference workload (the space's largest subnet at its smallest LUT resolution) whose
        latency is recorded with every LUT and every validation, to measure the machine's drift."""
        arch = self.space.max_arch(min(self.space.lut_resolutions))
        w = self.subnet(arch)
        return Workload(id="reference", path=w.path, kind="reference", resolution=arch.r)

    def entries(self, entries: Sequence[Entry], on_progress: Callable[[int, int, str], None] | None = None) -> list[Workload]:
        if self.fmt == "tflite":
            self._convert_parallel(entries, on_progress)
        out = []
        for i, entry in enumerate(entries):
            out.append(self.entry(entry))
            if on_progress is not None:
                on_progress(i + 1, len(entries), entry.key)
        return out

    def _convert_parallel(self, entries: Sequence[Entry], on_progress: Callable[[int, int, str], None] | None) -> None:
        """Convert the entries missing from the cache in worker processes (a .tflite takes seconds)."""
        from . import tflite_export

        jobs = [
            tflite_export.ConvertJob(
                path=self._entry_path(e), dtype=self.dtype, build=_build_entry, args=(self.space, e, self.batch), what=e.key
            )
            for e in entries
            if not self._entry_path(e).exists()
        ]
        if len(jobs) > 1:
            tflite_export.convert_many(jobs, on_progress=on_progress)


def _build_entry(space: SearchSpace, entry: Entry, batch: int) -> tuple[Any, Any]:
    """The module and example input of a LUT entry (module-level: conversion workers call it)."""
    return space.build_entry(entry), space.entry_input(entry, batch=batch)


def overhead_model(n_out: int) -> Any:
    """A module that takes the network's input and returns ``n_out`` numbers with next to no work: what is
    left is the runtime's own cost of one inference (the call, binding input and output). Built lazily so
    importing this module does not import torch."""
    import torch

    class Overhead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_out = n_out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(x, 1)[:, : self.n_out] + 1.0

    return Overhead()
