"""Few-shot latency prediction: the models a learned latency predictor stacks, the priors it adapts from
other devices, its intervals, and which subnets to measure.

A new device is measured end to end on a few tens of subnets; :class:`~hwnas.search.latency.LearnedLatency`
fits every candidate model of :data:`MODELS` that the sample size allows and judges each by
cross-validation on those samples (leave-one-out up to 20 samples, 10 folds above). Its prediction is a
stacked ensemble (Breiman's stacked regression, in log space): the geometric mean of the candidates'
predictions with non-negative weights summing to one, fitted by least squares of the log latencies on the
candidates' out-of-fold log predictions (:func:`stack_models`). On this machine's four settings the stack
beat keeping the single best model at every sample size (BENCHMARKS.md). Errors are judged in log space so
that one fit serves devices of any speed.

Candidates (the features are the space's :func:`~hwnas.supernet.spaces.structure_features`):

- ``macs-linear``: least squares on the per-stage and fixed MACs and the resolution (the plain baseline);
- ``nnls``: latency as a non-negative combination of the additive costs (per stage and fixed: MACs,
  depthwise MACs, depthwise MACs at each kernel size, parameters, activation bytes, layers), fitted on
  relative errors;
- ``ridge-log``: ridge regression of log latency on the log costs and the stage shapes;
- ``gbm-log``: gradient boosting on log latency (from 30 samples);
- with priors (other devices' LUTs, measurements or saved predictors, see :func:`load_prior`):
  ``prior-total`` (one non-negative scale per prior), ``prior-ops`` (one scale per operator group:
  the fixed stem and head, each stage, shrunk toward a common scale) and ``prior-ops+residual`` (the same
  with a ridge correction of the log ratio on the structure features).

Intervals are split-conformal on out-of-fold errors of the whole procedure, the stacking included
(:func:`nested_oof`): the half-width (in log space) is the ``ceil((n + 1) * level)``-th smallest absolute
out-of-fold log error.

:func:`suggest_archs` picks the subnets worth measuring: spread over MACs, resolution and depth (k-means
in those coordinates over a large random pool, plus the pool's smallest and largest), not random.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..supernet.spaces import ENTRY_COSTS, structure_features
from .errors import PredictorError

__all__ = [
    "MODELS",
    "MIN_SAMPLES",
    "FeatureSet",
    "Prior",
    "conformal_halfwidth",
    "features",
    "fit_model",
    "fit_stack",
    "nested_oof",
    "load_prior",
    "lut_prior",
    "measurements_prior",
    "read_measurements",
    "prior_from_dict",
    "stack_models",
    "stack_weights",
    "suggest_archs",
]

#: Candidate models.
MODELS = ("nnls", "ridge-log", "macs-linear", "gbm-log", "prior-total", "prior-ops", "prior-ops+residual")
#: Fewest measured subnets a fit accepts (cross-validation needs them).
MIN_SAMPLES = 5
#: Fewest samples each model needs (it is skipped below).
MODEL_MIN_SAMPLES = {"nnls": 5, "ridge-log": 5, "macs-linear": 10, "gbm-log": 30, "prior-total": 5,
                     "prior-ops": 5, "prior-ops+residual": 8}
_TINY = 1e-9
#: The cost columns of a measurements prior saved without its ``costs`` (latency predictor format 2).
_V2_COSTS = ("mmacs", "dw_mmacs", "mparams", "act_in_mb", "act_out_mb", "act_mid_mb", "layers")
#: Weights of the stack: the sum-to-one row's weight against the log residuals (large: a hard constraint),
#: and the smallest weight kept (smaller ones are dropped and the rest renormalised).
_SUM_ROW = 1e3
_WEIGHT_FLOOR = 1e-3


# --------------------------------------------------------------------------------------------------------
# Features


@dataclass
class FeatureSet:
    """What the models see of ``n`` architectures: the structure features (``x``, named ``names``), the
    additive cost columns (``additive``: (n, groups, costs), group 0 the fixed entries, then the stages) and
    each prior's components (``priors``: one (n, groups_k) array per prior, summing to its prediction)."""

    names: list[str]
    x: np.ndarray
    additive: np.ndarray
    priors: list[np.ndarray]

    def take(self, rows: np.ndarray) -> FeatureSet:
        return FeatureSet(self.names, self.x[rows], self.additive[rows], [p[rows] for p in self.priors])

    def column(self, name: str) -> np.ndarray:
        return self.x[:, self.names.index(name)]


