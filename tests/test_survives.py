"""Does the patch survive? The physical protocol and defended re-counts in the evaluator, on the
colour toy of test_evaluate (its truth is known), and the command line's refusals of bad defences."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from patchlab.classes import generic_classes
from patchlab.defenses import defend
from patchlab.devices import stage_generator
from patchlab.evaluation import evaluate
from patchlab.models import Classifier
from patchlab.patches.candidate import Candidate
from patchlab.patches.physical import PhysicalRanges, non_printability
from patchlab.patches.region_forward import paste_forward

from test_evaluate import BLUES, ColorToy, flat

SOURCE, TARGET = 0, 1
KEYS = ["split", "candidate", "protocol", "size", "placement"]


@pytest.fixture(scope="module")
def toy():
    clf = Classifier(ColorToy(), spec="toy", classes=generic_classes(10), input_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    images = torch.cat([flat((0, 0, b)) for b in BLUES] + [flat((0, 0.8, 0))])  # the green one is not the source
    red = Candidate(flat((1, 0, 0), size=8)[0], "synth", "red")
    gray = Candidate(torch.full((3, 8, 8), 0.5), "control", "gray")
    return clf, images, red, gray


def run(toy, protocols, seed=0, **kw):
    clf, images, red, gray = toy
    kw = {"sizes": (0.1, 0.3), "random_placements": 3, **kw}
    return evaluate(clf, [red], images, SOURCE, TARGET, protocols=protocols, controls=[gray], n_examples=0,
                    generator=stage_generator(seed, "evaluate"), **kw)


def rows(results: pd.DataFrame, protocol: str) -> pd.DataFrame:
    return results[results["protocol"] == protocol].sort_values(KEYS).reset_index(drop=True)


def test_physical_protocol_is_counted_like_the_others_and_moves_no_other_draw(toy):
    base = run(toy, ("static", "random"))
    both = run(toy, ("static", "random", "physical"))
    for proto in ("static", "random"):  # the physical draws come from a generator of their own
        pd.testing.assert_frame_equal(rows(base.results, proto), rows(both.results, proto))
    phys = rows(both.results, "physical")
    assert len(phys) == 2 * 2 * 2  # splits x candidates x sizes
    assert set(phys["n"]) == {5} and set(phys["trials"]) == {15} and set(phys["placement"]) == {"physical"}
    again, other = run(toy, ("static", "random", "physical")), run(toy, ("static", "random", "physical"), seed=1)
    pd.testing.assert_frame_equal(phys, rows(again.results, "physical"))
    assert not phys["p_target_after"].equals(rows(other.results, "physical")["p_target_after"])
    red = next(s for s in both.summary if s["name"] == "red")
    assert red["physical"]["size"] == red["selection"]["physical"]["size"]  # chosen on selection
    assert red["physical"]["n"] == 5 and red["physical"]["ci"][0] <= red["physical"]["rate"] <= red["physical"]["ci"][1]
    assert both.config["physical_ranges"] == PhysicalRanges().as_dict() and "physical_ranges" not in base.config


def test_neutral_physical_trials_count_what_plain_random_placement_counts(toy):
    # the toy only reads mean colours, so where an unrotated patch lands does not matter
    ev = run(toy, ("random", "physical"), rotation_deg=0.0, physical=PhysicalRanges.neutral())
    rand, phys = rows(ev.results, "random"), rows(ev.results, "physical")
    assert rand["success_rate"].tolist() == phys["success_rate"].tolist()
    assert rand["p_target_after"].tolist() == pytest.approx(phys["p_target_after"].tolist(), abs=1e-3)  # sub-pixel edges
    # a red pasted over a third of the image flips blues up to 0.35 (A > b (1 - A)): 3 of 5
    assert phys[(phys["size"] == 0.3) & (phys["candidate"] == "red")]["success_rate"].tolist() == [0.6, 0.6]


def test_printing_costs_the_red_patch_success(toy):
    # printed between ink 0.1 and paper 0.9, pure red becomes (0.9, 0.1, 0.1): redness 0.7, some blue
    ranges = PhysicalRanges(ink_black=(0.1, 0.1), paper_white=(0.9, 0.9), scale=(1.0, 1.0), rotation_deg=0.0,
                            corner_jitter=0.0, brightness=(0.0, 0.0), contrast=(1.0, 1.0), gamma=(1.0, 1.0),
                            blur_sigma=(0.0, 0.0), noise_std=(0.0, 0.0), jpeg_quality=None)
    ev = run(toy, ("random", "physical"), rotation_deg=0.0, physical=ranges)
    rand, phys = rows(ev.results, "random"), rows(ev.results, "physical")
    red = (rand["candidate"] == "red") & (rand["size"] == 0.3)
    assert rand[red]["success_rate"].tolist() == [0.6, 0.6]
    # over a third of the image it wins only where 0.7 A > b (1 - A) + 0.1 A: b = 0.05 and 0.2, not 0.35
    assert phys[red]["success_rate"].tolist() == [0.4, 0.4]


def test_every_entry_carries_its_non_printability(toy):
    ev = run(toy, ("random",))
    nps = {s["name"]: s["non_printability"] for s in ev.summary}
    assert nps["red"] == pytest.approx(non_printability(toy[2].patch)) and nps["red"] > 0.01
    assert nps["gray"] == pytest.approx(0.0, abs=1e-4)  # mid-gray is one of the palette's colours


def test_a_defended_model_recounts_the_same_trials(toy):
    ev = run(toy, ("static", "random", "physical"), defenses=["bitdepth:8", "bitdepth:8"])
    d = ev.defended_results
    assert set(d["defense"]) == {"bitdepth:8"} and set(d["protocol"]) == {"random", "physical"}  # the headline ones
    assert ev.config["defenses"] == ["bitdepth:8"] and ev.config["defended_protocols"] == ["random", "physical"]
    for proto in ("random", "physical"):  # 8 bits per channel keeps the flat images and the red patch
        mine, bare = rows(d, proto), rows(ev.results, proto)
        assert mine[KEYS + ["n", "trials", "success_rate"]].equals(bare[KEYS + ["n", "trials", "success_rate"]])
    red = next(s for s in ev.summary if s["name"] == "red")
    assert red["defended"]["bitdepth:8"]["random"]["rate"] == red["random"]["rate"]
    assert red["defended"]["bitdepth:8"]["selection"]["random"]["size"] == red["selection"]["random"]["size"]
    (cost,) = ev.defenses
    assert cost["defense"] == "bitdepth:8" and cost["clean_accuracy"]["successes"] == 5
    assert cost["clean_accuracy"]["n"] == 6 and cost["certified"] is None and cost["denominator"] == 5
    assert set(ev.timings["defended_s"]) == {"bitdepth:8"}


def test_patchcleanser_stops_a_patch_inside_its_window_and_reports_its_certificate(toy):
    bare = run(toy, ("random",), sizes=(0.1,), random_placements=1)
    ev = run(toy, ("random",), sizes=(0.1,), random_placements=1, defenses=["patchcleanser:0.3"])
    assert rows(bare.results, "random").query("candidate == 'red'")["success_rate"].max() > 0
    d = ev.defended_results
    assert set(d["defense"]) == {"patchcleanser:0.3"} and d["success_rate"].max() == 0.0
    (cost,) = ev.defenses
    assert cost["certified"]["n"] == 6 and cost["certified"]["successes"] == 6  # flat images: every mask agrees
    assert cost["certified_and_correct"]["successes"] == 5 and cost["clean_accuracy"]["successes"] == 5


def test_incremental_scoring_steps_aside_for_a_defended_model(default_model):
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert paste_forward(default_model, images) is not None
    assert paste_forward(defend(default_model, "jpeg:75"), images) is None


@pytest.mark.parametrize("spec", ["bogus:3", "jpeg:abc", "patchcleanser:0.7", "patchcleanser:0", "median:4"])
@pytest.mark.parametrize("command", ["probe", "evaluate", "audit"])
def test_bad_defences_are_one_line_and_write_nothing(cli, tmp_path, command, spec):
    out = tmp_path / "out"
    args = {"probe": ["probe", "--classes", "snorkel", "scuba_diver"],
            "evaluate": ["evaluate", "--classes", "snorkel", "scuba_diver", "--patch", str(tmp_path / "p.png")],
            "audit": ["audit", "--pairs", "1"]}[command]
    res = cli(*args, "--model", "tiny", "--defense", spec, "--out", str(out))
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and res.err.startswith("error:")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture
def photo_tree(tmp_path):
    """Four labelled 40 px photos in an ImageNet tree (WordNet-id folders)."""
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537", "n04251144", "n10565667"):
        (tmp_path / "photos" / wnid).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / wnid / "a.png")
    return tmp_path / "photos"


def test_models_check_prints_clean_and_certified_top1_beside_the_undefended(cli, photo_tree):
    res = cli("models", "--check", str(photo_tree), "--model", "tiny", "--defense", "patchcleanser:0.1",
              "--defense", "jpeg:75", "--max-images", "3", "--device", "cpu", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["n_photos"] == 3 and out["model"] == "tiny" and out["undefended"]["top1"]["n"] == 3
    pc, jpeg = out["defenses"]
    assert pc["defense"] == "patchcleanser:0.1" and jpeg["defense"] == "jpeg:75" and "certified" not in jpeg
    # one forward per mask, then the pairs of masks for each image whose first round agrees
    masks = pc["masks"]
    assert masks == 36 and masks <= pc["forwards_per_image"] <= masks + masks * (masks - 1) // 2 + masks * (masks - 1)
    assert pc["certified_and_correct"]["successes"] <= min(pc["certified"]["successes"], pc["top1"]["successes"])
    text = cli("models", "--check", str(photo_tree), "--model", "tiny", "--defense", "patchcleanser:0.1",
               "--max-images", "2", "--device", "cpu")
    assert text.code == 0 and "certified top-1" in text.out and "forwards/photo" in text.out and "undefended" in text.out


@pytest.mark.parametrize("args", [["CHECK", "--defense", "patchcleanser:0.6"], ["--defense", "jpeg:75"],
                                  ["CHECK", "--max-images", "3"]])
def test_models_check_refuses_bad_or_lone_options(cli, photo_tree, args):
    res = cli("models", *[a for arg in args for a in (["--check", str(photo_tree)] if arg == "CHECK" else [arg])])
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1
