"""OFA's architecture encoding, vectorised over the array form of any space.

An architecture ``{"ks", "e", "d", "r"}`` becomes a 0/1 vector: one-hot kernel size per block, one-hot
expand ratio per block (a block beyond its stage's depth is all zeros in both), then a one-hot resolution
slot. For ``ofa-mbv3-w1.2`` this is exactly the 128-input encoding of OFA's published accuracy predictor
(``ofa/tutorial/accuracy_predictor.py`` ``spec2feats``): 20 x 3 kernel columns, 20 x 3 expand columns,
8 resolution slots with slot ``(r - 112) // 16``. Other spaces get one slot per resolution of the space.

Search algorithms work on the *index form* (:class:`Genes`): the position of every value in the space's
choice lists, as small int arrays, which turns predictions into gathers without re-validating every batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..supernet import get_space
from .errors import PredictorError

__all__ = ["ENCODING_NAME", "ArchEncoding", "Genes"]

#: Name of the encoding written into saved predictors.
ENCODING_NAME = "ofa-onehot"
ENCODING_VERSION = 1

#: OFA's resolution slots for the w1.2 tutorial space: ``(r - 112) // 16`` for r in 112..224.
_OFA_W12_SLOTS = tuple(range(112, 225, 16))


@dataclass
class Genes:
    """Architectures in index form: ``ks``/``e`` (n, n_blocks), ``d`` (n, n_stages), ``r`` (n,), each
    entry the index of the value in the space's (sorted) choice list (``ks_choices`` etc., and for ``r``
    the encoding's ``resolutions``). int8/int16 arrays; rows are independent."""

    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])

    def take(self, rows: Any) -> Genes:
        """The rows ``rows`` (indices or a boolean mask), as a new Genes."""
        return Genes(self.ks[rows], self.e[rows], self.d[rows], self.r[rows])

    def copy(self) -> Genes:
        return Genes(self.ks.copy(), self.e.copy(), self.d.copy(), self.r.copy())

    @staticmethod
    def concat(parts: Sequence[Genes]) -> Genes:
        return Genes(
            np.concatenate([p.ks for p in parts]),
            np.concatenate([p.e for p in parts]),
            np.concatenate([p.d for p in parts]),
            np.concatenate([p.r for p in parts]),
        )

    def put(self, rows: np.ndarray, other: Genes) -> None:
        """Overwrite rows ``rows`` with ``other`` (in place)."""
        self.ks[rows] = other.ks
        self.e[rows] = other.e
        self.d[rows] = other.d
        self.r[rows] = other.r

    def flat(self) -> np.ndarray:
        """One int16 row per architecture (ks, e, d, r side by side): for hashing and de-duplication."""
        return np.concatenate(
            [self.ks.astype(np.int16), self.e.astype(np.int16), self.d.astype(np.int16),
             self.r.astype(np.int16)[:, None]],
            axis=1,
        )


