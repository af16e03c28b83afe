"""Exceptions of the supernet package (spaces, architectures, checkpoints, data)."""

from __future__ import annotations


class SupernetError(Exception):
    exit_code = 2


class SpaceError(SupernetError, ValueError):
    """Unknown search space, or a space asked for something it does not hold."""


class ArchError(SupernetError, ValueError):
    """An architecture is invalid for its space (the message names the field)."""


class CheckpointError(SupernetError, ValueError):
    """A checkpoint is missing, corrupt or belongs to another space."""


class DatasetError(SupernetError, ValueError):
    """An unknown dataset spec, or a dataset path with the wrong layout."""


class ExportError(SupernetError, RuntimeError):
    """A model could not be exported or its check against PyTorch failed, or a converter is missing."""

    exit_code = 1


class ExportUsageError(SupernetError, ValueError):
    """An unknown export format or dtype, or int8 without calibration data."""
