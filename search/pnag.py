"""PNAG: a budget-conditioned Pareto-aware architecture generator (Guo et al., "Pareto-aware Neural
Architecture Generation for Diverse Computational Budgets", CVPR 2023).

Two learned pieces:

- :class:`ArchEvaluator`: an MLP scoring (architecture, training budget) pairs, trained with a pairwise
  ranking hinge loss under the paper's Pareto-dominance rule for a budget T: of two architectures that both
  fit T the more accurate ranks higher; of two that both exceed T the faster; and one that fits beats one
  that does not. Its data are architectures spread over the latency range, labelled by the accuracy and
  latency predictors, refreshed during training with the generator's own samples.
- :class:`Generator`: an LSTM emitting the architecture token by token (resolution, then per stage its
  depth and every block's kernel and expand ratio), conditioned on the budget through a learnable embedding
  per training budget; a budget in between uses the linear interpolation of its two neighbours' embeddings
  (outside the trained range: the nearest one). Tokens of blocks beyond their stage's depth do not count
  in the log-probability or the entropy. Trained by policy gradient (REINFORCE; the advantage of a sample
  is the centred rank of its evaluator score within its budget's batch, since the Pareto rule defines a
  ranking) with entropy regularisation.

The evaluator sees, beside the one-hot architecture and the one-hot training budget, the predicted latency
against the budget and the predicted accuracy: PNAG's evaluator sees the architecture alone because its
accuracies are costly; here both predictors are cheap, so the evaluator learns the rule's scalarisation per
budget instead of re-learning the predictors.

:class:`PNAGSearch` trains both on ``train_budgets`` (or uses a loaded generator) and answers any budget by
inference: it samples ``candidates`` architectures for the budget, repairs those that do not fit, keeps
the most accurate by the predictors, and refines the answer at inference time (``polish_top`` knapsack
polishes of the best distinct depth/resolution proposals, ``local_search_rounds`` of local search; set both
to 0 for the generator's samples alone) -- a few thousand predictor evaluations, a fraction of a second
per budget. The generator is saved as a plain versioned file (``torch.save`` of names, numbers and tensors;
loaded with ``weights_only=True``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..supernet.files import atomic_write
from .base import Interval, Options, Progress, Searcher, SearchProblem, check_budgets, single_threaded_blas
from .encoding import Genes
from .errors import PredictorError

log = logging.getLogger(__name__)

__all__ = ["GENERATOR_FORMAT", "PNAGSearch", "load_generator"]

GENERATOR_FORMAT = "hwnas-pnag-generator"
GENERATOR_VERSION = 1


def _torch() -> Any:
    import torch

    return torch


def _build_modules(n_features: int, n_budgets: int, hidden: int, token_sizes: Sequence[int], n_tokens: int) -> Any:
    """(generator, evaluator) torch modules; defined lazily so that importing this module needs no torch."""
    torch = _torch()
    nn = torch.nn

    class Generator(nn.Module):
        """LSTM over the arch tokens; see the module docstring."""

        def __init__(self) -> None:
            super().__init__()
            self.budget_embedding = nn.Parameter(torch.randn(n_budgets, hidden) * 0.1)
            self.token_embedding = nn.Embedding(sum(token_sizes) + 1, hidden)  # +1: the start token
            self.position_embedding = nn.Parameter(torch.zeros(n_tokens, hidden))
            self.lstm = nn.LSTMCell(hidden, hidden)
            self.heads = nn.ModuleList([nn.Linear(hidden, k) for k in token_sizes])
            for p in self.parameters():
                if p.dim() > 1 and p is not self.budget_embedding:
                    nn.init.uniform_(p, -0.1, 0.1)

    class ArchEvaluator(nn.Module):
        """MLP on (one-hot architecture, one-hot training budget) -> score."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(n_features + n_budgets + 3, 256), nn.ReLU(),
                nn.Linear(256, 256), nn.ReLU(),
                nn.Linear(256, 1),
            )

        def forward(self, x: Any) -> Any:
            return self.net(x).squeeze(-1)

    return Generator(), ArchEvaluator()