class ArchEncoding:
    """The one-hot encoding of a space's architectures (see the module docstring).

    Parameters
    ----------
    space:
        A space name or object.
    resolutions:
        Resolutions that may be searched (default: all of the space's). For ``ofa-mbv3-w1.2`` the slots
        are OFA's eight whatever is searched; for other spaces one slot per resolution of the space.

    Attributes: ``space``, ``n_features``, ``resolutions`` (searchable, sorted), ``slots`` (the resolution
    of each slot), and the column offsets ``ks_offset``, ``e_offset``, ``r_offset``.
    """

    def __init__(self, space: Any, *, resolutions: Sequence[int] | None = None) -> None:
        self.space = get_space(space)
        sp = self.space
        self.resolutions = sp.check_resolutions(resolutions)
        self.slots: tuple[int, ...] = _OFA_W12_SLOTS if sp.name == "ofa-mbv3-w1.2" else sp.resolutions
        self.nk, self.ne, self.nd = len(sp.ks_choices), len(sp.e_choices), len(sp.d_choices)
        self.n_blocks, self.n_stages, self.max_depth = sp.n_blocks, sp.n_stages, sp.max_depth
        self.ks_offset = 0
        self.e_offset = sp.n_blocks * self.nk
        self.r_offset = self.e_offset + sp.n_blocks * self.ne
        self.n_features = self.r_offset + len(self.slots)
        self._ks = np.asarray(sp.ks_choices, dtype=np.int64)
        self._e = np.asarray(sp.e_choices, dtype=np.int64)
        self._d = np.asarray(sp.d_choices, dtype=np.int64)
        self._r = np.asarray(self.resolutions, dtype=np.int64)
        # slot column of each searchable resolution index
        self._r_col = np.asarray([self.r_offset + self.slots.index(r) for r in self.resolutions], dtype=np.int64)
        self._ks_cols = self.ks_offset + np.arange(sp.n_blocks)[None, :] * self.nk
        self._e_cols = self.e_offset + np.arange(sp.n_blocks)[None, :] * self.ne

    # ---- metadata ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """What a saved predictor records about its inputs (plain data)."""
        sp = self.space
        return {
            "name": ENCODING_NAME,
            "version": ENCODING_VERSION,
            "space": sp.name,
            "n_features": self.n_features,
            "n_blocks": sp.n_blocks,
            "max_depth": sp.max_depth,
            "ks_choices": list(sp.ks_choices),
            "e_choices": list(sp.e_choices),
            "resolution_slots": list(self.slots),
        }

    def check_compatible(self, info: Mapping[str, Any], source: str) -> None:
        """Raise PredictorError if a saved encoding description ``info`` is not this encoding."""
        mine = self.to_dict()
        if not isinstance(info, Mapping):
            raise PredictorError(f"{source}: 'encoding' must be a mapping, got {type(info).__name__}")
        for key in ("name", "version", "space", "n_features", "ks_choices", "e_choices", "resolution_slots"):
            if info.get(key) != mine[key]:
                raise PredictorError(
                    f"{source}: encoding field {key!r} is {info.get(key)!r}, but space {self.space.name} "
                    f"encodes with {mine[key]!r}"
                )

    # ---- conversions ---------------------------------------------------------------------------------

    def genes(self, arrays: Mapping[str, np.ndarray]) -> Genes:
        """The index form of validated arrays. Raises ArchError for invalid values or resolutions outside
        the encoding's :attr:`resolutions`."""
        from ..supernet.errors import ArchError

        a = self.space.check_arrays(arrays)
        r_idx = np.searchsorted(self._r, a["r"])
        bad = (r_idx >= len(self._r)) | (self._r[np.minimum(r_idx, len(self._r) - 1)] != a["r"])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ArchError(
                f"arch field 'r' (row {row}): {int(a['r'][row])} is not one of the searchable resolutions "
                f"{list(self.resolutions)}"
            )
        return Genes(
            ks=np.searchsorted(self._ks, a["ks"]).astype(np.int8),
            e=np.searchsorted(self._e, a["e"]).astype(np.int8),
            d=np.searchsorted(self._d, a["d"]).astype(np.int8),
            r=r_idx.astype(np.int16),
        )

    def arrays(self, genes: Genes) -> dict[str, np.ndarray]:
        """The array form ``{"ks", "e", "d", "r"}`` (int64) of index-form architectures."""
        return {
            "ks": self._ks[genes.ks],
            "e": self._e[genes.e],
            "d": self._d[genes.d],
            "r": self._r[genes.r],
        }

    def depths(self, genes: Genes) -> np.ndarray:
        """Depth values (n, n_stages) of index-form architectures."""
        return self._d[genes.d]

    def active(self, genes: Genes) -> np.ndarray:
        """Boolean (n, n_blocks) mask of the blocks that run."""
        return self.space.active_mask(self._d[genes.d])

    def columns(self, genes: Genes) -> tuple[np.ndarray, np.ndarray]:
        """(columns (n, 2 * n_blocks + 1) of the ones in each row's encoding, active mask of the same
        shape). Columns of inactive blocks are meaningless and masked out."""
        active = self.active(genes)
        cols = np.concatenate(
            [self._ks_cols + genes.ks, self._e_cols + genes.e, self._r_col[genes.r][:, None]], axis=1
        )
        mask = np.concatenate([active, active, np.ones((len(genes), 1), dtype=bool)], axis=1)
        return cols, mask

    def encode_genes(self, genes: Genes, out: np.ndarray | None = None) -> np.ndarray:
        """float32 (n, n_features) one-hot encoding of index-form architectures."""
        n = len(genes)
        x = np.zeros((n, self.n_features), dtype=np.float32) if out is None else out
        if out is not None:
            x[:] = 0.0
        cols, mask = self.columns(genes)
        rows = np.broadcast_to(np.arange(n)[:, None], cols.shape)
        x[rows[mask], cols[mask]] = 1.0
        return x

    def encode_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """float32 (n, n_features) encoding of the array form (validated)."""
        return self.encode_genes(self.genes(arrays))

    def encode(self, archs: Sequence[Any]) -> np.ndarray:
        """Encoding of architectures (Arch, OFA dict or JSON), validated by the space."""
        return self.encode_arrays(self.space.arrays_from_archs(archs))

    # ---- sampling in index form ----------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, n: int) -> Genes:
        """``n`` uniformly random architectures in index form (at the encoding's resolutions)."""
        return Genes(
            ks=rng.integers(0, self.nk, size=(n, self.n_blocks), dtype=np.int8),
            e=rng.integers(0, self.ne, size=(n, self.n_blocks), dtype=np.int8),
            d=rng.integers(0, self.nd, size=(n, self.n_stages), dtype=np.int8),
            r=rng.integers(0, len(self.resolutions), size=n, dtype=np.int16),
        )

    def fill(self, n: int, *, ks: int, e: int, d: int, r: int) -> Genes:
        """``n`` copies of one architecture given by choice indices (e.g. all zeros = the min arch)."""
        return Genes(
            ks=np.full((n, self.n_blocks), ks, dtype=np.int8),
            e=np.full((n, self.n_blocks), e, dtype=np.int8),
            d=np.full((n, self.n_stages), d, dtype=np.int8),
            r=np.full(n, r, dtype=np.int16),
        )