def features(space: Any, arrays: Mapping[str, np.ndarray], priors: Sequence[Prior] = ()) -> FeatureSet:
    """The :class:`FeatureSet` of the array form (validated by the space)."""
    names, x = structure_features(space, arrays)
    n, nc = x.shape[0], len(ENTRY_COSTS)
    additive = x[:, : (space.n_stages + 1) * nc].reshape(n, space.n_stages + 1, nc)
    return FeatureSet(names, x, additive, [p.components(space, arrays) for p in priors])


# --------------------------------------------------------------------------------------------------------
# Priors: what other devices say


class Prior:
    """Another device's latency, split into additive components (:meth:`components`, (n, groups)).

    ``kind`` is ``lut`` (a LUT's block table), ``measurements`` (an ``nnls`` model fitted on that device's
    end-to-end measurements) or ``model`` (a saved learned predictor: one component, its prediction)."""

    def __init__(self, *, kind: str, source: str, space: str, resolutions: Sequence[int], data: Mapping[str, Any]
                 ) -> None:
        self.kind = kind
        self.source = source
        self.space = space
        self.resolutions = tuple(int(r) for r in resolutions)
        self.data = dict(data)
        self._model: Any = None

    def components(self, space: Any, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        a = space.check_arrays(arrays)
        bad = ~np.isin(a["r"], self.resolutions)
        if bad.any():
            raise PredictorError(f"prior {self.source} has no latencies at resolution {int(a['r'][bad][0])} "
                                 f"(it holds {list(self.resolutions)})")
        if self.kind == "lut":
            block = np.asarray(self.data["block"], dtype=np.float64)  # (R, B, K, E)
            fixed = np.asarray(self.data["fixed"], dtype=np.float64)  # (R,)
            ri = np.searchsorted(np.asarray(self.resolutions), a["r"])
            ks_idx, e_idx = space.choice_indices(a)
            vals = block[ri[:, None], np.arange(space.n_blocks)[None, :], ks_idx, e_idx] * space.active_mask(a["d"])
            per_stage = vals.reshape(len(ri), space.n_stages, space.max_depth).sum(axis=2)
            return np.concatenate([fixed[ri][:, None], per_stage], axis=1)
        if self.kind == "measurements":
            coef = np.asarray(self.data["coef"], dtype=np.float64)  # (groups, costs)
            return np.einsum("ngc,gc->ng", features(space, a).additive, coef)
        if self._model is None:
            from .latency import LearnedLatency

            self._model = LearnedLatency.from_dict(self.data["model"], source=self.source)
        return self._model.predict_arrays(a)[:, None]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "space": self.space,
                "resolutions": list(self.resolutions), **self.data}


def prior_from_dict(payload: Mapping[str, Any], *, source: str) -> Prior:
    """A prior from its saved form. Raises PredictorError for a bad object."""
    try:
        kind = payload["kind"]
        data = {k: v for k, v in payload.items() if k not in ("kind", "source", "space", "resolutions")}
        need = {"lut": ("block", "fixed"), "measurements": ("coef",), "model": ("model",)}[kind]
        missing = [k for k in need if k not in data]
        if missing:
            raise KeyError(missing[0])
        if kind == "measurements":
            data.update(coef=_coef_by_cost(data["coef"], data.get("costs", _V2_COSTS), source).tolist(),
                        costs=list(ENTRY_COSTS))
        return Prior(kind=kind, source=str(payload.get("source", source)), space=str(payload["space"]),
                     resolutions=payload["resolutions"], data=data)
    except PredictorError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictorError(f"{source}: bad prior ({exc!r})") from None


