"""Latency profiling: model files for a space's LUT entries and subnets (``workloads``), measurement on a
device (``measure``, ``profile``; several devices at once: ``device_pool``; a table of any keyed workloads,
such as PaS layers: ``entry_table``), LUT files (``lut``: the format ``lut_format``, sidecars ``lut_sidecars``,
the writer ``lut_writer``), LUT-sum prediction (``predict``), validation against
whole networks (``validate``), comparing two tables (``diff``, ``report``) and OFA interop (``ofa_interop``).
May import ``agents`` and ``supernet``; modules are imported by name (``from hwnas.profiler.lut import LUT``)
so that importing the package loads neither torch nor a runtime."""
