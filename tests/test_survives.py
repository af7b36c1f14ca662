"""Does the patch survive? The physical protocol and defended re-counts in the evaluator, on the
colour toy of test_evaluate (its truth is known), and the command line's refusals of bad defences."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from patchlab.audits.leaderboard import leaderboard, pair_row
from patchlab.audits import pair_run
from patchlab.audits.pair_run import Job
from patchlab.audits.pairs import Pair
from patchlab.audits.survival import check_rank_by
from patchlab.classes import generic_classes
from patchlab.cli.probe import print_table
from patchlab.defenses import defend
from patchlab.devices import stage_generator
from patchlab.errors import UserError
from patchlab.evaluation import RESULT_COLUMNS, evaluate
from patchlab.evaluation.area50 import AREA_GRID, chosen_of_kind, smallest_area
from patchlab.identity import check_same_run
from patchlab.models import Classifier
from patchlab.patches.candidate import Candidate
from patchlab.patches import synth as synth_mod
from patchlab.patches.physical import PhysicalRanges, non_printability
from patchlab.patches.synth import synthesize_patch
from patchlab.patches.region_forward import paste_forward
from patchlab.pipelines.probe import probe
from patchlab.runfolder import Manifest, RunConfig, RunFolder, Summary

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


# -- reports: the survives view --------------------------------------------------------------
@pytest.fixture
def pair_photos(tmp_path):
    """12 noise photos the random tiny net calls 'combination lock', 2 'scuba diver' (as test_probe)."""
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 12), ("scuba_diver", 2)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "patch.png")
    return tmp_path


def test_evaluate_with_a_defence_and_the_physical_protocol_shows_whether_patches_survive(cli, pair_photos):
    out = pair_photos / "run"
    res = cli("evaluate", "--classes", "combination lock", "scuba diver", "--patch", str(pair_photos / "patch.png"),
              "--data", str(pair_photos / "data"), "--model", "tiny", "--device", "cpu", "--sizes", "10", "25",
              "--placements", "1", "--defense", "jpeg:75", "--physical", "--out", str(out))
    assert res.code == 0, res.err
    assert "does it survive?" in res.out and "jpeg:75: clean accuracy" in res.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "patchlab.summary/3" and summary["protocols"][-1] == "physical"
    assert [d["defense"] for d in summary["defenses"]] == ["jpeg:75"]
    names = [e["name"] for e in summary["candidates"] + summary["controls"] + summary["references"]]
    assert [r["name"] for r in summary["survives"]] == names
    for row in summary["survives"]:
        entry = next(e for e in summary["candidates"] + summary["controls"] + summary["references"] if e["name"] == row["name"])
        assert row["digital"]["rate"] == entry["random"]["rate"] and row["physical"]["rate"] == entry["physical"]["rate"]
        assert row["defended"]["jpeg:75"]["rate"] == entry["defended"]["jpeg:75"]["random"]["rate"]
        assert row["physical_defended"]["jpeg:75"]["rate"] == entry["defended"]["jpeg:75"]["physical"]["rate"]
        assert row["non_printability"] == entry["non_printability"] >= 0
    page = (out / "report.html").read_text()
    assert "Does the patch survive?" in page and "through jpeg:75" in page and "What each defence costs" in page
    defended = pd.read_csv(out / "results_defended.csv")
    assert set(defended["defense"]) == {"jpeg:75"} and set(defended["protocol"]) == {"random", "physical"}


# -- the audit: survival columns and rank orders ---------------------------------------------
def _rate(rate: float, n: int = 16) -> dict:
    return {"rate": rate, "ci": [max(0.0, rate - 0.2), min(1.0, rate + 0.2)], "n": n, "size": 0.1, "placement": "random"}


def _fake_pair(audit_dir, source: int, success: float, through: tuple[float, float], area: float | None):
    """A finished pair folder: two synth candidates; the second is better on the defended SELECTION
    images (through[0] + 0.1) but worse on the defended confirmation ones (through[1])."""
    job = Job("tiny", Pair(source, 983, f"class{source}", "scuba diver", 0.5))
    folder = RunFolder(audit_dir / job.rel())
    folder.path.mkdir(parents=True)
    cands = [{"name": f"synth-{i}", "kind": "synth", "selection": {"random": _rate(success)}, "random": _rate(success),
              "defended": {"jpeg:75": {"selection": {"random": _rate(sel)}, "random": _rate(conf)}}}
             for i, (sel, conf) in enumerate([(through[0], through[0]), (through[0] + 0.1, through[1])])]
    folder.write_summary(Summary.from_dict({
        "source": {"index": source, "name": f"class{source}"}, "target": {"index": 983, "name": "scuba diver"},
        "protocols": ["random"], "primary_protocol": "random", "candidates": cands,
        "best_candidate": {"name": "synth-0", "kind": "synth", "protocol": "random", "rate": success,
                           "ci": [success - 0.2, success + 0.2], "n": 16, "selection_rate": success},
        "defenses": [{"defense": "jpeg:75"}],
        "area50": [{"kind": "synth", "defense": "none", "area": area, "ci": [area, 0.1] if area else [0.4, None]}],
        "complete": True}))
    folder.write_results(pd.DataFrame(columns=RESULT_COLUMNS))
    folder.mark_complete(Manifest.new("probe", RunConfig(), 0, "tiny"))
    return job


def test_survival_columns_come_from_the_candidate_chosen_on_defended_selection(tmp_path):
    job = _fake_pair(tmp_path, 1, 1.0, (0.3, 0.05), 0.02)
    row = pair_row(tmp_path, job)
    assert row["defense:jpeg:75"] == 0.05 and row["defense:jpeg:75:candidate"] == "synth-1"
    assert row["area50"] == 0.02 and row["area50:kind"] == "synth" and "physical" not in row


def test_the_leaderboard_ranks_by_a_defence_or_the_smallest_area(tmp_path):
    jobs = [_fake_pair(tmp_path, 1, 1.0, (0.3, 0.1), 0.05), _fake_pair(tmp_path, 2, 0.9, (0.8, 0.7), None),
            _fake_pair(tmp_path, 3, 0.8, (0.5, 0.4), 0.015)]
    order = lambda rank_by: leaderboard(tmp_path, jobs, rank_by)["source_index"].tolist()  # noqa: E731
    assert order("success") == [1, 2, 3]
    assert order("defense:jpeg:75") == [2, 3, 1]
    assert order("area50") == [3, 1, 2]  # never reaching 50 % on the grid ranks last


@pytest.mark.parametrize("rank_by, message", [("defense:median:3", "no defence 'median:3'"), ("speed", "unknown --rank-by"),
                                              ("area50:jpeg:50", "no defence 'jpeg:50'")])
def test_bad_rank_orders_are_refused(rank_by, message):
    with pytest.raises(UserError, match=message):
        check_rank_by(rank_by, ["jpeg:75"])
    assert check_rank_by("defense:jpeg:75", ["jpeg:75"]) == "defense:jpeg:75"


# -- the smallest area reaching 50 % -------------------------------------------------------------
def _grid(*rates_and_cis):
    return [{"size": s, "rate": r, "ci": list(ci)} for s, r, ci in rates_and_cis]


def test_smallest_area_and_its_interval_follow_the_wilson_crossings():
    rows = _grid((0.05, 0.1, (0.0, 0.45)), (0.02, 0.0, (0.0, 0.2)), (0.1, 0.4, (0.2, 0.6)), (0.25, 0.6, (0.4, 0.8)),
                 (0.4, 0.9, (0.7, 1.0)))
    assert smallest_area(rows) == {"area": 0.25, "ci": [0.05, 0.4]}  # rows in any order; the area lies in (5, 40] %
    never = _grid((0.1, 0.2, (0.05, 0.55)), (0.4, 0.3, (0.1, 0.6)))
    assert smallest_area(never) == {"area": None, "ci": [None, None]}  # may reach it anywhere, never surely
    short = _grid((0.1, 0.0, (0.0, 0.3)), (0.4, 0.1, (0.0, 0.4)))
    assert smallest_area(short) == {"area": None, "ci": [0.4, None]}  # surely short everywhere on the grid


def test_the_kind_s_candidate_is_chosen_on_selection_bare_or_defended():
    summary = [
        {"name": "a", "kind": "synth", "selection": {"random": {"rate": 0.5, "size": 0.1}},
         "defended": {"jpeg:75": {"selection": {"random": {"rate": 0.1, "size": 0.1}}}}},
        {"name": "b", "kind": "synth", "selection": {"random": {"rate": 0.5, "size": 0.25}},
         "defended": {"jpeg:75": {"selection": {"random": {"rate": 0.3, "size": 0.1}}}}},
        {"name": "c", "kind": "natural", "selection": {"random": {"rate": 0.9, "size": 0.1}}},
    ]
    assert chosen_of_kind(summary, "synth", "random") == "a"  # a tie goes to the smaller patch
    assert chosen_of_kind(summary, "synth", "random", "jpeg:75") == "b"
    assert chosen_of_kind(summary, "natural", "random", "jpeg:75") is None
    assert chosen_of_kind(summary, "feature", "random") is None


def test_area50_on_the_toy_matches_its_known_threshold(toy):
    # a red square of area A flips the blue image b iff A > b / (1 + b): 0.048, 0.17, 0.26, 0.38, 0.47
    ev = run(toy, ("random",), sizes=(0.1,), rotation_deg=0.0, defenses=["bitdepth:8"], area_grid=AREA_GRID)
    bare, through = ev.area50
    assert (bare["kind"], bare["defense"], bare["candidate"]) == ("synth", "none", "red")
    rates = {r["size"]: r["rate"] for r in bare["grid"]}
    assert rates == {0.01: 0.0, 0.015: 0.0, 0.02: 0.0, 0.03: 0.0, 0.05: 0.2, 0.07: 0.2, 0.1: 0.2, 0.15: 0.2,
                     0.25: 0.4, 0.4: 0.8}
    assert bare["area"] == 0.4 and bare["ci"] == [0.03, None]  # 1 of 5 may be 50 %; 4 of 5 is not surely above
    assert through["defense"] == "bitdepth:8" and through["grid"] == bare["grid"]
    assert set(ev.area_results["defense"]) == {"none", "bitdepth:8"} and set(ev.area_results["split"]) == {"confirmation"}
    assert not any(r["kind"] == "control" for r in ev.area50)  # controls are not a kind of patch


# -- the probe, end to end ----------------------------------------------------------------------
def test_probe_with_defences_and_the_physical_protocol_reports_every_candidate_under_each(pair_photos, tmp_path,
                                                                                           monkeypatch, capsys):
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    s = probe("combination lock", "scuba diver", model="tiny", data=pair_photos / "data", out=tmp_path / "out",
              device="cpu", defenses=["jpeg:75", "patchcleanser:0.1"], physical=True)
    summary = Summary.from_dict(s)
    assert [d["defense"] for d in summary.defenses] == ["jpeg:75", "patchcleanser:0.1"]
    assert summary.defenses[1]["certified"]["n"] == summary.defenses[1]["clean_accuracy"]["n"] > 0
    for c in summary.candidates:
        assert c.rate("physical") is not None and c.non_printability is not None
        assert set(c.defended) <= {"jpeg:75", "patchcleanser:0.1"}
    rows = {r["name"]: r for r in summary.survives}
    assert set(rows) == {e.name for e in summary.entries}
    assert all(set(r["defended"]) == {"jpeg:75", "patchcleanser:0.1"} for r in rows.values())
    kinds = {c.kind for c in summary.candidates}
    assert {(r["kind"], r["defense"]) for r in summary.area50 if r["defense"] == "none"} == {(k, "none") for k in kinds}
    assert all(len(r["grid"]) == len(AREA_GRID) for r in summary.area50)
    page = (tmp_path / "out" / os.path.basename(s["run_dir"]) / "report.html").read_text()
    assert "Does the patch survive?" in page and "Smallest patch area reaching 50 %" in page
    print_table(summary, s["report"])
    out = capsys.readouterr().out
    assert "does it survive?" in out and "patchcleanser:0.1: clean accuracy" in out and "bare model" in out


# -- optimising through the physical transforms ----------------------------------------------------
def test_synth_physical_optimises_through_a_physical_draw_each_step(toy, monkeypatch):
    clf, images, _, _ = toy
    seen = []
    real = synth_mod.apply_physical

    def spy(x, patch, draw, area, center, shape="square"):
        seen.append((len(x), len(draw), patch.requires_grad))
        return real(x, patch, draw, area, center, shape)

    monkeypatch.setattr(synth_mod, "apply_physical", spy)

    def train(physical, seed=0):
        return synthesize_patch(clf, images[:5], TARGET, SOURCE, steps=4, patch_px=8, batch_size=3, physical=physical,
                                generator=stage_generator(seed, "synth"))

    plain = train(None)
    assert seen == [] and "physical" not in plain.provenance
    a, b = train(PhysicalRanges()), train(PhysicalRanges())
    assert seen == [(3, 3, True)] * 8  # every step, the whole batch, with the patch's gradient
    assert torch.equal(a.patch, b.patch) and not torch.equal(a.patch, plain.patch)
    assert a.provenance["physical"] == PhysicalRanges().as_dict()


def test_synth_command_with_physical_measures_the_physical_protocol(pair_photos, cli):
    out = pair_photos / "synth"
    res = cli("synth", "--classes", "combination lock", "scuba diver", "--data", str(pair_photos / "data"),
              "--model", "tiny", "--device", "cpu", "--steps", "3", "--patch-px", "8", "--physical", "--out", str(out))
    assert res.code == 0, res.err
    summary = json.loads((out / "summary.json").read_text())
    assert "physical" in summary["protocols"] and summary["candidates"][0]["physical"]["n"] > 0
    assert summary["candidates"][0]["provenance"]["physical"] == PhysicalRanges().as_dict()
    assert "does it survive?" in res.out


def test_an_audit_passes_its_defences_to_every_probe_and_refuses_to_resume_with_others(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pair_run, "probe", lambda *a, **kw: seen.update(kw))
    pair = Pair(801, 983, "snorkel", "scuba diver", 0.5)
    settings = {"model": "tiny", "budget": "quick", "seed": 0, "defenses": ["jpeg:75"], "physical": True}
    assert pair_run.run_pair(pair, settings, tmp_path / "pair")["status"] == "ok"
    assert seen["defenses"] == ["jpeg:75"] and seen["physical"] is True and seen["physical_ranges"] is None
    old = {"model": "tiny", "budget": "quick", "seed": 0}
    check_same_run(old, dict(old), "the audit")  # an audit without them records neither
    with pytest.raises(UserError, match="defenses None there, \\['jpeg:75'\\] here"):
        check_same_run(old, dict(old, defenses=["jpeg:75"]), "the audit")
