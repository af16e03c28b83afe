"""Exceptions of the profiler (LUT files, comparisons)."""

from __future__ import annotations


class ProfilerError(Exception):
    exit_code = 2


class LUTError(ProfilerError, ValueError):
    """A LUT file is missing, truncated, garbled, or lacks what is asked of it."""


class NotComparable(ProfilerError, ValueError):
    """Two LUTs measured different things and may not be compared."""