def _coef_by_cost(coef: Any, costs: Sequence[str], source: str) -> np.ndarray:
    """A measurements prior's coefficients (groups, len(costs)) in the order of :data:`ENTRY_COSTS` (a cost
    it does not name gets 0). Raises PredictorError for an unknown cost or a shape that does not match."""
    c = np.asarray(coef, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != len(costs):
        raise PredictorError(f"{source}: a measurements prior's 'coef' must be (groups, {len(costs)} costs), "
                             f"got shape {c.shape}")
    out = np.zeros((c.shape[0], len(ENTRY_COSTS)))
    for j, name in enumerate(costs):
        if name not in ENTRY_COSTS:
            raise PredictorError(f"{source}: a measurements prior's cost {name!r} is not one of {list(ENTRY_COSTS)}")
        out[:, ENTRY_COSTS.index(name)] = c[:, j]
    return out


def lut_prior(lut: Any, space: Any, *, source: str | None = None) -> Prior:
    """A prior from another device's LUT (a :class:`~hwnas.profiler.lut.LUT`): its block latencies, grouped
    into the fixed part and each stage. Raises PredictorError when the LUT is of another space."""
    from .encoding import ArchEncoding
    from .latency import LUTLatency

    source = source or str(lut.source)
    if lut.space != space.name:
        raise PredictorError(f"prior {source}: a LUT of space {lut.space}, not {space.name}")
    lat = LUTLatency(lut, space=space)
    block, fixed = lat.block_table(ArchEncoding(space, resolutions=lat.resolutions))
    return Prior(kind="lut", source=source, space=space.name, resolutions=lat.resolutions,
                 data={"block": np.asarray(block).tolist(), "fixed": np.asarray(fixed).tolist()})


def load_prior(path: str | Path, space: Any) -> Prior:
    """A prior from a file: a LUT of another device, a CSV of its end-to-end measurements (columns
    ``arch``, ``latency_ms``) or a saved learned latency predictor. Raises PredictorError naming the file
    when it is unreadable or made for another space."""
    from ..profiler.lut import LUT

    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"prior {path}: no such file")
    head = path.read_bytes()[:64].lstrip()
    if head.startswith(b"# hwnas-lut"):
        return lut_prior(LUT.load(path), space, source=str(path))
    if head.startswith(b"{"):
        from .latency import LearnedLatency

        model = LearnedLatency.load(path)
        if model.space.name != space.name:
            raise PredictorError(f"prior {path}: a predictor of space {model.space.name}, not {space.name}")
        return Prior(kind="model", source=str(path), space=space.name, resolutions=model.resolutions,
                     data={"model": model.to_dict()})
    archs, ms = read_measurements(path, space)
    return measurements_prior(archs, ms, space, source=str(path))


def measurements_prior(archs: Sequence[Any], latency_ms: Sequence[float], space: Any, *, source: str) -> Prior:
    """A prior from another device's end-to-end measurements: the ``nnls`` additive model fitted on all
    of them (so that it predicts any subnet, split into the fixed part and each stage)."""
    parsed = [space.parse(a) for a in archs]
    y = np.asarray(latency_ms, dtype=np.float64)
    if len(y) < MIN_SAMPLES:
        raise PredictorError(f"prior {source}: {len(y)} measurements; a prior needs at least {MIN_SAMPLES}")
    coef = _nnls_additive(features(space, space.arrays_from_archs(parsed)).additive, y, lam=1e-3)
    return Prior(kind="measurements", source=source, space=space.name,
                 resolutions=sorted({int(a.r) for a in parsed}),
                 data={"coef": coef.tolist(), "costs": list(ENTRY_COSTS), "samples": len(y)})


