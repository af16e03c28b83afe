"""Latency predictors behind one interface.

- :class:`LUTLatency`: the sum of a subnet's LUT entries (the profiler's :class:`~hwnas.profiler.predict.
  LUTPredictor`), for a device with a LUT.
- :class:`LearnedLatency`: a regressor fitted on a few tens of whole-model measurements, for a device
  without a LUT or to calibrate a LUT against end-to-end numbers. Its features follow the structure of the
  network: for every stage (and for the fixed stem + head) the sums of pointwise and depthwise MACs,
  activation traffic, weights and the layer count, the input resolution, and optionally the prediction of a
  reference device's LUT. Latency is additive over layers and each of these costs adds time, so the model is
  linear in them (ridge regression on standardised features, the penalty chosen by leave-one-out, on the
  latency in ms); with few samples this extrapolates far better than trees (see ``benchmarks/`` and
  ``tests/test_predictors.py``). It is saved as JSON (feature names, scaler and coefficients), not a pickle.

Every predictor answers :meth:`LatencyPredictor.predict_arrays` (the array form) and, for the search's hot
path, :meth:`LatencyPredictor.predict_genes` (index form, no re-validation).
"""

from __future__ import annotations

import json
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..profiler.lut import LUT
from ..profiler.predict import LUTPredictor
from ..supernet import get_space
from .encoding import ArchEncoding, Genes
from .errors import PredictorError

log = logging.getLogger(__name__)

__all__ = [
    "LATENCY_FORMAT",
    "LUTLatency",
    "LatencyPredictor",
    "LearnedLatency",
    "load_latency_predictor",
]

LATENCY_FORMAT = "hwnas-latency-predictor"
LATENCY_VERSION = 1


class LatencyPredictor(ABC):
    """Predicts the latency (ms) of architectures of one space.

    Attributes: ``space`` (the space object), ``resolutions`` (the resolutions it can predict, sorted).
    """

    space: Any
    resolutions: tuple[int, ...]

    @abstractmethod
    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Latency (ms, float64 (n,)) of each architecture of the array form ``{"ks", "e", "d", "r"}``."""

    def predict_genes(self, genes: Genes, encoding: ArchEncoding) -> np.ndarray:
        """Latency of index-form architectures; subclasses make this a gather without validation."""
        return self.predict_arrays(encoding.arrays(genes))

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        """Latency (ms) of architectures (Arch, OFA dict or JSON), validated by the space."""
        if not len(archs):
            return np.zeros(0)
        parsed = [self.space.parse(a, resolutions=self.resolutions) for a in archs]
        return self.predict_arrays(self.space.arrays_from_archs(parsed))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (kind, space, resolutions)."""
        return {"kind": type(self).__name__, "space": self.space.name, "resolutions": list(self.resolutions)}


class LUTLatency(LatencyPredictor):
    """The LUT sum of a device's table (the table's ``statistic`` column unless ``column`` is given).

    Raises LUTError naming the first key the space needs that the LUT lacks."""

    def __init__(self, lut: LUT, *, space: Any = None, column: str | None = None) -> None:
        self.lut = lut
        self.predictor_ = LUTPredictor(lut, space, column=column)
        self.space = self.predictor_.space
        self.resolutions = tuple(self.predictor_.resolutions_)
        # (R, B, K, E): the latency of every block position for every choice (the space's block table)
        self._block = self.predictor_.table_
        self._fixed = np.asarray(self.predictor_.fixed_, dtype=np.float64)
        self._res_map: dict[tuple[int, ...], np.ndarray] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, space: Any = None) -> LUTLatency:
        return cls(LUT.load(path), space=space)

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.predictor_.predict_arrays(arrays)

    def _lut_rows(self, encoding: ArchEncoding) -> np.ndarray:
        key = tuple(encoding.resolutions)
        hit = self._res_map.get(key)
        if hit is None:
            missing = [r for r in key if r not in self.resolutions]
            if missing:
                raise PredictorError(
                    f"the LUT has no entries at resolution {missing[0]} (it holds {list(self.resolutions)})"
                )
            hit = np.asarray([self.resolutions.index(r) for r in key], dtype=np.int64)
            self._res_map[key] = hit
        return hit

    def predict_genes(self, genes: Genes, encoding: ArchEncoding) -> np.ndarray:
        ri = self._lut_rows(encoding)[genes.r]
        n, b = genes.ks.shape
        vals = self._block[ri[:, None], np.arange(b)[None, :], genes.ks, genes.e]
        vals = np.where(encoding.active(genes), vals, 0.0)
        return self._fixed[ri] + vals.sum(axis=1)

    def block_table(self, encoding: ArchEncoding) -> tuple[np.ndarray, np.ndarray]:
        """(block latencies (R, B, K, E), fixed latency (R,)) at the encoding's resolutions: what an exact
        minimum-latency search over an additive model needs."""
        ri = self._lut_rows(encoding)
        return self._block[ri], self._fixed[ri]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({"lut": self.lut.source, "statistic": self.predictor_.column})
        return out


