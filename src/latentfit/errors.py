"""The errors and warnings latentfit raises, in one place.

Every error a user can meet through the public API or the command line is a subclass of
:class:`LatentfitError` (itself a ``ValueError``, so code that catches ``ValueError`` keeps
working), scikit-learn's ``NotFittedError`` for a model used before ``fit`` (the convention
users switching from scikit-learn expect), or ``FileNotFoundError`` for a path that does not
exist. Each message names the argument, row, column, component or field at fault and says what
to try. A raw exception from torch, numpy or Python internals reaching the user is a bug.
"""

from __future__ import annotations

import sys

from sklearn.exceptions import NotFittedError

__all__ = [
    "DOCUMENTED_ERRORS",
    "ArgumentError",
    "BatchRowError",
    "CoarseScheduleWarning",
    "ConstantColumnWarning",
    "DataError",
    "DataTypeError",
    "DegenerateComponentWarning",
    "DivergedParticlesWarning",
    "HeywoodCaseWarning",
    "LatentfitError",
    "MissingDependencyError",
    "ModelFileError",
    "ModelFileWarning",
    "NotFittedError",
    "OutputError",
    "ParameterError",
    "PrecisionLossWarning",
    "PriorWarning",
    "ResourceLimitError",
    "StrandedChainWarning",
    "UnknownNameError",
    "VarianceFloorWarning",
    "user_stacklevel",
]


class LatentfitError(ValueError):
    """Base class of every error latentfit raises on purpose."""


class DataError(LatentfitError):
    """The data are not what the model accepts (shape, type, support, NaN/inf, names)."""


class BatchRowError(DataError):
    """A DataError about row ``row`` of the rows a function was given: ``message`` holds
    ``{row}`` (its text says ``row``). Code that gave those rows as a chunk of larger data
    (a data source read in chunks, an E-step batch, ``partial_fit`` over a file) re-raises it
    with :meth:`shifted`, so that the message names the row of the whole data."""

    def __init__(self, row: int, message: str):
        super().__init__(message.format(row=row))
        self.row, self.message = row, message

    def shifted(self, offset: int, prefix: str = "") -> BatchRowError:
        """The same error about row ``offset + row`` (the rows began at row ``offset``)."""
        return BatchRowError(
            offset + self.row, prefix.replace("{", "{{").replace("}", "}}") + self.message
        )


class DataTypeError(DataError, TypeError):
    """The data are of a type latentfit does not take (sparse, objects that are not numbers);
    also a ``TypeError``, as scikit-learn raises for such input."""


class ParameterError(LatentfitError):
    """A constructor argument, option or hand-set parameter is invalid."""


class ArgumentError(ParameterError, TypeError):
    """A public function called with arguments that do not fit its signature (one missing, one
    given twice, as when the order is swapped, or one it does not take); the message says the
    order it takes them in, with an example. Also a ``TypeError``, as Python raises."""


class UnknownNameError(ParameterError, KeyError):
    """A name looked up in a result (``result["nope"]``) that it does not hold; the message
    lists the names it does. Also a ``KeyError``, as a dict raises."""

    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0]) if self.args else ""


class ModelFileError(LatentfitError):
    """A model or checkpoint file cannot be read: not ours, damaged, tampered or too new."""


class ModelFileWarning(UserWarning):
    """A model file lacks a setting that later files record, written by an earlier latentfit:
    it is read as files without it always were, and the message says how and what to do."""


class OutputError(LatentfitError):
    """An output path cannot be written: it is an input, exists (without ``force``), is a
    folder, or its folder is missing or read-only. Raised before any work is done."""


class ResourceLimitError(LatentfitError, MemoryError):
    """A request would need more memory than the machine has; the message gives the size."""


class MissingDependencyError(LatentfitError, ImportError):
    """An optional dependency a feature needs is not installed (or this build of torch lacks
    the module); the message says what to install. Also an ``ImportError``, as Python raises."""


class StrandedChainWarning(RuntimeWarning):
    """A Markov chain was found far below the others in warm-up (a minor mode) and moved."""


