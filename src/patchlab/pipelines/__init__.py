"""Pipelines: the library functions behind the commands, one module each, with uniform
keyword signatures (the inputs positional; model, weights, device, seed and the rest
keyword-only). `patchlab.cli` only parses options, calls one of these and prints; the
functions are exported from `patchlab` (probe and audit live in their own packages)."""
