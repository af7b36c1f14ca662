"""Patch generators: the registry, the plans, and one module per generator.

Importing this package registers the built-in generators, in the probe's stage order:
synth (Brown et al. 2017), feature (Carter et al. 2019), natural (Carter et al. 2019;
Casper et al. 2022). A new generator is one module with a `register_generator` function.
"""
from . import synth, feature, natural  # noqa: F401  (registration order = stage order)
from .plan import PLANS, Plan, get_plan
from .registry import (
    GeneratorJob, GeneratorSpec, generated_kinds, kind_labels, register_generator, registered, unregister_generator,
)

__all__ = [
    "GeneratorJob", "GeneratorSpec", "PLANS", "Plan", "generated_kinds", "get_plan", "kind_labels",
    "register_generator", "registered", "unregister_generator",
]
