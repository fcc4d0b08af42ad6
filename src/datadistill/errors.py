"""Every error the library raises on purpose derives from ``DatadistillError``: the CLI catches
that one class and prints its message. Each also derives from the built-in exception a caller
would expect (``ValueError``, ``KeyError``, ``FileNotFoundError``, ...), so ``except
ValueError`` keeps working."""
from __future__ import annotations


class DatadistillError(Exception):
    """Base class: a problem with the user's input, files or run that the message explains."""


class ConfigError(DatadistillError, ValueError):
    """A parameter or option that does not exist or has a value of the wrong type or range."""


class UnknownNameError(DatadistillError, KeyError):
    """A name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class IPCError(ConfigError):
    """A budget (examples per class) the data cannot provide."""


class DatasetNotFoundError(DatadistillError, FileNotFoundError):
    """The dataset files are not where we looked and could not be downloaded."""


class DataFormatError(DatadistillError, ValueError):
    """Files exist but do not hold what the loader expects (keys, shapes, labels)."""


class SummaryFormatError(DatadistillError, ValueError):
    """A saved summary (or checkpoint) folder is missing files or holds something else."""


class CheckpointError(DatadistillError, FileNotFoundError):
    """Nothing to resume from, or a checkpoint that does not belong to this run."""


class NonFiniteLossError(DatadistillError, FloatingPointError):
    """The loss or the summary became NaN/inf; the last good summary was kept."""


class KernelBuildError(DatadistillError, RuntimeError):
    """The fused CPU kernels could not be built (no C++ compiler or ninja, or a build error)."""
