"""The synth generator: one universal targeted patch trained with expectation over
transformation on the pair's train images (Brown et al. 2017, "Adversarial Patch",
arXiv:1712.09665). The optimisation is `patchlab.patches.synth.synthesize_patch`.

Settings: steps (Adam steps; quick 100, standard 200, thorough 500). Returns one
Candidate of kind "synth", named synth-SOURCE-to-TARGET.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..patches.candidate import Candidate
from ..patches.synth import synthesize_patch
from .registry import GeneratorJob, register_generator


@dataclass(frozen=True)
class SynthSettings:
    """steps: optimisation steps of the EOT patch."""

    steps: int

    @classmethod
    def preset(cls, plan: str) -> "SynthSettings":
        return cls(steps={"quick": 100, "standard": 200, "thorough": 500}[plan])


@register_generator("synth", kind="synth", label="optimized (synth)", disguisable=False, settings=SynthSettings)
def propose(job: GeneratorJob, settings: SynthSettings) -> list[Candidate]:
    """One universal targeted EOT patch (Brown et al. 2017) trained on the pair's train images."""
    pair = job.pair
    return [synthesize_patch(job.classifier, pair.train, pair.target, pair.source, steps=settings.steps,
                             generator=job.rng, progress=job.progress)]
