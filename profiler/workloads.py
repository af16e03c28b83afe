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
from .lut_format import OVERHEAD_KEY

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
    """Builds (and caches) the model files of a space for one format, dtype and batch.

    Each kind of workload has one recipe, a module-level ``build`` function with picklable arguments
    (:meth:`_entry_job`, :meth:`_subnet_job`, :meth:`_overhead_job`), used the same way in this process
    and in conversion workers. :meth:`convert` makes the ``.tflite`` files the cache lacks in parallel
    worker processes (a conversion takes seconds); ONNX exports are fast and stay in this process."""

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

    # one recipe per kind: (path, build, args, what)
    def _entry_job(self, entry: Entry) -> _Job:
        return _Job(self._entry_path(entry), _build_entry, (self.space, entry, self.batch), entry.key)

    def _subnet_job(self, arch: Arch) -> _Job:
        return _Job(self._path({"arch": arch.to_dict()}), _build_subnet, (self.space, arch, self.batch), f"subnet@{arch.r}")

    def _overhead_job(self, resolution: int) -> _Job:
        n_out = self.space.fixed_entries(resolution)[-1].out_channels
        path = self._path({"overhead": resolution, "n_out": n_out})
        return _Job(path, _build_overhead, (n_out, self.batch, resolution), f"{OVERHEAD_KEY}@{resolution}")

    def _make(self, job: _Job) -> Path:
        return export_model(lambda: job.build(*job.args), self.fmt, self.dtype, job.path)

    def convert(
        self,
        *,
        entries: Sequence[Entry] = (),
        archs: Sequence[Arch] = (),
        overheads: Sequence[int] = (),
        on_progress: Callable[[int, int, str], None] | None = None,
    ) -> int:
        """Convert the ``.tflite`` files of these workloads that the cache lacks, in worker processes
        (:func:`tflite_export.convert_many`; one pool for all of them, so each worker imports the converter
        once). Does nothing for ONNX. Returns how many files were made."""
        if self.fmt != "tflite":
            return 0
        from . import tflite_export

        jobs = [self._entry_job(e) for e in entries] + [self._subnet_job(a) for a in archs]
        jobs += [self._overhead_job(r) for r in overheads]
        todo = list({j.path: j for j in jobs if not j.path.exists()}.values())
        if todo:
            tflite_export.convert_many(
                [tflite_export.ConvertJob(path=j.path, dtype=self.dtype, build=j.build, args=j.args, what=j.what) for j in todo],
                on_progress=on_progress,
            )
        return len(todo)

    def entry(self, entry: Entry) -> Workload:
        path = self._make(self._entry_job(entry))
        return Workload(id=f"{entry.key}@{entry.resolution}", path=path, kind="entry", key=entry.key, resolution=entry.resolution)

    def subnet(self, arch: Arch) -> Workload:
        path = self._make(self._subnet_job(arch))
        return Workload(id=f"subnet:{arch.to_json()}", path=path, kind="subnet", resolution=arch.r)

    def overhead(self, resolution: int) -> Workload:
        """The smallest possible model with the network's input and output: what one inference costs
        beyond its operators (runtime call, feeding the input, fetching the output)."""
        path = self._make(self._overhead_job(resolution))
        return Workload(id=f"{OVERHEAD_KEY}@{resolution}", path=path, kind="overhead", key=OVERHEAD_KEY, resolution=resolution)

    def reference_arch(self) -> Arch:
        """The reference workload's subnet: the space's largest at its smallest LUT resolution."""
        return self.space.max_arch(min(self.space.lut_resolutions))

    def reference(self) -> Workload:
        """A fixed reference workload (the space's largest subnet at its smallest LUT resolution) whose
        latency is recorded with every LUT and every validation, to measure the machine's drift."""
        w = self.subnet(self.reference_arch())
        return Workload(id="reference", path=w.path, kind="reference", resolution=w.resolution)

    def entries(self, entries: Sequence[Entry], on_progress: Callable[[int, int, str], None] | None = None) -> list[Workload]:
        self.convert(entries=entries, on_progress=on_progress)
        out = []
        for i, entry in enumerate(entries):
            out.append(self.entry(entry))
            if on_progress is not None:
                on_progress(i + 1, len(entries), entry.key)
        return out

    def subnets(self, archs: Sequence[Arch], on_progress: Callable[[int, int, str], None] | None = None) -> list[Workload]:
        self.convert(archs=archs, on_progress=on_progress)
        return [self.subnet(a) for a in archs]


@dataclass(frozen=True)
class _Job:
    path: Path
    build: Callable[..., tuple[Any, Any]]  # module-level (conversion workers call it)
    args: tuple[Any, ...]
    what: str


def _build_entry(space: SearchSpace, entry: Entry, batch: int) -> tuple[Any, Any]:
    """The module and example input of a LUT entry (weights from seed 0)."""
    import torch

    torch.manual_seed(0)
    return space.build_entry(entry), space.entry_input(entry, batch=batch)


def _build_subnet(space: SearchSpace, arch: Arch, batch: int) -> tuple[Any, Any]:
    """The module and example input of a whole subnet (weights from seed 0)."""
    import torch

    torch.manual_seed(0)
    return space.build_subnet(arch), torch.randn(batch, 3, arch.r, arch.r)


def _build_overhead(n_out: int, batch: int, resolution: int) -> tuple[Any, Any]:
    import torch

    return overhead_model(n_out), torch.randn(batch, 3, resolution, resolution)


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