def pareto_labels(acc: Any, lat: Any, budget: float) -> Any:
    """Pairwise labels (n, n): +1 where row i should rank above column j under budget ``budget`` (the
    Pareto-dominance rule of the module docstring), -1 where below, 0 on the diagonal and for ties."""
    torch = _torch()
    fit = lat <= budget
    both_fit = fit[:, None] & fit[None, :]
    both_out = ~fit[:, None] & ~fit[None, :]
    by_acc = torch.sign(acc[:, None] - acc[None, :])
    by_lat = torch.sign(lat[None, :] - lat[:, None])  # faster ranks higher
    mixed = fit[:, None].float() - fit[None, :].float()
    return torch.where(both_fit, by_acc, torch.where(both_out, by_lat, mixed))


class PNAGSearch(Searcher):
    """Train (or load) the PNAG generator and answer budgets by inference (see the module docstring).

    Parameters
    ----------
    problem:
        The :class:`~.base.SearchProblem`.
    train_budgets:
        Budgets (ms) with a learnable embedding; None when a generator is loaded.
    iterations:
        Policy-gradient steps (each samples ``batch_size`` architectures per training budget).
    batch_size, lr, entropy_coeff, hidden_size:
        Generator training and size (PNAG: hidden 64).
    evaluator_samples, evaluator_epochs, refresh_every:
        Initial labelled data for the evaluator, its training epochs, and how often (iterations) the
        generator's samples are labelled, added and the evaluator fine-tuned (0: never).
    margin:
        Hinge-loss margin of the ranking loss.
    candidates:
        Architectures sampled per answered budget.
    polish_top, polish_rounds:
        Inference-time refinement: the best sampled architecture of each of the ``polish_top`` best
        distinct (resolution, depths) pairs gets ``polish_rounds`` rounds of
        :func:`~.evolution.knapsack_polish` (kernels and expand ratios re-chosen with the predictors;
        a few hundred evaluations each). 0: the generator's samples alone.
    local_search_rounds:
        Rounds of :func:`~.evolution.local_search` on the answer (single changes and up/down pairs;
        a few thousand evaluations a round). 0: none.
    seed:
        Seeds everything.
    """

    name: ClassVar[str] = "pnag"
    _parameters: ClassVar[dict[str, Interval | Options]] = {
        "iterations": Interval(int, 0, None),
        "batch_size": Interval(int, 2, None),
        "lr": Interval(float, 0.0, 1.0, closed_low=False),
        "entropy_coeff": Interval(float, 0.0, None),
        "hidden_size": Interval(int, 4, None),
        "evaluator_samples": Interval(int, 8, None),
        "evaluator_epochs": Interval(int, 1, None),
        "refresh_every": Interval(int, 0, None),
        "margin": Interval(float, 0.0, None),
        "candidates": Interval(int, 1, None),
        "polish_top": Interval(int, 0, None),
        "polish_rounds": Interval(int, 1, None),
        "local_search_rounds": Interval(int, 0, None),
        "seed": Interval(int, 0, None),
    }

    def __init__(
        self,
        *,
        problem: SearchProblem,
        train_budgets: Sequence[float] | None = None,
        iterations: int = 200,
        batch_size: int = 64,
        lr: float = 3e-3,
        entropy_coeff: float = 3e-3,
        hidden_size: int = 64,
        evaluator_samples: int = 4000,
        evaluator_epochs: int = 30,
        refresh_every: int = 25,
        margin: float = 0.1,
        candidates: int = 256,
        polish_top: int = 4,
        polish_rounds: int = 3,
        local_search_rounds: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__(problem=problem, seed=seed)
        self.train_budgets = train_budgets
        self.iterations = iterations
        self.batch_size = batch_size
        self.lr = lr
        self.entropy_coeff = entropy_coeff
        self.hidden_size = hidden_size
        self.evaluator_samples = evaluator_samples
        self.evaluator_epochs = evaluator_epochs
        self.refresh_every = refresh_every
        self.margin = margin
        self.candidates = candidates
        self.polish_top = polish_top
        self.polish_rounds = polish_rounds
        self.local_search_rounds = local_search_rounds

    # ---- token layout --------------------------------------------------------------------------------

    def _layout(self) -> tuple[list[int], list[tuple[str, int]]]:
        """(choices per token type [r, d, ks, e], the token sequence as (type, position))."""
        enc = self.problem.encoding
        sizes = [len(enc.resolutions), enc.nd, enc.nk, enc.ne]
        seq: list[tuple[str, int]] = [("r", 0)]
        for s in range(enc.n_stages):
            seq.append(("d", s))
            for j in range(enc.max_depth):
                b = s * enc.max_depth + j
                seq.append(("ks", b))
                seq.append(("e", b))
        return sizes, seq

    # ---- budgets -------------------------------------------------------------------------------------

    def _budget_embedding(self, budget: float) -> Any:
        """The (interpolated) embedding of ``budget``."""
        bs = self.budgets_
        emb = self.generator_.budget_embedding
        if budget <= bs[0]:
            return emb[0]
        if budget >= bs[-1]:
            return emb[-1]
        i = int(np.searchsorted(bs, budget) - 1)
        w = (budget - bs[i]) / (bs[i + 1] - bs[i])
        return emb[i] * (1 - w) + emb[i + 1] * w

    # ---- sampling ------------------------------------------------------------------------------------

    def _sample(self, budgets: Sequence[float], n: int, gen: Any, *, grad: bool) -> tuple[Genes, Any, Any]:
        """``n`` architectures for each of ``budgets`` in one batch (budget-major rows): (genes, log-prob,
        entropy), counting only tokens that matter (active blocks)."""
        torch = _torch()
        enc = self.problem.encoding
        sizes, seq = self._layout()
        type_index = {"r": 0, "d": 1, "ks": 2, "e": 3}
        offsets = np.cumsum([0, *sizes])
        g = self.generator_
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            cond = torch.cat([self._budget_embedding(b).expand(n, -1) for b in budgets], dim=0)
            n = n * len(budgets)
            h = torch.zeros(n, self.hidden_size_)
            c = torch.zeros(n, self.hidden_size_)
            x = g.token_embedding(torch.full((n,), int(offsets[-1]), dtype=torch.long)) + cond
            out = {
                "r": np.zeros(n, dtype=np.int16),
                "d": np.zeros((n, enc.n_stages), dtype=np.int8),
                "ks": np.zeros((n, enc.n_blocks), dtype=np.int8),
                "e": np.zeros((n, enc.n_blocks), dtype=np.int8),
            }
            logp = torch.zeros(n)
            ent = torch.zeros(n)
            for t, (kind, pos) in enumerate(seq):
                h, c = g.lstm(x + g.position_embedding[t], (h, c))
                logits = g.heads[type_index[kind]](h)
                logp_all = torch.log_softmax(logits, dim=-1)
                choice = torch.multinomial(logp_all.exp(), 1, generator=gen).squeeze(1)
                lp = logp_all.gather(1, choice[:, None]).squeeze(1)
                en = -(logp_all.exp() * logp_all).sum(-1)
                if kind in ("ks", "e"):
                    stage, j = divmod(pos, enc.max_depth)
                    mask = torch.from_numpy(enc.depths(Genes(out["ks"], out["e"], out["d"], out["r"]))[:, stage] > j).float()
                    lp, en = lp * mask, en * mask
                logp = logp + lp
                ent = ent + en
                ch = choice.numpy()
                if kind == "r":
                    out["r"][:] = ch
                else:
                    out[kind][:, pos] = ch
                x = g.token_embedding(choice + int(offsets[type_index[kind]])) + cond
        genes = Genes(ks=out["ks"], e=out["e"], d=out["d"], r=out["r"])
        return genes, logp, ent

    # ---- evaluator -----------------------------------------------------------------------------------

    def _eval_inputs(
        self, genes: Genes, budget_index: int, latency: np.ndarray | None = None, accuracy: np.ndarray | None = None
    ) -> Any:
        """Evaluator input: the one-hot architecture, the one-hot training budget, where the predicted
        latency lies against that budget (``lat / T - 1`` and ``lat <= T``) and the predicted accuracy
        (centred). PNAG's evaluator sees the architecture alone because its accuracies are costly; here the
        predictors are cheap, so it sees their outputs too and learns the Pareto rule's scalarisation for
        each budget instead of re-learning the predictors."""
        torch = _torch()
        x = self.problem.encoding.encode_genes(genes)
        lat = self.problem.latency(genes) if latency is None else latency
        acc = self.problem.accuracy(genes, count=False) if accuracy is None else accuracy
        b = float(self.budgets_[budget_index])
        extra = np.zeros((len(genes), len(self.budgets_) + 3), dtype=np.float32)
        extra[:, budget_index] = 1.0
        extra[:, -3] = np.clip(lat / b - 1.0, -1.0, 1.0)
        extra[:, -2] = lat <= b
        extra[:, -1] = (acc - self._acc_centre) * 10.0
        return torch.from_numpy(np.concatenate([x, extra], axis=1))

    def _train_evaluator(self, genes: Genes, acc: np.ndarray, lat: np.ndarray, epochs: int, gen: Any) -> float:
        """Pairwise hinge ranking loss under the Pareto-dominance rule, random budget per batch."""
        torch = _torch()
        ev = self.evaluator_
        opt = self._eval_opt
        n = len(genes)
        acc_t = torch.from_numpy(acc.astype(np.float32))
        lat_t = torch.from_numpy(lat.astype(np.float32))
        batch = 128
        last = 0.0
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen).numpy()
            for i in range(0, n - 1, batch):
                rows = perm[i : i + batch]
                if len(rows) < 2:
                    continue
                bi = int(torch.randint(len(self.budgets_), (1,), generator=gen))
                scores = ev(self._eval_inputs(genes.take(rows), bi, lat[rows], acc[rows]))
                labels = pareto_labels(acc_t[rows], lat_t[rows], float(self.budgets_[bi]))
                diff = scores[:, None] - scores[None, :]
                mask = labels > 0
                if not mask.any():
                    continue
                loss = torch.clamp(self.margin - diff[mask], min=0).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                last = float(loss.detach())
        return last

    # ---- training ------------------------------------------------------------------------------------

    def train(self, train_budgets: Sequence[float] | None = None, *, on_progress: Progress | None = None) -> PNAGSearch:
        """Train the evaluator and the generator on ``train_budgets`` (default: the parameter). Sets
        ``generator_``, ``budgets_``, ``train_seconds_``. Raises BudgetError for bad budgets."""
        torch = _torch()
        self._validate_params()
        budgets = sorted(set(check_budgets(train_budgets if train_budgets is not None else (self.train_budgets or []),
                                           "training budget")))
        problem = self.problem
        enc = problem.encoding
        start = time.perf_counter()
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.budgets_ = np.asarray(budgets, dtype=np.float64)
        self.hidden_size_ = self.hidden_size
        sizes, seq = self._layout()
        self.generator_, self.evaluator_ = _build_modules(enc.n_features, len(budgets), self.hidden_size, sizes, len(seq))
        self._eval_opt = torch.optim.Adam(self.evaluator_.parameters(), lr=1e-3)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with single_threaded_blas():
                # evaluator data: architectures spread from the fastest one to past the largest budget
                lo = problem.min_latency()[1]
                hi = budgets[-1] * 1.25
                data = enc.sample(rng, self.evaluator_samples)
                band = rng.integers(0, 10, len(data))
                for i, edge in enumerate(np.linspace(lo, hi, 11)[1:]):
                    rows = np.flatnonzero(band == i)
                    if len(rows) and edge >= lo:
                        part, _ = problem.repair(data.take(rows), float(edge), rng)
                        data.put(rows, part)
                d_lat = problem.latency(data)
                d_acc = problem.accuracy(data)
                self._acc_centre = float(np.mean(d_acc))
                self._train_evaluator(data, d_acc, d_lat, self.evaluator_epochs, gen)

                opt = torch.optim.Adam(self.generator_.parameters(), lr=self.lr)
                for it in range(self.iterations):
                    loss = torch.zeros(())
                    bs = self.batch_size
                    g_all, logp, ent = self._sample(budgets, bs, gen, grad=True)
                    for bi in range(len(budgets)):
                        rows = slice(bi * bs, (bi + 1) * bs)
                        g_b = g_all.take(rows)
                        with torch.no_grad():
                            reward = self.evaluator_(
                                self._eval_inputs(g_b, bi, None, problem.accuracy(g_b))
                            ).numpy().astype(np.float64)
                        # the Pareto rule defines a ranking, so the advantage is the centred rank of the
                        # evaluator's score in the batch (robust to its scale and to the gap between
                        # feasible and infeasible architectures)
                        adv = (np.argsort(np.argsort(reward, kind="stable"), kind="stable") / max(1, len(reward) - 1)) - 0.5
                        loss = loss - (torch.from_numpy(adv.astype(np.float32)) * logp[rows]).mean()
                        loss = loss - self.entropy_coeff * ent[rows].mean()
                    fresh = [g_all]
                    opt.zero_grad()
                    (loss / len(budgets)).backward()
                    torch.nn.utils.clip_grad_norm_(self.generator_.parameters(), 5.0)
                    opt.step()
                    if self.refresh_every and (it + 1) % self.refresh_every == 0:
                        new = Genes.concat(fresh)
                        data = Genes.concat([data, new])
                        d_lat = np.concatenate([d_lat, problem.latency(new)])
                        d_acc = np.concatenate([d_acc, problem.accuracy(new)])
                        self._train_evaluator(data, d_acc, d_lat, 2, gen)
                    if on_progress is not None:
                        on_progress(it + 1, self.iterations, "policy gradient")
        finally:
            torch.set_num_threads(threads)
        self.train_seconds_ = time.perf_counter() - start
        return self

    # ---- answering -----------------------------------------------------------------------------------

    def answer(self, budget: float, *, seed: int | None = None) -> dict[str, Any]:
        """One budget's answer by inference: sample ``candidates``, repair those that do not fit, keep the
        most accurate. Infeasible budgets give the infeasible result."""
        torch = _torch()
        self._check_trained()
        (budget,) = check_budgets([budget])
        problem = self.problem
        if problem.infeasible(budget):
            return problem.result(budget, None, 0, math.nan, math.nan)
        s = self.seed if seed is None else seed
        gen = torch.Generator().manual_seed(s)
        rng = np.random.default_rng(s)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with single_threaded_blas():
                g, _, _ = self._sample([budget], self.candidates, gen, grad=False)
                g, lat = problem.repair(g, budget, rng)
                ev = problem.evaluate(g, lat)
        finally:
            torch.set_num_threads(threads)
        ok = problem.feasible(g, budget, lat)
        j = int(np.argmax(np.where(ok, ev.accuracy, -np.inf)))
        best = (g.take(slice(j, j + 1)), float(lat[j]), float(ev.accuracy[j]))
        if self.polish_top:
            from .evolution import knapsack_polish

            order = np.argsort(-np.where(ok, ev.accuracy, -np.inf), kind="stable")
            order = order[ok[order]]
            keys = np.concatenate([g.d[order].astype(np.int64), g.r[order, None].astype(np.int64)], axis=1)
            _, first = np.unique(keys, axis=0, return_index=True)
            with single_threaded_blas():
                for row in order[np.sort(first)][: self.polish_top].tolist():
                    cand = knapsack_polish(problem, g.take(slice(row, row + 1)), float(lat[row]),
                                           float(ev.accuracy[row]), budget, rounds=self.polish_rounds)
                    if cand[2] > best[2]:
                        best = cand
        if self.local_search_rounds:
            from .evolution import local_search

            with single_threaded_blas():
                best = local_search(problem, best[0], best[1], best[2], budget, rounds=self.local_search_rounds)
        return problem.result(budget, best[0], 0, best[1], best[2])

    def _check_trained(self) -> None:
        if not hasattr(self, "generator_"):
            raise PredictorError("the PNAG generator is not trained; give training budgets or load a generator")

    def search(self, budgets: Sequence[float], *, on_progress: Progress | None = None) -> list[dict[str, Any]]:
        """Train first when not trained (on ``train_budgets``), then answer every budget by inference."""
        self._validate_params()
        budgets = check_budgets(budgets)
        self.train_seconds_ = getattr(self, "train_seconds_", None)
        if not hasattr(self, "generator_"):
            if not self.train_budgets:
                raise PredictorError("PNAG needs --train-budgets to train a generator, or a saved --generator")
            self.train(self.train_budgets, on_progress=on_progress)
        return super().search(budgets)

    def _search_feasible(self, budgets: list[float], on_progress: Progress | None) -> dict[float, dict[str, Any]]:
        return {b: self.answer(b) for b in budgets}

    # ---- files ---------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the generator (and the budgets, space, resolutions, predictors it was trained against)."""
        torch = _torch()
        self._check_trained()
        problem = self.problem
        payload = {
            "format": GENERATOR_FORMAT,
            "version": GENERATOR_VERSION,
            "space": problem.space.name,
            "encoding": problem.encoding.to_dict(),
            "resolutions": list(problem.encoding.resolutions),
            "train_budgets": [float(b) for b in self.budgets_],
            "hidden_size": int(self.hidden_size_),
            "train_seconds": float(self.train_seconds_ or 0.0),
            "latency": {k: str(v) for k, v in problem.latency_predictor.describe().items()},
            "state_dict": {k: v.detach().clone() for k, v in self.generator_.state_dict().items()},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: torch.save(payload, fh))
        return path

    def load(self, path: str | os.PathLike[str]) -> PNAGSearch:
        """Load a saved generator for this problem. Raises PredictorError for a missing or foreign file, or
        one made for another space or other resolutions."""
        from .accuracy import _torch_load

        payload = _torch_load(path)
        if not isinstance(payload, dict) or payload.get("format") != GENERATOR_FORMAT:
            raise PredictorError(f"{path}: not an hwnas PNAG generator (no format {GENERATOR_FORMAT!r})")
        if payload.get("version") != GENERATOR_VERSION:
            raise PredictorError(f"{path}: generator version {payload.get('version')!r}; expected {GENERATOR_VERSION}")
        problem = self.problem
        if payload.get("space") != problem.space.name:
            raise PredictorError(f"{path}: generator for space {payload.get('space')}, not {problem.space.name}")
        if list(payload.get("resolutions") or []) != list(problem.encoding.resolutions):
            raise PredictorError(
                f"{path}: generator for resolutions {payload.get('resolutions')}, the LUT holds "
                f"{list(problem.encoding.resolutions)}"
            )
        budgets = payload.get("train_budgets") or []
        hidden = payload.get("hidden_size")
        if not budgets or not isinstance(hidden, int):
            raise PredictorError(f"{path}: lacks train_budgets/hidden_size")
        self.budgets_ = np.asarray(budgets, dtype=np.float64)
        self.hidden_size_ = hidden
        sizes, seq = self._layout()
        self.generator_, self.evaluator_ = _build_modules(problem.encoding.n_features, len(budgets), hidden, sizes, len(seq))
        try:
            self.generator_.load_state_dict(payload["state_dict"])
        except (KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise PredictorError(f"{path}: generator weights do not fit ({first})") from None
        self.train_seconds_ = None
        return self


def load_generator(path: str | os.PathLike[str], problem: SearchProblem, *, seed: int = 0) -> PNAGSearch:
    """A :class:`PNAGSearch` answering from the generator saved at ``path``."""
    return PNAGSearch(problem=problem, seed=seed).load(path)
