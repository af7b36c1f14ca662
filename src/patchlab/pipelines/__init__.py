"""Pipelines: the library functions behind the commands, with uniform keyword signatures
(the inputs positional; model, weights, device, seed and the rest keyword-only).
`patchlab.cli` only parses options, calls one of these and prints."""
from .apply import apply_to_files
from .atlas import atlas
from .dream import dream

__all__ = ["apply_to_files", "atlas", "dream"]
