"""How models are measured on a device: one settings type, its defaults, and their validation.

The same :class:`MeasureSettings` comes from a profile's ``measure:`` block (``device_profiles/NAME.yaml``),
is overridden by command-line flags (:meth:`MeasureSettings.replace`), travels to the on-device runner as
part of its job (:meth:`MeasureSettings.job`), and is written into a LUT's metadata
(:meth:`MeasureSettings.to_dict`). The defaults live here and nowhere else.

Sampling is adaptive: every model gets at least ``warmup`` untimed runs, then round-robin rounds with
the other models of its batch; after at least ``rounds`` rounds and ``runs`` timed runs spanning at least
``min_seconds`` (first timed run to last, the other models' rounds in between), it stops as soon as the
relative half-width of its statistic's 95% confidence interval is at most ``precision``, or when
``max_entry_s`` of work were spent on it (then it is marked unconverged). On a quiet device that is
``runs`` runs per model, or the fewest runs for which the statistic has an interval at all where that is more
(53 for ``p10_ms``: the runner plans its rounds for it, ``runner.min_runs_for_interval``); a noisy one samples
on until the interval is narrow enough.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ProfileError


@dataclass(frozen=True)
class MeasureSettings:
    """Measurement settings (the profile's ``measure:`` block, flags, the LUT's ``measurement`` metadata)."""

    warmup: int = 10  #: untimed runs before a model's first round
    runs: int = 50  #: timed runs per model, at least (split over the rounds)
    min_seconds: float = 0.2  #: a model's timed runs span at least this long (round-robin with its batch)
    cooldown_s: float = 0.0  #: pause after each model's round
    max_temp_c: float = 75.0  #: thermal gate: wait before a round while the device is hotter
    precision: float = 0.02  #: stop when the statistic's 95% CI half-width / statistic <= this
    max_entry_s: float = 10.0  #: ... or when this much work was spent on the model
    rounds: int = 3  #: round-robin rounds per batch, at least
    max_noise: float = 0.05  #: noise gate: wait while the noise floor is above this (a fraction)
    max_wait_s: float = 15.0  #: noise gate: wait at most this long for a quieter spell, then warn (a longer
    #: default cost a quiet-setting profile 63 s of its 11-12x over the earlier cost in BENCHMARKS.md)
    batch_size: int = 60  #: models per runner job (the reference workload is added to each). Each job starts
    #: ``processes`` runners and samples the reference to the precision in each, so fewer jobs cost less: for a
    #: w1.0@160 profile (113 models) 24 -> 40 (5 -> 3 jobs) cut its time outside the noise gate in 6 of 6 paired
    #: runs, and 40 -> 60 (3 -> 2 jobs) took it from 1.99x to 1.80x aadc330's on the quiet setting, fidelity
    #: (40/40 within ±5% in all 8 rows) and lut diff's false findings (3 against 4 in 4 pairs) no different
    #: (BENCHMARKS.md, section 000000000)
    processes: int = 2  #: runner processes each LUT entry is measured in; it keeps its fastest (by its
    #: statistic over the reference of its own process; whole subnets are measured in one). On this shared host
    #: one process in 6-12 ran one model 30-40% slower for its whole life while its other models were not. With 2,
    #: `lut diff` of back-to-back profiles held its targets (no false positive, the edited entries found
    #: exactly) in 5 of 12 pairs against 1 of 12 (13 false positives against 27), for 1.83x aadc330's
    #: profiling time against 1.37x on the quiet setting; the LUT's
    #: fidelity did not change beyond the drift's noise (BENCHMARKS.md, section 00000000)
    reference_sessions: int = 1  #: sessions of the reference workload in every runner process, spread over
    #: its batch; the process's reference is their median. One session of a model can run slower for its whole
    #: life (1 runner process in 12 here timed one of three reference sessions 26% slower than the two beside
    #: it), but 3 sessions cost a w1.0@160 profile 1.8x the time on the quiet setting (each samples the
    #: largest subnet to the precision) without a fidelity gain that 2 paired repeats could show, and
    #: `lut diff` takes each runner job's speed out itself (BENCHMARKS.md, section 0000000000)
    profile_ops: bool = False  #: also record per-operator timings
    statistic: str | None = None  #: the statistic sampling aims at; None: the runtime's (agents/runtimes.py)

    def replace(self, **changes: Any) -> MeasureSettings:
        """A copy with the non-None ``changes`` (command-line flags) applied and validated."""
        data = {k: v for k, v in changes.items() if v is not None}
        return from_mapping({**self.to_dict(), **data}, source="command line", prefix="--", allowed=FIELDS,
                            names=FLAG_NAMES)  # each flag named as it is typed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def job(self) -> dict[str, Any]:
        """The runner job's measurement keys (``agents/runner.py`` reads exactly these)."""
        return {
            "warmup": self.warmup,
            "runs": self.runs,
            "min_seconds": self.min_seconds,
            "rounds": self.rounds,
            "cooldown_s": self.cooldown_s,
            "max_temp_c": self.max_temp_c,
            "precision": self.precision,
            "max_entry_s": self.max_entry_s,
        }

    def describe(self) -> str:
        return (f"at least {self.runs} runs in {self.rounds} rounds, until the CI is within ±{self.precision:.1%}"
                f" or {self.max_entry_s:g} s per model")


