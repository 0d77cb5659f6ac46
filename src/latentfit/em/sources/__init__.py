"""Where EM's data comes from: chunks of an array, file or iterable (chunks), tensors already
in memory (tensors), a fit streamed over a source (stream) and sharded over processes
(distributed). The package's public names are those of :mod:`~latentfit.em.sources.chunks`."""

from latentfit.em.sources import chunks
from latentfit.em.sources.chunks import *  # noqa: F403  (chunks.__all__, listed once there)

__all__ = chunks.__all__
