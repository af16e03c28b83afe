"""Parameter validation for estimators, the scikit-learn way: one declarative table per class
(``{name: Interval(...) | Options(...)}``) and one message template for every class
("The 'lr' parameter of X must be a float in (0, inf). Got 0 instead.")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Interval", "Options", "check_params"]


@dataclass(frozen=True)
class Interval:
    """A number in ``[low, high]`` (``None``: unbounded); ``kind`` is ``int`` or ``float``."""

    kind: type
    low: float | None
    high: float | None
    closed_low: bool = True
    none_ok: bool = False
    closed_high: bool = True

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.none_ok
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, int | np.integer):
                return False
        elif not isinstance(value, int | float | np.integer | np.floating) or not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (not self.closed_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (not self.closed_high and value == self.high)))

    def describe(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        bracket = "[" if self.closed_low and self.low is not None else "("
        close = "]" if self.high is not None and self.closed_high else ")"
        text = f"{'an int' if self.kind is int else 'a float'} in {bracket}{lo}, {hi}{close}"
        return text + (" or None" if self.none_ok else "")


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def ok(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "a str among {" + ", ".join(repr(v) for v in self.values) + "}"


def check_params(
    owner: Any, rules: dict[str, Interval | Options], *, error: type[Exception] = ValueError
) -> None:
    """Check ``owner``'s attributes against ``rules`` (the class's one declarative table); ``error`` with
    one message template for the first that breaks its rule: "The 'lr' parameter of X must be a float in
    (0, inf). Got 0 instead."."""
    for key, rule in rules.items():
        value = getattr(owner, key)
        if not rule.ok(value):
            raise error(
                f"The {key!r} parameter of {type(owner).__name__} must be {rule.describe()}. "
                f"Got {value!r} instead."
            )