class DivergedParticlesWarning(RuntimeWarning):
    """SVGD's particles ended far less probable than they started, or still jump by about
    their own spread every iteration: the step size threw them away from the density, or
    across it, instead of moving them onto it. The message says by how much."""


class CoarseScheduleWarning(UserWarning):
    """A diffusion model's noise schedule cannot be reversed well by Gaussian steps: one step
    turns what is still mostly data into mostly fresh noise (too few steps), or the last step
    leaves x_T far from the N(0, I) that sampling starts from. Its bound and samples are then
    poor; the message names the step and what to try."""


class CompileFallbackWarning(RuntimeWarning):
    """Compiled code was not used and its uncompiled twin ran instead: the sampler's
    ``compile=True`` (the step could not be compiled, or disagreed with the eager one; the
    same draws), or the CPU kernels of the sequence models (numba installed but failing to
    import; the torch kernels). The message says why."""


class CompileCacheWarning(RuntimeWarning):
    """Compiled code could not be kept on disk, so the next process compiles it again: the
    sampler's ``compile=True`` (a folder not writable, a child process that could not start,
    a graph that cannot be compiled ahead of time; it compiled in this process, waiting for
    it), or the CPU kernels of the sequence models (numba found no writable cache folder).
    The message says why."""


class DegenerateComponentWarning(RuntimeWarning):
    """A component sits on a handful of (near-)identical points with its variance at the
    regularisation floor: its likelihood is not a real fit (mclust reports such fits as NA)."""


class HeywoodCaseWarning(RuntimeWarning):
    """A factor model's fitted noise variance ended at its floor (a Heywood case): the factors
    explain that column entirely (an exact linear function of other columns, or a constant
    column), so its noise variance, and the likelihood, are the floor's, not the data's.
    scikit-learn clamps such a variance silently. The message names the columns and what to
    try (fewer factors, dropping the column)."""


class VarianceFloorWarning(RuntimeWarning):
    """An absolute variance floor (``reg_covar``, ``min_covar``) is large against the spread
    of a column of the data (data in units of 1e-80 against a floor of 1e-6): the fitted
    variances there are the floor's, not the data's. The message names the column, its
    variance, the argument and its value, and what to try."""


class ConstantColumnWarning(VarianceFloorWarning):
    """A column of the data a Gaussian model is fitted to holds one value in every row, or,
    under a full or tied covariance, is a linear function of other columns: the fitted
    variance along it is the model's floor (or prior), not the data's, so the log-likelihood,
    score, BIC and AIC gain a constant that grows without bound as the floor shrinks (the
    floors keep the fit itself finite, as in scikit-learn and hmmlearn, which say nothing).
    The message names the columns (their values, or the relation); dropping a column is the
    remedy."""


class PriorWarning(UserWarning):
    """A prior's default, kept for compatibility with the library users switch from, is not
    what its settings suggest for the data at hand (hmmlearn's spherical GMMHMM default is
    flat only when ``n_features == n_mix``): the message says what it does and the value
    that gives the intended update."""


class PrecisionLossWarning(RuntimeWarning):
    """A fitted variance keeps few or no digits: it is not far above the rounding error of
    the sums it was computed from (rows spread far beyond it about the point the sums were
    taken about), so its value is partly or wholly rounding's or the floor's, not the data's.
    The message names the component, the variance, the rounding level and what to try. Also
    said when float64 data read into a float32 model lose their spread to the cast (the
    column, the row of its largest value, and the spacing float32 holds there)."""


#: What a test of the public surface accepts as a clean failure.
DOCUMENTED_ERRORS = (LatentfitError, NotFittedError, FileNotFoundError)


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` made by the caller of this function that
    points at the first frame outside latentfit: the user's own line, however deep inside the
    package (estimator, EM driver, hooks) the warning is raised."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_globals.get("__name__", "").startswith("latentfit.") or _import_frame(frame)
    ):
        frame = frame.f_back
        # warnings.warn leaves the import system's frames out of its count (a warning raised
        # while latentfit imports a module on the user's call)
        level += frame is not None and not _import_frame(frame)
    return level


def _import_frame(frame) -> bool:
    """A frame of the import system, as ``warnings`` tells them (importlib's bootstrap)."""
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name