DEFAULTS = MeasureSettings()
#: Every field of the type; :data:`PROFILE_FIELDS` those a profile's ``measure:`` block may set.
FIELDS = tuple(f.name for f in dataclasses.fields(MeasureSettings))
PROFILE_FIELDS = tuple(f for f in FIELDS if f not in ("batch_size", "profile_ops", "statistic"))
#: The command-line flag of each field: ``--`` and its name with dashes, but ``--max-wait``.
FLAG_NAMES = {f: {"max_wait_s": "--max-wait"}.get(f, "--" + f.replace("_", "-")) for f in FIELDS}
#: Statistics sampling can aim at (see ``runner.relative_ci``).
STATISTICS = ("median_ms", "p10_ms", "p90_ms", "min_ms", "mean_ms", "tmean_ms")

# (kind, lower bound, bound included): integers >= 1 where zero makes no sense.
_RULES: dict[str, tuple[type, float, bool]] = {
    "warmup": (int, 0, True),
    "runs": (int, 1, True),
    "min_seconds": (float, 0, True),
    "cooldown_s": (float, 0, True),
    "max_temp_c": (float, 0, False),
    "precision": (float, 0, False),
    "max_entry_s": (float, 0, False),
    "rounds": (int, 1, True),
    "max_noise": (float, 0, False),
    "max_wait_s": (float, 0, True),
    "batch_size": (int, 1, True),
    "processes": (int, 1, True),
    "reference_sessions": (int, 1, True),
}


def _check(source: str, name: str, value: Any, field: str) -> Any:
    if field == "statistic":
        if value is not None and value not in STATISTICS:
            raise ProfileError(f"{source}: {name} must be one of {', '.join(STATISTICS)}, got {value!r}")
        return value
    if field == "profile_ops":
        if not isinstance(value, bool):
            raise ProfileError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    kind, low, inclusive = _RULES[field]
    what = "an integer" if kind is int else "a number"
    bound = f"{'>=' if inclusive else '>'} {low:g}"
    ok_type = not isinstance(value, bool) and (
        isinstance(value, int) if kind is int else isinstance(value, (int, float))
    )
    if kind is int and isinstance(value, float) and value.is_integer():
        value, ok_type = int(value), True
    if not ok_type or not math.isfinite(value) or (value < low if inclusive else value <= low):
        raise ProfileError(f"{source}: {name} must be {what} {bound}, got {value!r}")
    return kind(value)


def from_mapping(
    data: Mapping[str, Any] | None,
    *,
    source: str,
    prefix: str = "measure.",
    allowed: tuple[str, ...] = PROFILE_FIELDS,
    base: MeasureSettings = DEFAULTS,
    names: Mapping[str, str] | None = None,
) -> MeasureSettings:
    """Validated settings from ``data`` over ``base``; a ProfileError (exit 2) names the file and the field
    (``device_profiles/x.yaml: measure.runs must be an integer >= 1, got 0``)."""
    import difflib

    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: {prefix.rstrip('.')} must be a mapping, got {data!r}")
    values = base.to_dict()
    for key, value in data.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProfileError(f"{source}: unknown field {prefix}{key!r}{hint}; allowed: {', '.join(allowed)}")
        values[key] = _check(source, (names or {}).get(key, f"{prefix}{key}"), value, key)
    return MeasureSettings(**values)


__all__ = ["DEFAULTS", "FIELDS", "PROFILE_FIELDS", "MeasureSettings", "from_mapping"]
