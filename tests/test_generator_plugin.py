"""A generator defined and registered in this file alone, with a kind and label of its own,
flows through an audit's probe into summary.json, report.html, the audit leaderboard and
its figure: adding a generator needs no edit anywhere else (tiny model, noise photos)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from patchlab.audits import audit, figures
from patchlab.generators import GeneratorJob, register_generator, registered, unregister_generator
from patchlab.patches.candidate import Candidate

NAME, KIND, LABEL = "stripes", "stripes", "striped test patch"


@dataclass(frozen=True)
class StripesSettings:
    """width: stripe width in pixels; side: patch side in pixels."""

    width: int
    side: int = 16

    @classmethod
    def preset(cls, plan: str) -> "StripesSettings":
        return cls(width={"quick": 3, "standard": 2, "thorough": 1}[plan])


def propose_stripes(job: GeneratorJob, settings: StripesSettings) -> list[Candidate]:
    """Vertical stripes in two colours drawn from the stage's seeded generator."""
    colours = torch.rand(2, 3, generator=job.rng)
    columns = colours[(torch.arange(settings.side) // settings.width) % 2].T  # (3, side)
    patch = columns[:, None, :].expand(3, settings.side, settings.side).clone()
    job.notes["colours"] = colours.tolist()
    return [Candidate(patch, KIND, "stripes-1", provenance={"method": "two-colour stripes", "width": settings.width})]


@pytest.fixture
def stripes():
    """The stripes generator, registered for one test and removed afterwards."""
    register_generator(NAME, kind=KIND, label=LABEL, disguisable=False, settings=StripesSettings)(propose_stripes)
    yield registered()[NAME]
    unregister_generator(NAME)
    assert NAME not in registered()


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    for folder, n in (("combination_lock", 12), ("scuba_diver", 3)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / folder / f"{i}.png")
    (tmp_path / "pairs.csv").write_text("source,target\ncombination lock,scuba diver\n")
    return tmp_path


def test_a_registered_generator_reaches_summary_report_and_audit(stripes, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path / "cache"))
    ticks: list[str] = []
    real_png = figures.figure_png

    def keep_ticks(fig):
        ticks.extend(t.get_text() for ax in fig.axes for t in ax.get_xticklabels())
        return real_png(fig)

    monkeypatch.setattr(figures, "figure_png", keep_ticks)
    doc = audit(pairs_file=photos / "pairs.csv", model="tiny", data=photos / "data", out=tmp_path / "audit",
                device="cpu")
    assert doc["counts"]["ok"] == 1
    run = tmp_path / "audit" / doc["leaderboard"][0]["report"].rsplit("/", 1)[0]

    # probe: a stage of its own, after the built-ins, with this plan's settings in the manifest
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["generators"] == [*registered()]  # registration order: the built-ins, then ours
    assert manifest["config"]["generators"][-1] == NAME
    assert manifest["config"]["plan"]["settings"][NAME] == {"width": 3, "side": 16}

    # summary.json: its candidate is listed with its kind, its notes beside the others
    summary = json.loads((run / "summary.json").read_text())
    mine = [c for c in summary["candidates"] if c["kind"] == KIND]
    assert [c["name"] for c in mine] == ["stripes-1"] and mine[0]["provenance"]["width"] == 3
    assert 0.0 <= mine[0]["random"]["rate"] <= 1.0
    assert len(summary["generator_notes"][NAME]["colours"]) == 2
    assert NAME in summary["timings"]

    # report.html shows it
    assert "stripes-1" in (run / "report.html").read_text()

    # the audit leaderboard has a column for its kind, and the figure labels it with its label
    board = pd.read_csv(tmp_path / "audit" / "audit.csv")
    assert KIND in board.columns and board[KIND].iloc[0] == pytest.approx(mine[0]["random"]["rate"])
    assert doc["leaderboard"][0][KIND] == pytest.approx(mine[0]["random"]["rate"])
    assert LABEL in {" ".join(t.split()) for t in ticks}
