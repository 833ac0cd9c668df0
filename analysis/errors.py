"""Typed refusals raised by the fitting code.

Every fit checks its input and raises one of these instead of returning a
law fitted to data that cannot support it. All are ``ValueError`` subclasses so
callers that only know the builtin still catch them.
"""

from __future__ import annotations

from common.errors import InputError  # bad input files: the one class every package raises

__all__ = ["FitError", "TooFewPoints", "OneModelSize", "OneDataSize", "NoInteriorMinimum", "NonFiniteLoss",
           "NonPositiveInput", "InputError", "NotIdentified"]


class FitError(ValueError):
    """A fit refused to run or to return a result; the message says why."""


class TooFewPoints(FitError):
    """Fewer observations than the fit needs to be determined."""


class OneModelSize(FitError):
    """All observations share one model size, so the N exponent is not identifiable."""


class OneDataSize(FitError):
    """All observations share one token count, so the D exponent is not identifiable."""


class NoInteriorMinimum(FitError):
    """An IsoFLOP profile has no minimum inside the sampled model sizes."""


class NonFiniteLoss(FitError):
    """A loss (or score) is NaN, infinite, or not positive, so its log is undefined."""


class NonPositiveInput(FitError):
    """A parameter count, token count or FLOP value is not a finite positive number."""


class NotIdentified(FitError):
    """A fit ran, but the data do not pin down some of its parameters, so nothing is drawn from it."""
