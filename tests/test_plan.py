"""Plans and the generator registry: presets, manifests written before plans had generator
settings, and settings checked when a generator is registered (no model is run)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from patchlab.errors import UserError
from patchlab.generators import PLANS, Plan, generated_kinds, get_plan, kind_labels, register_generator, registered
from patchlab.generators.registry import PLAN_NAMES, disguisable_kinds
from patchlab.library import SearchSettings
from patchlab.patches.natural import DonorCropSettings

# config.plan of probe manifests written before the plan held generator settings (flat Budget fields)
OLD_MANIFEST_PLANS = {
    "quick": {"n_train": 8, "n_selection": 8, "n_confirmation": 16, "n_target": 2, "shortlist": 6, "donor_images": 2,
              "n_donors_used": 2, "synth_steps": 100, "feature_plain": 1, "feature_steps": 96, "tune_steps": 40,
              "natural_top": 3, "sizes": [0.1, 0.25], "protocols": ["static", "dynamic", "random"],
              "positions": ["top-left", "top-right", "bottom-left", "bottom-right"], "random_placements": 1,
              "icons": False, "evaluate_untuned_disguised": False, "library_controls": 8,
              "natural": {"coarse_images": 3, "fine_keep": 12, "fine_areas": [0.2]}, "library_search": {}},
    "standard": {"n_train": 16, "n_selection": 16, "n_confirmation": 32, "n_target": 4, "shortlist": 12,
                 "donor_images": 3, "n_donors_used": 3, "synth_steps": 200, "feature_plain": 2, "feature_steps": 160,
                 "tune_steps": 80, "natural_top": 6, "sizes": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4],
                 "protocols": ["static", "dynamic", "random"],
                 "positions": ["top-left", "top-right", "bottom-left", "bottom-right", "center"],
                 "random_placements": 4, "icons": False, "evaluate_untuned_disguised": True, "library_controls": 20,
                 "natural": {}, "library_search": {}},
    "thorough": {"n_train": 32, "n_selection": 32, "n_confirmation": 64, "n_target": 8, "shortlist": 24,
                 "donor_images": 4, "n_donors_used": 4, "synth_steps": 500, "feature_plain": 4, "feature_steps": 256,
                 "tune_steps": 160, "natural_top": 10, "sizes": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4],
                 "protocols": ["static", "dynamic", "random"],
                 "positions": ["top-left", "top-right", "bottom-left", "bottom-right", "center"],
                 "random_placements": 8, "icons": True, "evaluate_untuned_disguised": True, "library_controls": 20,
                 "natural": {}, "library_search": {}},
}


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_presets_hold_the_values_old_manifests_recorded(name):
    """Each plan, read from a manifest written before generator settings existed, is today's plan."""
    assert Plan.from_dict(OLD_MANIFEST_PLANS[name]) == get_plan(name) == PLANS[name]


def test_plan_round_trips_through_json():
    for name in PLANS:
        plan = PLANS[name]
        assert Plan.from_dict(json.loads(json.dumps(plan.as_dict()))) == plan
    quick = get_plan("quick")
    assert quick.settings["natural"].crops == DonorCropSettings(top_k=3, coarse_images=3, fine_keep=12, fine_areas=(0.2,))
    assert quick.settings["natural"].search == SearchSettings(top_k=3)
    assert set(quick.settings) == set(registered())


def test_unknown_plan_is_a_user_error():
    with pytest.raises(UserError, match="unknown budget 'fast'; use quick, standard, thorough"):
        get_plan("fast")


def test_built_in_kinds_labels_and_disguise():
    assert generated_kinds()[:3] == ("synth", "feature", "natural")
    assert kind_labels()["natural"] == "natural crop"
    assert set(disguisable_kinds()) >= {"feature", "natural"} and "synth" not in disguisable_kinds()


def test_registration_refuses_bad_settings_and_reserved_kinds():
    @dataclass(frozen=True)
    class Typo:
        steps: int

        @classmethod
        def preset(cls, plan: str) -> "Typo":
            return cls(stpes=10)  # a typo fails when the generator is registered, not in the middle of a run

    @dataclass
    class Mutable:
        steps: int = 1

        @classmethod
        def preset(cls, plan: str) -> "Mutable":
            return cls()

    def propose(job, settings):
        return []

    with pytest.raises(TypeError, match="stpes"):
        register_generator("typo", kind="typo", label="typo", disguisable=False, settings=Typo)(propose)
    with pytest.raises(TypeError, match="frozen dataclass"):
        register_generator("mutable", kind="mutable", label="m", disguisable=False, settings=Mutable)(propose)
    with pytest.raises(ValueError, match="reserved"):
        register_generator("ctl", kind="control", label="c", disguisable=False, settings=Typo)(propose)
    with pytest.raises(ValueError, match="already registered"):
        register_generator("synth", kind="synth", label="s", disguisable=False, settings=Typo)(propose)
    assert {"typo", "mutable", "ctl"}.isdisjoint(registered())


def test_a_generator_must_make_candidates_of_its_own_kind():
    import torch

    from patchlab.generators import GeneratorJob, GeneratorSpec
    from patchlab.patches.candidate import Candidate
    from patchlab.generators.synth import SynthSettings

    def propose(job, settings):
        return [Candidate(torch.zeros(3, 4, 4), "natural", "x")]

    spec = GeneratorSpec("liar", "synth", "liar", False, SynthSettings, propose)
    plan = PLANS["quick"].with_settings("liar", SynthSettings(steps=1))
    job = GeneratorJob(pair=None, classifier=None, plan=plan, rng=torch.Generator())
    with pytest.raises(ValueError, match="registered with kind 'synth' but made kind \\['natural'\\]"):
        spec.run(job)
