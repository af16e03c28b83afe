"""Accuracy predictor: OFA's MLP over the one-hot arch encoding.

:class:`AccuracyPredictor` is OFA's design (``ofa/nas/accuracy_predictor/acc_predictor.py``): the encoding of
:mod:`.encoding`, ``n_layers`` hidden layers of ``hidden_size`` units with ReLU, a bias-free output unit,
and a constant ``base_acc`` added to it (OFA sets it to the mean top-1 of the training set, so that the
network learns the deviation). It is trained with torch (Adam, MSE) and predicts with float32 numpy
matmuls in batches -- no torch on the search's hot path.

Saved predictors are plain files: ``torch.save`` of a dict of names, numbers and tensors
(``{"format": "hwnas-accuracy-predictor", "version": 1, "space", "encoding", "hidden_size",
"n_layers", "metrics", "state_dict"}``), loaded back with ``torch.load(weights_only=True)``; no pickled
classes. :meth:`AccuracyPredictor.from_ofa_checkpoint` imports OFA's published predictor
(``acc_predictor.pth``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..supernet import get_space
from ..supernet.files import atomic_write
from .encoding import ArchEncoding, Genes
from .errors import PredictorError
from .params import Interval, check_params

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "AccuracyPredictor", "default_jobs", "generate_accuracy_dataset", "load_accuracy_predictor"]

FORMAT = "hwnas-accuracy-predictor"
VERSION = 1
#: Architectures per float32 matmul batch in :meth:`AccuracyPredictor.predict_genes`.
BATCH = 4096

Progress = Callable[[int, int, str], None]


class AccuracyPredictor:
    """OFA-style accuracy predictor (see the module docstring).

    Parameters
    ----------
    space:
        The space (name or object) whose architectures are predicted.
    hidden_size, n_layers:
        MLP shape (OFA: 400, 3).
    epochs, batch_size, lr, weight_decay:
        Training (Adam on MSE, cosine learning rate).
    val_fraction:
        Share of the samples held out to report Kendall tau and RMSE (OFA: 20%).
    seed:
        Seeds the split, the initialisation and the batches.

    Learned attributes: ``weights_`` (list of (W (in, out), b) float32, the last b None), ``base_acc_``,
    ``samples_``, ``kendall_tau_``, ``rmse_`` (None when imported), ``encoding_``.
    """

    def __init__(
        self,
        *,
        space: Any,
        hidden_size: int = 400,
        n_layers: int = 3,
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.space = space
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.seed = seed

    _PARAMS: dict[str, Interval] = {
        "hidden_size": Interval(int, 1, None),
        "n_layers": Interval(int, 1, None),
        "epochs": Interval(int, 1, None),
        "batch_size": Interval(int, 1, None),
        "seed": Interval(int, 0, None),
        "lr": Interval(float, 0.0, 10.0, closed_low=False),
        "weight_decay": Interval(float, 0.0, 1.0),
        "val_fraction": Interval(float, 0.0, 0.9),
    }

    def _validate_params(self) -> None:
        check_params(self, self._PARAMS)

    # ---- fitting -------------------------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return hasattr(self, "weights_")

    def fit(self, archs: Sequence[Any], top1: Sequence[float], *, on_progress: Progress | None = None) -> AccuracyPredictor:
        """Train on (architecture, top-1) pairs; top-1 as fractions in [0, 1].

        Holds out ``val_fraction`` of the pairs (shuffled by ``seed``) and records Kendall tau and RMSE on
        them (``kendall_tau_``, ``rmse_``). Raises PredictorError for unusable data."""
        import torch
        from scipy.stats import kendalltau

        self._validate_params()
        space = get_space(self.space)
        enc = ArchEncoding(space)
        y = np.asarray(top1, dtype=np.float64).reshape(-1)
        if len(archs) != len(y):
            raise PredictorError(f"{len(archs)} architectures but {len(y)} top-1 values")
        if len(y) < 5:
            raise PredictorError(f"need at least 5 (arch, top-1) pairs to fit, got {len(y)}")
        if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
            raise PredictorError("top-1 values must be fractions in [0, 1] (not percentages)")
        x = enc.encode(archs)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(y))
        n_val = int(round(len(y) * self.val_fraction))
        val, train = order[:n_val], order[n_val:]
        base = float(np.mean(y[train]))

        torch.manual_seed(self.seed)
        layers: list[Any] = []
        width = enc.n_features
        for _ in range(self.n_layers):
            layers += [torch.nn.Linear(width, self.hidden_size), torch.nn.ReLU()]
            width = self.hidden_size
        layers.append(torch.nn.Linear(width, 1, bias=False))
        net = torch.nn.Sequential(*layers)
        xt = torch.from_numpy(x[train])
        yt = torch.from_numpy((y[train] - base).astype(np.float32))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, math.ceil(len(train) / self.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        gen = torch.Generator().manual_seed(self.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a small MLP: a second thread gains little and spins on a busy machine
        try:
            for epoch in range(self.epochs):
                perm = torch.randperm(len(train), generator=gen)
                for i in range(0, len(train), self.batch_size):
                    idx = perm[i : i + self.batch_size]
                    loss = torch.nn.functional.mse_loss(net(xt[idx]).squeeze(1), yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                if on_progress is not None:
                    on_progress(epoch + 1, self.epochs, f"loss {float(loss.detach()):.2e}")
        finally:
            torch.set_num_threads(threads)

        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.encoding_ = enc
        self.weights_ = [
            (m.weight.detach().numpy().T.copy(), None if m.bias is None else m.bias.detach().numpy().copy())
            for m in linears
        ]
        self.base_acc_ = base
        self.samples_ = len(y)
        if n_val >= 2:
            pred = self.predict_arrays(enc.space.arrays_from_archs([archs[i] for i in val]))
            tau = kendalltau(pred, y[val]).statistic
            self.kendall_tau_ = None if not np.isfinite(tau) else float(tau)
            self.rmse_ = float(np.sqrt(np.mean((pred - y[val]) ** 2)))
        else:
            self.kendall_tau_ = None
            self.rmse_ = None
        return self

    # ---- prediction ----------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise PredictorError("this AccuracyPredictor is not fitted; call fit() or load() first")

    def predict_encoded(self, x: np.ndarray) -> np.ndarray:
        """Predicted top-1 (float32, (n,)) of already encoded architectures, clamped to [0, 1] (an MLP fitted
        to accuracies near 1 extrapolates above it)."""
        self._check_fitted()
        h = x
        for w, b in self.weights_[:-1]:
            h = h @ w
            if b is not None:
                h += b
            np.maximum(h, 0.0, out=h)
        w, b = self.weights_[-1]
        y = (h @ w).reshape(-1)
        if b is not None:
            y += b
        y += np.float32(self.base_acc_)
        return np.clip(y, 0.0, 1.0, out=y)

    def predict_genes(self, genes: Genes, encoding: ArchEncoding | None = None) -> np.ndarray:
        """Predicted top-1 (float64, (n,)) of index-form architectures (no validation), in batches.
        ``encoding`` is the one ``genes`` index into (its resolutions); default: the predictor's own."""
        self._check_fitted()
        n = len(genes)
        out = np.empty(n, dtype=np.float64)
        enc = self.encoding_ if encoding is None else encoding
        if enc.n_features != self.encoding_.n_features or enc.space.name != self.encoding_.space.name:
            raise PredictorError(
                f"architectures of space {enc.space.name} given to an accuracy predictor for {self.encoding_.space.name}"
            )
        buf = np.empty((min(BATCH, max(n, 1)), enc.n_features), dtype=np.float32)
        for i in range(0, n, BATCH):
            part = genes.take(slice(i, i + BATCH))
            x = enc.encode_genes(part, out=buf[: len(part)])
            out[i : i + len(part)] = self.predict_encoded(x)
        return out

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Predicted top-1 (float64 (n,)) of the array form ``{"ks", "e", "d", "r"}`` (validated)."""
        self._check_fitted()
        return self.predict_genes(self.encoding_.genes(arrays))

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        """Predicted top-1 of architectures (Arch, OFA dict or JSON)."""
        self._check_fitted()
        if not len(archs):
            return np.zeros(0)
        return self.predict_arrays(self.encoding_.space.arrays_from_archs(archs))

    @property
    def metrics_(self) -> dict[str, Any]:
        """``{"samples", "kendall_tau", "rmse"}`` of the fit (None when imported)."""
        self._check_fitted()
        return {"samples": self.samples_, "kendall_tau": self.kendall_tau_, "rmse": self.rmse_}

    @property
    def space_name(self) -> str:
        return get_space(self.space).name

    # ---- files ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"layers.{i}.weight", "layers.{i}.bias", "base_acc"}`` as torch tensors (torch's (out, in)
        weight layout)."""
        import torch

        self._check_fitted()
        sd: dict[str, Any] = {}
        for i, (w, b) in enumerate(self.weights_):
            sd[f"layers.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(w.T))
            if b is not None:
                sd[f"layers.{i}.bias"] = torch.from_numpy(b.copy())
        sd["base_acc"] = torch.tensor([self.base_acc_], dtype=torch.float32)
        return sd

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the predictor as a plain versioned file (see the module docstring)."""
        import torch

        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "space": self.encoding_.space.name,
            "encoding": self.encoding_.to_dict(),
            "hidden_size": int(self.weights_[0][0].shape[1]),
            "n_layers": len(self.weights_) - 1,
            "metrics": {
                "samples": self.samples_,
                "kendall_tau": self.kendall_tau_,
                "rmse": self.rmse_,
            },
            "state_dict": self.state_dict(),
        }
        atomic_write(path, lambda fh: torch.save(payload, fh))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, space: Any = None) -> AccuracyPredictor:
        """Read a file written by :meth:`save`; with ``space``, check that the predictor is for it.

        Raises PredictorError for a missing, corrupt or foreign file, or one for another space/encoding."""
        payload = _torch_load(path)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise PredictorError(f"{path}: not an hwnas accuracy predictor (no format {FORMAT!r})")
        if payload.get("version") != VERSION:
            raise PredictorError(f"{path}: accuracy predictor version {payload.get('version')!r}; expected {VERSION}")
        name = payload.get("space")
        try:
            sp = get_space(name)
        except Exception as exc:
            raise PredictorError(f"{path}: {exc}") from None
        if space is not None and get_space(space).name != sp.name:
            raise PredictorError(f"{path}: accuracy predictor for space {sp.name}, not {get_space(space).name}")
        enc = ArchEncoding(sp)
        enc.check_compatible(payload.get("encoding"), str(path))
        sd = payload.get("state_dict")
        if not isinstance(sd, dict):
            raise PredictorError(f"{path}: 'state_dict' is missing")
        n_layers = payload.get("n_layers")
        hidden = payload.get("hidden_size")
        if not isinstance(n_layers, int) or not isinstance(hidden, int):
            raise PredictorError(f"{path}: 'n_layers' and 'hidden_size' must be ints")
        weights = []
        for i in range(n_layers + 1):
            w = sd.get(f"layers.{i}.weight")
            b = sd.get(f"layers.{i}.bias")
            if w is None or (i < n_layers and b is None):
                raise PredictorError(f"{path}: state_dict lacks layers.{i}")
            weights.append((w, b))
        base = sd.get("base_acc")
        if base is None:
            raise PredictorError(f"{path}: state_dict lacks base_acc")
        pred = cls(space=sp.name, hidden_size=hidden, n_layers=n_layers)
        pred._set_weights(weights, float(base.reshape(-1)[0]), enc, str(path))
        metrics = payload.get("metrics") or {}
        pred.samples_ = metrics.get("samples")
        pred.kendall_tau_ = metrics.get("kendall_tau")
        pred.rmse_ = metrics.get("rmse")
        return pred

    @classmethod
    def from_ofa_checkpoint(cls, path: str | os.PathLike[str], *, space: Any = "ofa-mbv3-w1.2") -> AccuracyPredictor:
        """OFA's published accuracy predictor (``acc_predictor.pth``), predicting exactly what OFA's code
        predicts for the same architectures.

        Accepts the tutorial's ``nn.Sequential`` state dict (``0.weight`` .. ``6.bias``, the last layer's bias
        being the base accuracy) and ``ofa.nas``'s ``AccuracyPredictor`` state dict (``layers.0.0.weight`` ..
        ``layers.3.weight`` + ``base_acc``), optionally under ``"state_dict"``. Raises PredictorError when the
        file is not one of these or its input width does not match the space's encoding."""
        sd = _torch_load(path)
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise PredictorError(f"{path}: not a state dict")
        enc = ArchEncoding(space)
        weights: list[tuple[Any, Any]] = []
        base = 0.0
        if "0.weight" in sd:  # ofa.tutorial: Sequential(Linear, ReLU, ...)
            linear_ids = sorted(int(k.split(".")[0]) for k in sd if k.endswith(".weight"))
            for j, i in enumerate(linear_ids):
                b = sd.get(f"{i}.bias")
                if j == len(linear_ids) - 1 and b is not None:
                    base, b = float(b.reshape(-1)[0]), None
                weights.append((sd[f"{i}.weight"], b))
        elif "layers.0.0.weight" in sd:  # ofa.nas: layers = Sequential(Sequential(Linear, ReLU)..., Linear)
            i = 0
            while f"layers.{i}.0.weight" in sd:
                weights.append((sd[f"layers.{i}.0.weight"], sd.get(f"layers.{i}.0.bias")))
                i += 1
            if f"layers.{i}.weight" not in sd:
                raise PredictorError(f"{path}: lacks the output layer layers.{i}.weight")
            weights.append((sd[f"layers.{i}.weight"], sd.get(f"layers.{i}.bias")))
            if "base_acc" in sd:
                base = float(sd["base_acc"].reshape(-1)[0])
        else:
            keys = ", ".join(list(sd)[:4])
            raise PredictorError(f"{path}: not an OFA accuracy predictor state dict (keys: {keys}, ...)")
        if len(weights) < 2:
            raise PredictorError(f"{path}: expected at least 2 linear layers, found {len(weights)}")
        hidden = int(weights[0][0].shape[0])
        pred = cls(space=enc.space.name, hidden_size=hidden, n_layers=len(weights) - 1)
        pred._set_weights(weights, base, enc, str(path))
        pred.samples_ = None
        pred.kendall_tau_ = None
        pred.rmse_ = None
        return pred

    def _set_weights(self, weights: list[tuple[Any, Any]], base: float, enc: ArchEncoding, source: str) -> None:
        """Install torch-layout ((out, in)) weights, checking the shapes chain from the encoding to 1."""
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        width = enc.n_features
        for i, (w, b) in enumerate(weights):
            w = np.asarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w, dtype=np.float32)
            if w.ndim != 2 or w.shape[1] != width:
                raise PredictorError(
                    f"{source}: layer {i} weight has shape {tuple(w.shape)}, expected (*, {width})"
                    + (f" (the {enc.space.name} encoding has {width} inputs)" if i == 0 else "")
                )
            if b is not None:
                b = np.asarray(b.detach().cpu().numpy() if hasattr(b, "detach") else b, dtype=np.float32)
                if b.shape != (w.shape[0],):
                    raise PredictorError(f"{source}: layer {i} bias has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
            out.append((np.ascontiguousarray(w.T), b))
            width = w.shape[0]
        if width != 1:
            raise PredictorError(f"{source}: the last layer has {width} outputs, expected 1")
        self.encoding_ = enc
        self.weights_ = out
        self.base_acc_ = float(base)


def _torch_load(path: str | os.PathLike[str]) -> Any:
    import torch

    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"{path}: no such predictor file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and pickle raise many kinds of errors for a foreign or truncated file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictorError(f"{path}: not a readable predictor file ({first[:160]})") from None


def load_accuracy_predictor(path: str | os.PathLike[str], *, space: Any = None) -> AccuracyPredictor:
    """:meth:`AccuracyPredictor.load`."""
    return AccuracyPredictor.load(path, space=space)


# --------------------------------------------------------------------------------------------------------
# Accuracy data set from a trained supernet


def default_jobs() -> int:
    """Subnets :func:`generate_accuracy_dataset` evaluates side by side by default: one per core, at most 4
    (each holds its own subnet and activations; the checkpoint and the data sets are shared). Side by side
    beat one subnet on two threads quiet (0.81 against 0.93 s a subnet) and loaded (1.00 against 1.32 s;
    BENCHMARKS.md, "accuracy dataset, subnets evaluated side by side")."""
    return max(1, min(os.cpu_count() or 1, 4))


def generate_accuracy_dataset(
    ckpt: str | os.PathLike[str],
    samples: int,
    data: str,
    *,
    seed: int = 0,
    bn_images: int = 500,
    resolutions: Sequence[int] | None = None,
    jobs: int | None = None,
    on_progress: Progress | None = None,
) -> tuple[list[Any], list[float]]:
    """Sample ``samples`` subnets of the supernet checkpoint ``ckpt``, recalibrate each one's BN statistics
    on ``bn_images`` training images and evaluate its top-1 on the validation split of ``data``
    (``digits``, ``cifar10:PATH``, ``imagefolder:PATH``).

    Returns ``(archs, top1)`` (top-1 as fractions; the archs are the checkpoint's space's). The work is the supernet package's
    (:func:`hwnas.supernet.train.evaluate_arch`); this function only draws the architectures (uniformly,
    distinct, seeded) and evaluates them.

    ``jobs`` > 1 (default :func:`default_jobs`: one per core, at most 4) evaluates that many subnets at a time, each in a thread of this process (one copy of the
    checkpoint and the data sets), with torch's kernels on one thread each for the duration: on a few
    cores, subnets side by side use them better than one subnet's small kernels split across threads. The
    top-1 of every subnet is then the same as with ``jobs=1`` under ``torch.set_num_threads(1)`` (the same
    single-threaded arithmetic). Raises PredictorError for too few samples or a bad ``jobs``; the supernet
    package's errors for a bad checkpoint or data set."""
    from ..supernet.data import load_dataset
    from ..supernet.train import evaluate_arch, load_checkpoint

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 5:
        raise PredictorError(f"--samples must be an int >= 5, got {samples!r}")
    if jobs is None:
        jobs = default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PredictorError(f"jobs must be an int >= 1, got {jobs!r}")
    ckpt_data = load_checkpoint(ckpt)
    net = ckpt_data.supernet()
    space = net.space
    rs = space.check_resolutions(resolutions) if resolutions is not None else space.resolutions
    r_max = max(rs)
    train = load_dataset(data, resolution=r_max, split="train")
    val = load_dataset(data, resolution=r_max, split="val")
    rng = np.random.default_rng(seed)
    archs: list[Any] = []
    seen: set[Any] = set()
    for _ in range(100):  # distinct architectures; a tiny space may hold fewer than asked
        for a in space.archs_from_arrays(space.sample_arrays(rng, samples, rs)):
            if a not in seen and len(archs) < samples:
                seen.add(a)
                archs.append(a)
        if len(archs) >= samples:
            break

    def one(a: Any) -> float:
        return float(evaluate_arch(net, a, train=train, val=val, bn_images=bn_images, seed=seed))

    if jobs == 1:
        top1 = _collect(map(one, archs), len(archs), on_progress)
    else:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=min(jobs, len(archs)), thread_name_prefix="subnet-eval") as pool:
                top1 = _collect(pool.map(one, archs), len(archs), on_progress)  # in arch order
        finally:
            torch.set_num_threads(threads)
    return archs, top1


def _collect(results: Iterable[float], total: int, on_progress: Progress | None) -> list[float]:
    out = []
    for value in results:
        out.append(value)
        if on_progress is not None:
            on_progress(len(out), total, "subnet")
    return out
