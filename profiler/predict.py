"""LUT-sum latency prediction, vectorised over many architectures.

``LUTPredictor(lut, space)`` turns a LUT into the space's dense block table ``[resolution, block, kernel,
expand]`` of block latencies (:meth:`~hwnas.supernet.spaces.SearchSpace.block_table`) plus one fixed cost
per resolution (stem, first block, head and, if the LUT has it, the measured ``Overhead-inference``), so
that predicting n architectures is a gather and a masked sum over numpy arrays -- no Python loop per key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..supernet import get_space
from ..supernet.errors import ArchError
from .errors import LUTError
from .lut import LUT, OVERHEAD_KEY

__all__ = ["LUTPredictor"]


class LUTPredictor:
    """Predict latency (ms) as the sum of a subnet's LUT entries (the LUT's statistic column).

    Parameters
    ----------
    lut:
        The table.
    space:
        A space name or object; default: the LUT's ``space`` metadata.
    resolutions:
        Resolutions to predict at; default: the LUT's ``resolutions`` that belong to the space.
    column:
        The LUT column to sum; default: the LUT's ``statistic``.

    Raises LUTError naming the first missing key when the LUT lacks an entry the space needs, SpaceError
    for an unknown space.
    """

    def __init__(
        self,
        lut: LUT,
        space: Any = None,
        *,
        resolutions: Iterable[int] | None = None,
        column: str | None = None,
    ) -> None:
        self.lut = lut
        self.space = get_space(space if space is not None else lut.space)
        self.column = column or lut.statistic
        if resolutions is None:
            resolutions = [r for r in lut.resolutions if r in self.space.resolutions] or lut.resolutions
        self.resolutions_ = tuple(sorted({int(r) for r in resolutions}))
        if not self.resolutions_:
            raise LUTError(f"{lut.source}: no resolutions to predict at")
        self.space.check_resolutions(self.resolutions_)
        missing = self.missing_keys(self.resolutions_)
        if missing:
            key, r = missing[0]
            raise LUTError(
                f"{lut.source}: no entry {key!r} at resolution {r}, needed by space {self.space.name} "
                f"({len(missing)} missing in all)"
            )
        self._build()

    # ---- construction

    def missing_keys(self, resolutions: Iterable[int] | None = None) -> list[tuple[str, int]]:
        """(key, resolution) the space needs at ``resolutions`` (default: the predictor's) that the LUT
        lacks, in the space's entry order."""
        rs = self.resolutions_ if resolutions is None else tuple(resolutions)
        return [
            (e.key, e.resolution) for e in self.space.all_lut_entries(rs) if not self.lut.has(e.key, e.resolution)
        ]

    def _build(self) -> None:
        sp = self.space
        values = self.lut.values(self.column)
        rs = self.resolutions_
        # (R, B, K, E): every block position's latency for every choice, and which (key, resolution) it is
        table = sp.block_table(lambda e: values[(e.key, e.resolution)], rs)
        keys = sp.block_table(lambda e: e.key, rs, dtype=object)
        cell_keys = [(k, rs[i // keys[0].size]) for i, k in enumerate(keys.ravel().tolist())]
        fixed = np.zeros(len(rs), dtype=np.float64)
        fixed_keys: list[list[tuple[str, int]]] = []
        for ri, r in enumerate(rs):
            idents = [(e.key, r) for e in sp.fixed_entries(r)]
            if (OVERHEAD_KEY, r) in values:
                idents.append((OVERHEAD_KEY, r))
            fixed[ri] = math.fsum(values[i] for i in idents)
            fixed_keys.append(idents)
        self.table_ = table
        self.fixed_ = fixed
        self._flat = table.ravel()
        self._cell_keys: list[tuple[str, int]] = cell_keys
        self._fixed_keys = fixed_keys
        self._res_lookup = np.full(max(rs) + 1, -1, dtype=np.intp)
        self._res_lookup[list(rs)] = np.arange(len(rs))
        n_k, n_e = len(sp.ks_choices), len(sp.e_choices)
        # (ks value, e value) -> ks_index * n_e + e_index, -1 where not a choice
        self._ke = np.full((max(sp.ks_choices) + 1, max(sp.e_choices) + 1), -1, dtype=np.intp)
        for ki, ks in enumerate(sp.ks_choices):
            for ei, e in enumerate(sp.e_choices):
                self._ke[ks, e] = ki * n_e + ei
        self._d_ok = np.zeros(max(sp.d_choices) + 1, dtype=bool)
        self._d_ok[list(sp.d_choices)] = True
        # flat offset of each block position; for resolution index ri add ri * _res_stride
        self._block_offset = (np.arange(sp.n_blocks) * (n_k * n_e)).astype(np.intp)
        self._res_stride = sp.n_blocks * n_k * n_e

    # ---- prediction

    def _indices(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(resolution index (n,), flat table index (n, B), active mask (n, B)) of the array form.

        Validation is done with lookup tables on the fast path; anything odd is handed to the space's
        ``check_arrays`` for its one-line ArchError naming the field and row."""
        sp = self.space
        try:
            ks, e, d, r = (np.asarray(arrays[k]) for k in ("ks", "e", "d", "r"))
        except KeyError:
            sp.check_arrays(arrays)
            raise
        fast = (
            ks.ndim == 2
            and ks.shape[1] == sp.n_blocks
            and e.shape == ks.shape
            and d.shape == (ks.shape[0], sp.n_stages)
            and r.shape == (ks.shape[0],)
            and all(a.dtype.kind in "iu" for a in (ks, e, d, r))
        )
        if fast and ks.size:
            fast = (
                0 <= ks.min() and ks.max() < self._ke.shape[0]
                and 0 <= e.min() and e.max() < self._ke.shape[1]
                and 0 <= d.min() and d.max() < len(self._d_ok)
                and 0 <= r.min() and r.max() < len(self._res_lookup)
            )
        if not fast:
            a = sp.check_arrays(arrays)  # raises the space's message for values outside the space
            ks, e, d, r = a["ks"], a["e"], a["d"], a["r"]
        ke = self._ke[ks, e]
        if (ke < 0).any() or not self._d_ok[d].all():
            sp.check_arrays(arrays)  # raises the space's message
        n_lookup = len(self._res_lookup)
        ri = np.where(r < n_lookup, self._res_lookup[np.minimum(r, n_lookup - 1)], -1)
        if (ri < 0).any():
            sp.check_arrays(arrays)
            row = int(np.flatnonzero(ri < 0)[0])
            raise ArchError(
                f"arch field 'r' (row {row}): {int(r[row])} is not one of the LUT's resolutions "
                f"{list(self.resolutions_)}"
            )
        flat = (ri * self._res_stride)[:, None] + self._block_offset[None, :] + ke
        active = sp.active_mask(d)
        return ri, flat, active

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Latency (ms) of each architecture of the array form ``{"ks", "e", "d", "r"}``, float64 (n,).

        Raises ArchError naming the field and row of the first invalid value."""
        ri, flat, active = self._indices(arrays)
        blocks = np.where(active, self._flat[flat], 0.0).sum(axis=1)
        return self.fixed_[ri] + blocks

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        """Latency (ms) of each architecture (Arch, OFA dict or JSON string), float64 (n,).

        Raises ArchError for an invalid arch or a resolution the LUT does not hold."""
        parsed = [self.space.parse(a, resolutions=self.resolutions_) for a in archs]
        if not parsed:
            return np.zeros(0, dtype=np.float64)
        return self.predict_arrays(self.space.arrays_from_archs(parsed))

    def predict_one(self, arch: Any) -> float:
        return float(self.predict([arch])[0])

    # ---- usage counts (for whole-network impact of single entries)

    def entry_counts(self, arrays: Mapping[str, np.ndarray]) -> tuple[list[tuple[str, int]], np.ndarray]:
        """How often each LUT entry occurs in each architecture.

        Returns ``(entries, counts)``: the (key, resolution) used by any of the architectures, and an int
        array (n, len(entries)) of occurrences (a later-block entry can occur up to ``max_depth - 1`` times
        in a stage)."""
        ri, flat, active = self._indices(arrays)
        n = flat.shape[0]
        idents: dict[tuple[str, int], int] = {}
        cell_col = np.full(len(self._cell_keys), -1, dtype=np.int64)
        used_cells = np.unique(flat[active])
        for c in used_cells.tolist():
            cell_col[c] = idents.setdefault(self._cell_keys[c], len(idents))
        fixed_cols = []
        for keys in self._fixed_keys:
            fixed_cols.append([idents.setdefault(k, len(idents)) for k in keys])
        counts = np.zeros((n, len(idents)), dtype=np.int64)
        rows = np.repeat(np.arange(n), flat.shape[1]).reshape(flat.shape)
        np.add.at(counts, (rows[active], cell_col[flat[active]]), 1)
        for r_index, cols in enumerate(fixed_cols):
            sel = np.flatnonzero(ri == r_index)
            if len(sel):
                for col in cols:
                    counts[sel, col] += 1
        return list(idents), counts
