"""Pipelines: the library functions behind the commands, one module each, with uniform
keyword signatures (the inputs positional; model, weights, device, seed and the rest
keyword-only). `patchlab.cli` only parses options, calls one of these and prints; the
functions are exported from `patchlab` (audit lives in `patchlab.audits`). What every command
does first (inputs, classifier, class pair, run folder name, recorded config) is in `common`."""