def read_measurements(path: str | Path, space: Any, resolutions: Sequence[int] | None = None
                      ) -> tuple[list[Any], list[float]]:
    """(archs, latencies in ms) from a CSV with columns ``arch`` (JSON) and ``latency_ms``. Raises
    PredictorError naming the file and line of a missing column, a missing, non-numeric or non-positive
    latency, or an arch that is not one of ``space``'s."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"{path}: no such file")
    try:
        df = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PredictorError(f"{path}: not a CSV file ({str(exc).splitlines()[0]})") from None
    for col in ("arch", "latency_ms"):
        if col not in df.columns:
            raise PredictorError(f"{path}: missing column {col!r} (columns: {', '.join(map(str, df.columns))})")
    archs, ms = [], []
    for i, (arch, value) in enumerate(zip(df["arch"], df["latency_ms"], strict=True)):
        line = i + 2
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not str(value).strip():
            raise PredictorError(f"{path} line {line}: 'latency_ms' is missing")
        if not math.isfinite(v) or v <= 0:
            raise PredictorError(f"{path} line {line}: 'latency_ms' is {value!r}, expected a positive number (ms)")
        try:
            archs.append(space.parse(arch, resolutions=resolutions))
        except ValueError as exc:
            raise PredictorError(f"{path} line {line}: not an arch of space {space.name}: {exc}") from None
        ms.append(v)
    return archs, ms


# --------------------------------------------------------------------------------------------------------
# Models


def _nnls_additive(additive: np.ndarray, y: np.ndarray, *, lam: float) -> np.ndarray:
    """Non-negative coefficients (groups, costs) of latency ~ sum of costs x coefficients, on relative
    errors, with a small ridge penalty on the column-normalised coefficients."""
    from scipy.optimize import nnls

    n, g, c = additive.shape
    a = additive.reshape(n, g * c)
    scale = np.abs(a).max(axis=0)
    keep = scale > _TINY
    an = a[:, keep] / scale[keep]
    w = 1.0 / y
    lhs = np.vstack([an * w[:, None], math.sqrt(lam) * np.eye(an.shape[1])])
    rhs = np.concatenate([np.ones(n), np.zeros(an.shape[1])])
    sol, _ = nnls(lhs, rhs, maxiter=50 * lhs.shape[1])
    coef = np.zeros(g * c)
    coef[keep] = sol / scale[keep]
    return coef.reshape(g, c)


def _log_design(fs: FeatureSet) -> np.ndarray:
    """Log costs, stage shapes and the resolution: the inputs of the log-space models."""
    n = fs.x.shape[0]
    return np.concatenate([np.log1p(fs.additive.reshape(n, -1)), fs.x[:, fs.additive.shape[1] * fs.additive.shape[2]:]],
                          axis=1)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    return mean, np.where(sd > 1e-12, sd, 1.0)


def _ridge_log(x: np.ndarray, logy: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.linear_model import RidgeCV

    mean, sd = _standardise(x)
    model = RidgeCV(alphas=tuple(10.0 ** np.arange(-3, 4.5, 0.5))).fit((x - mean) / sd, logy)
    return lambda z: model.predict((z - mean) / sd)


def _prior_scales(comps: list[np.ndarray], y: np.ndarray, *, per_op: bool, lam: float = 0.1) -> np.ndarray:
    """Non-negative scales of the prior components (all priors side by side), fitted on relative errors;
    per operator group (``per_op``) shrunk toward each prior's own overall scale."""
    from scipy.optimize import lsq_linear

    if not per_op:
        cols = np.stack([c.sum(axis=1) for c in comps], axis=1)
        target = np.zeros(cols.shape[1])
    else:
        cols = np.concatenate(comps, axis=1)
        target = np.concatenate([np.full(c.shape[1], np.exp(np.mean(np.log(y / np.maximum(c.sum(axis=1), _TINY))))
                                         / len(comps)) for c in comps])
    w = 1.0 / y
    norm = np.maximum(np.median(cols * w[:, None], axis=0), _TINY)  # a column's typical share of latency
    lhs = cols * w[:, None] / norm
    rhs = np.ones(len(y))
    if per_op:
        lhs = np.vstack([lhs, math.sqrt(lam) * np.eye(cols.shape[1])])
        rhs = np.concatenate([rhs, math.sqrt(lam) * target * norm])
    sol = lsq_linear(lhs, rhs, bounds=(0.0, np.inf)).x
    return sol / norm


def fit_model(name: str, fs: FeatureSet, y: np.ndarray, *, seed: int = 0) -> Callable[[FeatureSet], np.ndarray]:
    """Fit model ``name`` (one of :data:`MODELS`) on features ``fs`` and latencies ``y`` (ms); returns the
    function predicting latency (ms) of other feature sets."""
    logy = np.log(y)
    if name == "nnls":
        coef = _nnls_additive(fs.additive, y, lam=1e-3)
        return lambda f: np.einsum("ngc,gc->n", f.additive, coef)
    if name == "macs-linear":
        cols = [0] + [fs.names.index(f"stage{s}.mmacs") for s in range(fs.additive.shape[1] - 1)]
        cols.append(fs.names.index("resolution"))

        def design(f: FeatureSet) -> np.ndarray:
            return np.concatenate([f.x[:, cols], np.ones((f.x.shape[0], 1))], axis=1)

        beta = np.linalg.lstsq(design(fs), y, rcond=None)[0]
        return lambda f: design(f) @ beta
    if name == "ridge-log":
        fn = _ridge_log(_log_design(fs), logy)
        return lambda f: np.exp(fn(_log_design(f)))
    if name == "gbm-log":
        from sklearn.ensemble import GradientBoostingRegressor

        gbm = GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.1, subsample=0.8,
                                        random_state=seed).fit(_log_design(fs), logy)
        return lambda f: np.exp(gbm.predict(_log_design(f)))
    if not fs.priors:
        raise PredictorError(f"model {name!r} needs a prior (--prior)")
    if name == "prior-total":
        s = _prior_scales(fs.priors, y, per_op=False)
        return lambda f: np.stack([c.sum(axis=1) for c in f.priors], axis=1) @ s
    s = _prior_scales(fs.priors, y, per_op=True)

    def base(f: FeatureSet) -> np.ndarray:
        return np.concatenate(f.priors, axis=1) @ s

    if name == "prior-ops":
        return base
    if name == "prior-ops+residual":
        fn = _ridge_log(_log_design(fs), logy - np.log(np.maximum(base(fs), _TINY)))
        return lambda f: np.maximum(base(f), _TINY) * np.exp(fn(_log_design(f)))
    raise PredictorError(f"unknown latency model {name!r}; expected one of {list(MODELS)}")


