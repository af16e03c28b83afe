"""Exceptions of the search package."""

from __future__ import annotations


class SearchError(Exception):
    exit_code = 2


class PredictorError(SearchError, ValueError):
    """A predictor file is missing, corrupt, or made for another space/encoding."""


class BudgetError(SearchError, ValueError):
    """A budget or limit is not a positive number."""