# --------------------------------------------------------------------------------------------------------
# Learned predictor

#: Per-entry features, summed over the entries of a group (each stage; the fixed stem + head).
ENTRY_FEATURES = ("pw_mmacs", "dw_mmacs", "act_melems", "mparams", "layers")


def _entry_features(entry: Any) -> np.ndarray:
    """Costs of one LUT entry: pointwise (dense) and depthwise MACs (M), activation elements read and
    written (M), weights (M), and 1 (a per-layer overhead)."""
    dw = 0.0
    act = 0.0
    if entry.op == "expanded_conv":
        mid = entry.mid_channels
        dw = float(entry.out_size**2 * mid * entry.kernel**2)
        act = entry.in_size**2 * entry.in_channels + entry.out_size**2 * entry.out_channels
        if entry.has_expand_conv:
            act += 2 * entry.in_size**2 * mid  # expansion output written, read by the depthwise conv
        act += 2 * entry.out_size**2 * mid  # depthwise output written, read by the projection
    else:
        act = float(np.prod(entry.input_shape)) + float(np.prod(entry.output_shape))
    pw = float(entry.macs) - dw
    return np.asarray([pw / 1e6, dw / 1e6, act / 1e6, entry.params / 1e6, 1.0], dtype=np.float64)


class _FeatureTable:
    """Per-(resolution, block position, kernel, expand) entry features and per-resolution fixed features
    of a space, for a vectorised gather."""

    def __init__(self, space: Any, resolutions: Sequence[int]) -> None:
        sp = space
        self.resolutions = tuple(resolutions)
        self.block = sp.block_table(_entry_features, self.resolutions)  # (R, B, K, E, F)
        self.fixed = np.zeros((len(self.resolutions), len(ENTRY_FEATURES)), dtype=np.float64)
        for ri, r in enumerate(self.resolutions):
            self.fixed[ri] = sum(_entry_features(x) for x in sp.fixed_entries(r))
        self.stage_of = np.repeat(np.arange(sp.n_stages), sp.max_depth)
        self.n_stages = sp.n_stages

    def features(self, genes: Genes, encoding: ArchEncoding, ri: np.ndarray) -> np.ndarray:
        """(n, n_stages + 1, n_f): per-stage sums of the active blocks' features, then the fixed part."""
        n, b = genes.ks.shape
        vals = self.block[ri[:, None], np.arange(b)[None, :], genes.ks, genes.e]  # (n, B, F)
        vals = vals * encoding.active(genes)[:, :, None]
        per_stage = vals.reshape(n, self.n_stages, -1, vals.shape[-1]).sum(axis=2)
        return np.concatenate([per_stage, self.fixed[ri][:, None, :]], axis=1)


def _check_param(name: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"The {name!r} parameter of LearnedLatency must be {what}. Got {value!r} instead.")


