"""Where EM's data comes from: chunks of an array, file or iterable (chunks), tensors already
in memory (tensors), a fit streamed over a source (stream) and sharded over processes
(distributed)."""
