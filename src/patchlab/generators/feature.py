"""The feature generator: the pair's separating direction rendered as a patch, plain and
disguised as each top atlas donor (Carter et al. 2019, "Activation Atlas"), then tuned
with EOT on the pair's train images (Brown et al. 2017). Rendering and tuning are
`patchlab.patches.feature`.

Settings: plain (direction patches without disguise), steps (render steps), tune_steps
(EOT tuning steps; 0: no tuning), evaluate_untuned_disguised (also hand on the disguised
patches before tuning). Returns Candidates of kind "feature"; disguised ones carry a
donor class, so they count as disguised when the patch alone does not read as the target.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..patches.candidate import Candidate
from ..patches.feature import feature_patches, tune_feature_patches
from .registry import GeneratorJob, register_generator


@dataclass(frozen=True)
class FeatureSettings:
    """How many plain patches, render steps, EOT tuning steps, and whether untuned disguised patches are kept."""

    plain: int
    steps: int
    tune_steps: int
    evaluate_untuned_disguised: bool = True

    @classmethod
    def preset(cls, plan: str) -> "FeatureSettings":
        return {"quick": cls(plain=1, steps=96, tune_steps=40, evaluate_untuned_disguised=False),
                "standard": cls(plain=2, steps=160, tune_steps=80),
                "thorough": cls(plain=4, steps=256, tune_steps=160)}[plan]


@register_generator("feature", kind="feature", label="feature / disguised", disguisable=True,
                    settings=FeatureSettings)
def propose(job: GeneratorJob, settings: FeatureSettings) -> list[Candidate]:
    """The pair direction rendered plain and disguised as each top donor (Carter et al. 2019),
    then EOT-tuned on the train images (Brown et al. 2017)."""
    clf, pair = job.classifier, job.pair
    if clf.direction_head is None:
        job.notes["skipped"] = (f"{clf.spec} has no linear head on its feature layer, so there is no pair direction "
                                "(w_target - w_source) to render: no feature candidates")
        return []
    rendered = feature_patches(clf, pair.source, pair.target, n_plain=settings.plain,
                               donors=job.donors[: job.plan.n_donors_used], steps=settings.steps, generator=job.rng,
                               progress=job.progress)
    tuned = tune_feature_patches(clf, rendered, pair.train, pair.source, pair.target, steps=settings.tune_steps,
                                 generator=job.rng, progress=job.progress) if settings.tune_steps else []
    if not settings.evaluate_untuned_disguised:  # their tuned versions are evaluated instead
        rendered = [c for c in rendered if "donor_class" not in c.provenance]
    return rendered + tuned
