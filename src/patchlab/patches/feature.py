"""Feature patches: the pair's separating direction rendered as a patch.

Carter et al. 2019 ("Activation Atlas") found that the features separating two
close classes flip one into the other when pasted. Here the direction is
d = w_target - w_source of the linear head on pooled features (or any
direction at the feature layer, e.g. the mean of target-favoring atlas cells),
and a patch is rendered with the feature-visualization engine to maximize the
atlas objective dot(f, d) * cos(f, d)^n of its own features (Fourier
parameterization, transformation robustness; Olah et al. 2017). It is never
optimized against source images: what it carries is the feature, not a
data-specific perturbation.

Donor-disguised patches add lambda * log p(donor) for the patch alone, so the
model calls the patch a donor class (from atlas donor discovery) while the
patch still carries the separating direction: the automated form of the
article's train / noodles / baseball patches.

`tune_feature_patch` then optionally fine-tunes a rendered patch with EOT on
source training images (Brown et al. 2017), keeping it feature-like by a
penalty on the loss of cos(f_patch, d) and, for disguised patches, on
log p(donor) of the patch alone.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..optvis import objectives as obj
from ..optvis.render import render
from .candidate import Candidate
from .direction import pair_direction, pooled_features
from .synth import synthesize_patch


def feature_patches(
    classifier,
    source: int,
    target: int,
    direction: torch.Tensor | None = None,
    n_plain: int = 2,
    donors: Sequence[int] = (),
    disguise_weight: float = 0.5,
    patch_px: int = 128,
    steps: int = 128,
    cos_power: float = 2.0,
    lr: float = 0.05,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[Candidate]:
    """Render `n_plain` direction patches and one donor-disguised patch per donor, in one batch.

    Returns Candidates of kind "feature" (disguised ones carry provenance
    donor_class); reads_as holds what the model calls each patch alone.
    """
    d = pair_direction(classifier, source, target) if direction is None else direction.float()
    layer = classifier.feature_layer
    n = n_plain + len(donors)
    if n == 0:
        return []
    donor_idx = torch.tensor([target] * n_plain + list(donors), dtype=torch.long)
    weights = torch.tensor([0.0] * n_plain + [disguise_weight] * len(donors))
    disguise = obj.Objective(
        lambda ctx: ctx.rows(weights) * obj.class_logprob(donor_idx)(ctx), name=f"{disguise_weight}*logp[donor]"
    )
    objective = obj.direction(layer, d, cos_power=cos_power, pooled=True) + disguise
    result = render(classifier, objective, n, size=patch_px, steps=steps, lr=lr, generator=generator, progress=progress)
    with torch.no_grad():
        probs = classifier.logits(result.images).softmax(-1).cpu()
        looks = [r[0] for r in classifier.classes.top(probs)]
        feats = pooled_features(classifier, result.images)
        cos = F.cosine_similarity(feats, d.to(feats.device)[None], dim=1).cpu()
    names = classifier.classes
    out = []
    for i in range(n):
        prov = {
            "method": "optvis render of the pair direction (Carter et al. 2019 atlas objective)",
            "direction": "w_target - w_source at the head" if direction is None else "given direction",
            "layer": layer, "cos_power": cos_power, "steps": steps, "patch_px": patch_px,
            "feature_cos": round(float(cos[i]), 4),
        }
        name = f"feature-{i + 1}"
        if i >= n_plain:
            donor = int(donor_idx[i])
            prov.update({"donor_class": donor, "donor_name": names.label(donor), "disguise_weight": disguise_weight,
                         "p_donor_alone": round(float(probs[i, donor]), 4)})
            name = f"feature-disguised-{names.slug(donor)}"
        out.append(Candidate(result.images[i].cpu(), "feature", name, provenance=prov, curve=[],
                             reads_as=looks[i]))
    return out


def tune_feature_patches(
    classifier,
    rendered: Sequence[Candidate],
    train_images: torch.Tensor,
    source: int,
    target: int,
    steps: int = 60,
    feature_weight: float = 1.0,
    disguise_weight: float = 1.0,
    area: tuple[float, float] = (0.1, 0.3),
    lr: float = 0.05,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[Candidate]:
    """Fine-tune rendered feature patches with EOT on source training images (Brown et al. 2017).

    Loss = CE(target | patch pasted on source images)
           - feature_weight * cos(f(patch alone), d)            (stay feature-like)
           + disguise_weight * CE(donor | patch alone)          (disguised patches only)
    Feature-likeness is measured as cos(f(patch alone), d) at the feature
    layer, reported before ("feature_cos_rendered") and after ("feature_cos").
    """
    d = pair_direction(classifier, source, target).to(classifier.device)
    layer = classifier.feature_layer
    out = []
    for cand in rendered:
        donor = cand.provenance.get("donor_class")

        def patch_loss(patch: torch.Tensor, donor=donor) -> torch.Tensor:
            logits, acts = classifier.run(patch[None], [layer])
            f = acts[layer].float().mean(dim=(2, 3))
            loss = -feature_weight * F.cosine_similarity(f, d[None], dim=1).mean()
            if donor is not None:
                loss = loss + disguise_weight * F.cross_entropy(logits.float(), torch.tensor([donor], device=logits.device))
            return loss

        tuned = synthesize_patch(
            classifier, train_images, target, source, steps=steps, patch_px=cand.patch.shape[-1], area=area, lr=lr,
            generator=generator, progress=progress, init=cand.patch, patch_loss=patch_loss,
            name=cand.name.replace("feature-", "feature-tuned-", 1),
        )
        with torch.no_grad():
            cos = float(F.cosine_similarity(pooled_features(classifier, tuned.patch[None]), d[None], dim=1))
            p_alone = classifier.logits(tuned.patch[None].to(classifier.device)).softmax(-1)[0]
        prov = dict(cand.provenance)
        prov.update({
            "method": "feature patch tuned with EOT on source training images (Brown et al. 2017) "
                      "with feature-likeness" + (" and disguise" if donor is not None else "") + " penalties",
            "tune_steps": steps, "tune_area": list(area), "feature_weight": feature_weight,
            "feature_cos_rendered": cand.provenance.get("feature_cos"), "feature_cos": round(cos, 4),
            "train_images": int(train_images.shape[0]),
        })
        if donor is not None:
            prov.update({"disguise_weight_tune": disguise_weight, "p_donor_alone": round(float(p_alone[donor]), 4)})
        out.append(Candidate(tuned.patch, "feature", tuned.name, provenance=prov, curve=tuned.curve,
                             score=tuned.score, reads_as=tuned.reads_as))
    return out

