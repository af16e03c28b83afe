"""Latency predictors behind one interface.

- :class:`LUTLatency`: the sum of a subnet's LUT entries (the profiler's :class:`~hwnas.profiler.predict.
  LUTPredictor`), for a device with a LUT.
- :class:`LearnedLatency`: latency learned from a few tens of whole-model measurements of a device without
  a LUT (or to adapt other devices' LUTs and measurements to it): the models of :mod:`~hwnas.search.fewshot`
  on the space's structure features, stacked with weights from cross-validation; each prediction comes
  with a conformal interval, and it is saved as JSON (samples, priors, the weights), not a pickle.

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
from .params import Interval, check_params

log = logging.getLogger(__name__)

__all__ = [
    "LATENCY_FORMAT",
    "LUTLatency",
    "LatencyPredictor",
    "LearnedLatency",
    "load_latency_predictor",
]

LATENCY_FORMAT = "hwnas-latency-predictor"
LATENCY_VERSION = 3
#: Saved versions :meth:`LearnedLatency.load` reads (version 2 held one chosen model: its weight is 1).
LATENCY_VERSIONS_READ = (2, 3)
#: ``model_`` of a stack of more than one model.
STACKED = "stacked"


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

# The features live in the space (supernet.spaces.structure_features), the models in search.fewshot.


class LearnedLatency(LatencyPredictor):
    """Latency learned from a few end-to-end measurements of a device, with an interval per prediction.

    :meth:`fit` cross-validates every model of :data:`~hwnas.search.fewshot.MODELS` the samples allow
    (additive non-negative costs, ridge and gradient boosting in log space, a MACs baseline, and with
    ``priors`` the other devices' latencies scaled per operator group plus a residual), stacks them (a
    weighted geometric mean, weights fitted on the out-of-fold predictions: :func:`~hwnas.search.fewshot.
    stack_models`), and takes the interval from out-of-fold errors of the whole procedure (split conformal).
    Saved as JSON: the samples, the priors and the weights; loading refits the weighted models.

    Parameters
    ----------
    space:
        The space (name or object).
    priors:
        :class:`~hwnas.search.fewshot.Prior` objects (other devices' LUTs, measurements or predictors; see
        :func:`~hwnas.search.fewshot.load_prior`) the target is adapted from.
    models:
        The candidate models (default: all of them).
    level:
        Coverage the intervals aim at.
    seed:
        Seeds the folds and gradient boosting.
    """

    def __init__(
        self,
        *,
        space: Any,
        priors: Sequence[Any] = (),
        models: Sequence[str] | None = None,
        level: float = 0.9,
        seed: int = 0,
    ) -> None:
        self.space_arg = space
        self.space = get_space(space)
        self.priors = tuple(priors)
        self.models = models
        self.level = level
        self.seed = seed
        rs = set(self.space.resolutions)
        for p in self.priors:
            rs &= set(p.resolutions)
        self.resolutions = tuple(sorted(rs))

    def _validate_params(self) -> None:
        from .fewshot import MODELS

        if self.models is not None and not (len(self.models) > 0 and all(m in MODELS for m in self.models)):
            raise ValueError(f"The 'models' parameter of LearnedLatency must be None or a list among {list(MODELS)}. "
                             f"Got {self.models!r} instead.")
        check_params(self, {"level": Interval(float, 0.0, 1.0, closed_low=False, closed_high=False),
                            "seed": Interval(int, 0, None)})
        for p in self.priors:
            if p.space != self.space.name:
                raise PredictorError(f"prior {p.source} is for space {p.space}, not {self.space.name}")
        if not self.resolutions:
            raise PredictorError("the priors share no resolution with each other and the space")

    # ---- features

    @property
    def feature_names(self) -> list[str]:
        from ..supernet.spaces import structure_features

        one = self.space.arrays_from_archs([self.space.min_arch(self.resolutions[0])])
        return structure_features(self.space, one)[0]

    def features_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """The structure feature matrix (n, len(feature_names)) of the array form."""
        from ..supernet.spaces import structure_features

        return structure_features(self.space, arrays)[1]

    def _feature_set(self, arrays: Mapping[str, np.ndarray]) -> Any:
        from .fewshot import features

        return features(self.space, arrays, self.priors)

    # ---- fit / predict

    def fit(self, archs: Sequence[Any], latency_ms: Sequence[float]) -> LearnedLatency:
        """Fit on measured (architecture, latency in ms) pairs. Sets ``weights_`` ({model: weight} of the
        stack), ``model_`` (the one model of weight 1, or ``"stacked"``), ``cv_`` ({model: mean absolute
        out-of-fold log error}), ``spearman_``, ``within_10pct_``, ``mape_`` (of the whole procedure's
        out-of-fold predictions, or the stack's own where the folds are too small to stack in),
        ``interval_`` (the log half-width at ``level``, from the same predictions) and ``samples_``. Raises
        PredictorError for unusable data or too few samples."""
        from .fewshot import MIN_SAMPLES, conformal_halfwidth, fit_stack, nested_oof, stack_models

        self._validate_params()
        y = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
        if len(archs) != len(y):
            raise PredictorError(f"{len(archs)} architectures but {len(y)} latencies")
        if len(y) < MIN_SAMPLES:
            raise PredictorError(f"need at least {MIN_SAMPLES} measured architectures to fit, got {len(y)}")
        if not np.all(np.isfinite(y)) or (y <= 0).any():
            raise PredictorError("latencies must be positive numbers (ms)")
        parsed = [self.space.parse(a, resolutions=self.resolutions) for a in archs]
        fs = self._feature_set(self.space.arrays_from_archs(parsed))
        weights, self.cv_, oof = stack_models(fs, y, models=self.models, seed=self.seed)
        self._set_weights(weights)
        self._fn = fit_stack(weights, fs, y, seed=self.seed)
        nested = nested_oof(fs, y, models=self.models, seed=self.seed)  # None: folds too small to stack in
        oof = oof if nested is None else nested
        self.interval_ = conformal_halfwidth(np.log(oof / y), self.level)
        self._set_metrics(oof, y)
        self.samples_ = len(y)
        self.train_ = ([a.to_dict() for a in parsed], y.tolist())
        return self

    def _set_weights(self, weights: Mapping[str, float]) -> None:
        self.weights_ = dict(weights)
        self.model_ = next(iter(weights)) if len(weights) == 1 else STACKED

    def _set_metrics(self, pred: np.ndarray, y: np.ndarray) -> None:
        from scipy.stats import spearmanr

        rel = np.abs(pred - y) / y
        rho = spearmanr(pred, y).statistic if len(y) > 2 else float("nan")
        self.spearman_ = float(rho) if np.isfinite(rho) else None
        self.within_10pct_ = float(np.mean(rel <= 0.10))
        self.mape_ = float(np.mean(rel))

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise PredictorError("this LearnedLatency is not fitted; call fit() or load() first")

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self._fn(self._feature_set(arrays)), dtype=np.float64)  # fit_stack floors

    def interval_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, 2) lower and upper ends (ms) of the ``level`` interval of each prediction."""
        p = self.predict_arrays(arrays)
        return np.stack([p * math.exp(-self.interval_), p * math.exp(self.interval_)], axis=1)

    def predict_interval(self, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(latencies (n,), intervals (n, 2)) in ms of architectures validated by the space."""
        if not len(archs):
            return np.zeros(0), np.zeros((0, 2))
        arrays = self.space.arrays_from_archs([self.space.parse(a, resolutions=self.resolutions) for a in archs])
        return self.predict_arrays(arrays), self.interval_arrays(arrays)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({"model": getattr(self, "model_", None), "weights": getattr(self, "weights_", None),
                    "priors": [p.source for p in self.priors]})
        return out

    # ---- files

    def to_dict(self) -> dict[str, Any]:
        """The saved form: samples, priors, the stack's weights, its interval and cross-validation."""
        self._check_fitted()
        archs, ms = self.train_
        return {
            "format": LATENCY_FORMAT,
            "version": LATENCY_VERSION,
            "kind": "learned",
            "model": self.model_,
            "weights": self.weights_,
            "space": self.space.name,
            "resolutions": list(self.resolutions),
            "seed": self.seed,
            "interval": {"level": self.level, "log_halfwidth": self.interval_},
            "cv_log_error": self.cv_,
            "metrics": {"samples": self.samples_, "spearman": self.spearman_,
                        "within_10pct": self.within_10pct_, "mape": self.mape_},
            "priors": [p.to_dict() for p in self.priors],
            "samples": [{"arch": a, "latency_ms": v} for a, v in zip(archs, ms, strict=True)],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted predictor as JSON (see :meth:`to_dict`)."""
        from ..profiler.lut import atomic_write_text

        payload = self.to_dict()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload) + "\n")
        return path

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], *, source: str = "<latency predictor>") -> LearnedLatency:
        """A fitted predictor from its saved form (the weighted models are refitted on the saved samples).
        Raises PredictorError for a bad object."""
        from .fewshot import MODELS, features, fit_stack, prior_from_dict

        if payload.get("format") != LATENCY_FORMAT or payload.get("kind") != "learned":
            raise PredictorError(f"{source}: not an hwnas learned latency predictor")
        version = payload.get("version")
        if version not in LATENCY_VERSIONS_READ:
            raise PredictorError(f"{source}: latency predictor version {version!r}; expected one of "
                                 f"{list(LATENCY_VERSIONS_READ)}")
        try:
            space = get_space(payload.get("space"))
        except Exception as exc:
            raise PredictorError(f"{source}: {exc}") from None
        weights = payload.get("weights") if version >= 3 else {payload.get("model"): 1.0}
        if not isinstance(weights, dict) or not weights:
            raise PredictorError(f"{source}: 'weights' must be an object {{model: weight}}")
        for name, w in weights.items():
            if name not in MODELS:
                raise PredictorError(f"{source}: model {name!r} is not one of {list(MODELS)}")
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not (0 < w <= 1):
                raise PredictorError(f"{source}: weight of {name!r} is {w!r}, expected a number in (0, 1]")
        if abs(sum(weights.values()) - 1) > 1e-6:
            raise PredictorError(f"{source}: 'weights' sum to {sum(weights.values())!r}, expected 1")
        priors = [prior_from_dict(p, source=source) for p in payload.get("priors") or []]
        try:
            interval = payload["interval"]
            pred = cls(space=space, priors=priors, level=float(interval["level"]), seed=int(payload.get("seed", 0)))
            rows = payload["samples"]
            archs = [space.parse(r["arch"]) for r in rows]
            y = np.asarray([float(r["latency_ms"]) for r in rows], dtype=np.float64)
            pred.interval_ = float(interval["log_halfwidth"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{source}: bad predictor field ({exc})") from None
        if len(y) < 1 or not np.all(np.isfinite(y)) or (y <= 0).any():
            raise PredictorError(f"{source}: 'samples' must hold positive latencies")
        pred.resolutions = tuple(int(r) for r in payload.get("resolutions") or pred.resolutions)
        fs = features(space, space.arrays_from_archs(archs), priors)
        pred._set_weights({str(k): float(v) for k, v in weights.items()})
        pred._fn = fit_stack(pred.weights_, fs, y, seed=pred.seed)
        pred.cv_ = dict(payload.get("cv_log_error") or {})
        metrics = payload.get("metrics") or {}
        pred.samples_ = metrics.get("samples", len(y))
        pred.spearman_ = metrics.get("spearman")
        pred.within_10pct_ = metrics.get("within_10pct")
        pred.mape_ = metrics.get("mape")
        pred.train_ = ([a.to_dict() for a in archs], y.tolist())
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