class LearnedLatency(LatencyPredictor):
    """Latency learned from end-to-end measurements (see the module docstring).

    Parameters
    ----------
    space:
        The space (name or object).
    reference:
        Optional :class:`LUTLatency` of a reference device whose prediction is one more feature (a LUT of
        the same device calibrates it; another device's transfers its shape).
    granularity:
        ``"stage"`` (features per stage, default) or ``"total"`` (summed over the network).
    alphas:
        Ridge penalties tried (leave-one-out picks one), on standardised features.
    val_fraction:
        Share of the measurements held out in :meth:`fit` to report Spearman, within-10% and MAPE.
    seed:
        Seeds the hold-out split.
    """

    def __init__(
        self,
        *,
        space: Any,
        reference: LUTLatency | None = None,
        granularity: str = "stage",
        alphas: Sequence[float] = tuple(10.0 ** np.arange(-4, 4.5, 0.5)),
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.space_arg = space
        self.space = get_space(space)
        self.reference = reference
        self.granularity = granularity
        self.alphas = alphas
        self.val_fraction = val_fraction
        self.seed = seed
        self.resolutions = self.space.resolutions if reference is None else tuple(reference.resolutions)
        self._table: _FeatureTable | None = None

    def _validate_params(self) -> None:
        _check_param("granularity", self.granularity, self.granularity in ("stage", "total"),
                     "a str among {'stage', 'total'}")
        alphas = list(self.alphas)
        _check_param("alphas", self.alphas, bool(alphas) and all(
            isinstance(a, int | float) and math.isfinite(a) and a > 0 for a in alphas), "a list of floats > 0")
        _check_param("val_fraction", self.val_fraction,
                     isinstance(self.val_fraction, int | float) and 0 <= self.val_fraction <= 0.9,
                     "a float in [0, 0.9]")
        _check_param("seed", self.seed, isinstance(self.seed, int) and not isinstance(self.seed, bool)
                     and self.seed >= 0, "an int in [0, inf)")
        if self.reference is not None and self.reference.space.name != self.space.name:
            raise PredictorError(
                f"reference LUT is for space {self.reference.space.name}, not {self.space.name}"
            )

    # ---- features

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        groups = [f"stage{s}" for s in range(self.space.n_stages)] + ["fixed"]
        if self.granularity == "stage":
            names += [f"{g}.{f}" for g in groups for f in ENTRY_FEATURES]
        else:
            names += [f"total.{f}" for f in ENTRY_FEATURES]
        names += ["resolution_sq"]
        if self.reference is not None:
            names.append("reference_ms")
        return names

    def _features(self, genes: Genes, encoding: ArchEncoding) -> np.ndarray:
        if self._table is None or self._table.resolutions != tuple(encoding.resolutions):
            self._table = _FeatureTable(self.space, encoding.resolutions)
        res = np.asarray(encoding.resolutions, dtype=np.float64)[genes.r]
        f = self._table.features(genes, encoding, genes.r.astype(np.int64))
        n = len(genes)
        parts = [f.reshape(n, -1) if self.granularity == "stage" else f.sum(axis=1)]
        parts.append((res / 224.0)[:, None] ** 2)
        if self.reference is not None:
            parts.append(self.reference.predict_genes(genes, encoding)[:, None])
        return np.concatenate(parts, axis=1)

    def features_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """The feature matrix (n, len(feature_names)) of the array form."""
        enc = ArchEncoding(self.space, resolutions=self.resolutions)
        return self._features(enc.genes(arrays), enc)

    # ---- fit / predict

    def fit(self, archs: Sequence[Any], latency_ms: Sequence[float]) -> LearnedLatency:
        """Fit on measured (architecture, latency in ms) pairs, after holding out ``val_fraction`` of them
        to report ``spearman_``, ``within_10pct_``, ``mape_`` (None with fewer than 4 held out); the final
        model is then refitted on all pairs. Raises PredictorError for unusable data."""
        from scipy.stats import spearmanr

        self._validate_params()
        y = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
        if len(archs) != len(y):
            raise PredictorError(f"{len(archs)} architectures but {len(y)} latencies")
        if len(y) < 5:
            raise PredictorError(f"need at least 5 measured architectures to fit, got {len(y)}")
        if not np.all(np.isfinite(y)) or (y <= 0).any():
            raise PredictorError("latencies must be positive numbers (ms)")
        arrays = self.space.arrays_from_archs([self.space.parse(a, resolutions=self.resolutions) for a in archs])
        x = self.features_arrays(arrays)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(y))
        n_val = int(round(len(y) * self.val_fraction))
        self.spearman_ = self.within_10pct_ = self.mape_ = None
        if n_val >= 4 and len(y) - n_val >= 5:
            val, train = order[:n_val], order[n_val:]
            coef, intercept, mean, scale, _ = self._solve(x[train], y[train])
            pred = ((x[val] - mean) / scale) @ coef + intercept
            rel = np.abs(pred - y[val]) / y[val]
            rho = spearmanr(pred, y[val]).statistic
            self.spearman_ = None if not np.isfinite(rho) else float(rho)
            self.within_10pct_ = float(np.mean(rel <= 0.10))
            self.mape_ = float(np.mean(rel))
        self.coef_, self.intercept_, self.mean_, self.scale_, self.alpha_ = self._solve(x, y)
        self.samples_ = len(y)
        return self

    def _solve(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, float]:
        from sklearn.linear_model import RidgeCV

        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        model = RidgeCV(alphas=list(self.alphas)).fit((x - mean) / scale, y)
        return np.asarray(model.coef_, dtype=np.float64), float(model.intercept_), mean, scale, float(model.alpha_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise PredictorError("this LearnedLatency is not fitted; call fit() or load() first")

    def predict_genes(self, genes: Genes, encoding: ArchEncoding) -> np.ndarray:
        self._check_fitted()
        x = self._features(genes, encoding)
        return ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        self._check_fitted()
        enc = ArchEncoding(self.space, resolutions=self.resolutions)
        return self.predict_genes(enc.genes(arrays), enc)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({"model": "ridge", "granularity": self.granularity,
                    "reference": None if self.reference is None else self.reference.lut.source})
        return out

    # ---- files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model as JSON (feature names, scaler, coefficients, metrics)."""
        self._check_fitted()
        ref = None
        if self.reference is not None:
            ref = {"lut": str(self.reference.lut.source), "statistic": self.reference.predictor_.column}
        payload = {
            "format": LATENCY_FORMAT,
            "version": LATENCY_VERSION,
            "kind": "learned",
            "model": "ridge",
            "space": self.space.name,
            "resolutions": list(self.resolutions),
            "granularity": self.granularity,
            "features": self.feature_names,
            "reference": ref,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
            "alpha": self.alpha_,
            "metrics": {"samples": self.samples_, "spearman": self.spearman_,
                        "within_10pct": self.within_10pct_, "mape": self.mape_},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], *, source: str = "<latency predictor>") -> LearnedLatency:
        """A fitted predictor from the saved JSON object. Raises PredictorError for a bad object."""
        if payload.get("format") != LATENCY_FORMAT or payload.get("kind") != "learned":
            raise PredictorError(f"{source}: not an hwnas learned latency predictor")
        if payload.get("version") != LATENCY_VERSION:
            raise PredictorError(f"{source}: latency predictor version {payload.get('version')!r}; expected {LATENCY_VERSION}")
        try:
            space = get_space(payload.get("space"))
        except Exception as exc:
            raise PredictorError(f"{source}: {exc}") from None
        reference = None
        ref = payload.get("reference")
        if ref:
            lut_path = Path(ref.get("lut", ""))
            if not lut_path.is_file():
                raise PredictorError(f"{source}: its reference LUT {lut_path} is missing")
            reference = LUTLatency(LUT.load(lut_path), space=space, column=ref.get("statistic"))
        pred = cls(space=space, reference=reference, granularity=payload.get("granularity", "stage"))
        pred.resolutions = tuple(int(r) for r in payload.get("resolutions") or space.resolutions)
        names = payload.get("features")
        if names != pred.feature_names:
            raise PredictorError(f"{source}: feature list does not match this version's {pred.feature_names[:3]}...")
        try:
            pred.mean_ = np.asarray(payload["mean"], dtype=np.float64)
            pred.scale_ = np.asarray(payload["scale"], dtype=np.float64)
            pred.coef_ = np.asarray(payload["coef"], dtype=np.float64)
            pred.intercept_ = float(payload["intercept"])
            pred.alpha_ = float(payload.get("alpha", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{source}: bad coefficients ({exc})") from None
        if not (pred.mean_.shape == pred.scale_.shape == pred.coef_.shape == (len(names),)):
            raise PredictorError(f"{source}: coefficient arrays do not have {len(names)} entries")
        metrics = payload.get("metrics") or {}
        pred.samples_ = metrics.get("samples")
        pred.spearman_ = metrics.get("spearman")
        pred.within_10pct_ = metrics.get("within_10pct")
        pred.mape_ = metrics.get("mape")
        return pred

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LearnedLatency:
        path = Path(path)
        if not path.is_file():
            raise PredictorError(f"{path}: no such latency predictor file")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PredictorError(f"{path}: not a JSON latency predictor ({exc})") from None
        if not isinstance(payload, dict):
            raise PredictorError(f"{path}: not a JSON latency predictor")
        return cls.from_dict(payload, source=str(path))


def load_latency_predictor(path: str | os.PathLike[str]) -> LearnedLatency:
    """:meth:`LearnedLatency.load`."""
    return LearnedLatency.load(path)