def candidates(n: int, has_prior: bool, models: Sequence[str] | None = None) -> list[str]:
    """The models tried with ``n`` samples."""
    names = list(MODELS if models is None else models)
    return [m for m in names if n >= MODEL_MIN_SAMPLES[m] and (has_prior or not m.startswith("prior"))]


def _folds(n: int, seed: int) -> list[np.ndarray]:
    if n <= 20:
        return [np.asarray([i]) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [order[k::10] for k in range(10)]


def _safe_predict(fn: Callable[[FeatureSet], np.ndarray], fs: FeatureSet, floor: float) -> np.ndarray:
    p = np.asarray(fn(fs), dtype=np.float64)
    return np.where(np.isfinite(p), np.maximum(p, floor), floor)


def stack_weights(oof: Mapping[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Non-negative weights summing to one, {model: weight}, of the least-squares fit of log ``y`` on the
    models' out-of-fold log predictions ``oof`` (weights under ``_WEIGHT_FLOOR`` dropped)."""
    from scipy.optimize import nnls

    names = list(oof)
    if len(names) == 1:
        return {names[0]: 1.0}
    logs = np.log(np.stack([oof[m] for m in names], axis=1))
    lhs = np.vstack([logs, np.full((1, len(names)), _SUM_ROW)])
    rhs = np.concatenate([np.log(y), [_SUM_ROW]])
    w = nnls(lhs, rhs, maxiter=50 * len(names))[0]
    w = np.where(w / w.sum() >= _WEIGHT_FLOOR, w, 0.0)  # the sum row keeps the sum at about 1
    return {m: float(v) for m, v in zip(names, w / w.sum(), strict=True) if v > 0}


def fit_stack(weights: Mapping[str, float], fs: FeatureSet, y: np.ndarray, *, seed: int = 0
              ) -> Callable[[FeatureSet], np.ndarray]:
    """Fit each model of ``weights`` on ``fs`` and ``y``; returns the function predicting their weighted
    geometric mean (ms), each model's prediction floored at a thousandth of the fastest sample (so the
    result is finite and positive)."""
    floor = float(np.min(y)) * 1e-3
    fns = {m: fit_model(m, fs, y, seed=seed) for m in weights}
    return lambda f: _geomean(weights, {m: _safe_predict(fn, f, floor) for m, fn in fns.items()})


def _geomean(weights: Mapping[str, float], preds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The stack's prediction: the geometric mean of the models' positive predictions ``preds`` with
    ``weights``."""
    return np.exp(sum(w * np.log(preds[m]) for m, w in weights.items()))


def stack_models(fs: FeatureSet, y: np.ndarray, *, models: Sequence[str] | None = None, seed: int = 0
                 ) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """Cross-validate every candidate and stack them; returns ({model: weight}, {model: mean absolute
    out-of-fold log error}, the stack's out-of-fold predictions with these weights)."""
    names = candidates(len(y), bool(fs.priors), models)
    if not names:
        raise PredictorError(f"no latency model can be fitted on {len(y)} samples "
                             f"(they need {min(MODEL_MIN_SAMPLES[m] for m in (models or MODELS))} or more)")
    oof = {name: _out_of_fold(fs, y, lambda sub, y_sub, name=name: {name: 1.0}, seed=seed) for name in names}
    scores = {name: float(np.mean(np.abs(np.log(oof[name] / y)))) for name in names}
    weights = stack_weights(oof, y)
    return weights, scores, _geomean(weights, oof)


def _out_of_fold(fs: FeatureSet, y: np.ndarray, pick: Callable[[FeatureSet, np.ndarray], Mapping[str, float]], *,
                 seed: int) -> np.ndarray:
    """Out-of-fold predictions: in each fold the stack ``pick(features, latencies)`` weighs for the other
    samples is fitted on them and predicts the fold (finite and positive: :func:`fit_stack` floors)."""
    pred = np.empty(len(y))
    for test in _folds(len(y), seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        sub, y_sub = fs.take(train), y[train]
        pred[test] = fit_stack(pick(sub, y_sub), sub, y_sub, seed=seed)(fs.take(test))
    return pred


def nested_oof(fs: FeatureSet, y: np.ndarray, *, models: Sequence[str] | None = None, seed: int = 0
               ) -> np.ndarray | None:
    """Out-of-fold predictions of the whole procedure, the stacking included: in each fold the candidates are
    cross-validated and stacked (:func:`stack_models`) on the other samples alone. The stack's own out-of-fold
    predictions (those :func:`stack_models` returns) were weighed on the very errors they are judged by and so
    are too good for an interval: with 10-20 samples the 90% intervals from the single best model's errors
    covered 71-84% of held-out subnets (BENCHMARKS.md). None where a fold leaves too few samples to fit any
    candidate."""
    smallest = len(y) - max(len(t) for t in _folds(len(y), seed))
    if not candidates(smallest, bool(fs.priors), models):
        return None
    return _out_of_fold(fs, y, lambda sub, y_sub: stack_models(sub, y_sub, models=models, seed=seed)[0], seed=seed)


def conformal_halfwidth(log_errors: np.ndarray, level: float) -> float:
    """The split-conformal half-width (log space) at ``level`` from absolute out-of-fold log errors."""
    e = np.sort(np.abs(np.asarray(log_errors, dtype=np.float64)))
    k = min(len(e), math.ceil((len(e) + 1) * level))
    return float(e[k - 1])


# --------------------------------------------------------------------------------------------------------
# Which subnets to measure


def suggest_archs(space: Any, n: int, *, resolutions: Sequence[int] | None = None, pool: Sequence[Any] | None = None,
                  pool_size: int = 4000, seed: int = 0) -> list[Any]:
    """``n`` architectures whose measurements teach a learned predictor most: the smallest and largest of
    a pool (``pool``, or ``pool_size`` random subnets at ``resolutions``, default the space's LUT
    resolutions) by MACs, then the pool members nearest the centres of k-means clusters in the space of log
    MACs, resolution, total depth and each stage's log MACs, so that they spread over all of these.
    Returns Arch objects in the pool's order of choice. Raises PredictorError for n < 1."""
    from sklearn.cluster import KMeans

    if n < 1:
        raise PredictorError(f"--suggest must be at least 1, got {n}")
    rs = space.lut_resolutions if resolutions is None else space.check_resolutions(resolutions)
    if pool is None:
        arrays = space.sample_arrays(np.random.default_rng(seed), pool_size, rs)
    else:
        arrays = space.arrays_from_archs(list(pool))
    names, x = structure_features(space, arrays)
    m = len(arrays["r"])
    if n >= m:
        return space.archs_from_arrays(arrays)
    macs = x[:, names.index("fixed.mmacs")] + sum(x[:, names.index(f"stage{s}.mmacs")] for s in range(space.n_stages))
    depth = sum(x[:, names.index(f"stage{s}.depth")] for s in range(space.n_stages))
    stage = np.log(np.stack([x[:, names.index(f"stage{s}.mmacs")] for s in range(space.n_stages)], axis=1))
    z = np.concatenate([np.log(macs)[:, None], arrays["r"][:, None].astype(float), depth[:, None], stage], axis=1)
    mean, sd = _standardise(z)
    z = (z - mean) / sd * np.asarray([2.0, 1.5, 1.5] + [0.5] * space.n_stages)
    chosen = [int(np.argmin(macs)), int(np.argmax(macs))][: n]
    if n > len(chosen):
        km = KMeans(n_clusters=n - len(chosen), n_init=3, random_state=seed).fit(z)
        for centre in km.cluster_centers_:
            d = np.sum((z - centre) ** 2, axis=1)
            d[chosen] = np.inf
            chosen.append(int(np.argmin(d)))
    picked = {k: v[chosen] for k, v in arrays.items()}
    return space.archs_from_arrays(picked)
