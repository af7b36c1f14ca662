"""Pair search over an indexed photo library: natural patches from real photos.

Carter et al. 2019 (Activation Atlas) pasted a photo of a steam train on a snorkel and
the model said "scuba diver"; Casper et al. 2022 (SNAFUE) found such patches
automatically by copy/paste search over a natural-image library, ranked by feature
similarity. Here the feature is the pair's separating direction d at the feature layer
(head row target minus source), and each stage scores fewer proposals more exactly:

1. index (`proposals`): whole photos and crops ranked from the index alone (no forward
   pass) make a shortlist, plus a few random whole photos as a baseline;
2. coarse: every proposal pasted on a few train images at one size;
3. fine (`ranking`): the best on every train image at every size, a corner or more each;
   optionally their mirrors, and a final stage on every placement;
4. collage (`collages`): the best proposals of a few photos paired side by side, scored the
   same way, competing with the single proposals;
5. select: the top_k distinct patches, by train success (top-1 = target), ties by the
   mean gain in log p(target) - log p(source).

Why the defaults are what they are: experiments/library_search_design.md.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..patches.apply import CORNERS
from ..patches.candidate import Candidate
from ..patches.crops import OBJECTIVES, score_crops_by_setting
from .collages import Collages, best_parts, component_rows, cut_collages, distinct_pairs
from .index import LibraryIndex
from .proposals import (
    CROP_ASPECTS, CROP_SCALES, Proposals, cut_proposals, eligible_photos, index_proposals, library_direction,
    random_whole,
)
from .ranking import RANK_BY, at_best_area, fine_rows, rank_key, score_rotated, select_distinct, static_scores

STAGES = ("index", "decode_cut", "coarse", "fine", "collage", "final", "select")


@dataclass(frozen=True)
class SearchSettings:
    """Every knob of the library search.

    top_k: candidates returned (distinct, at most `per_photo` of one photo).
    shortlist: proposals taken from the index, `whole_share` of them whole photos and the
    rest crops at `scales` x `aspects`; whole_sweep: every whole photo up to this many (by
    index order) when that is more. n_random: random whole photos added as a baseline.
    coarse_images, coarse_size: the coarse stage's train images and area (None: the largest
    size; it always ranks by gain). fine_keep: proposals fine-scored on every train image x
    size x `fine_corners_per_image` corners each (None: every position). patch_px: side of
    the cut patches. rank_by: "success" (mean train success, ties by the mean gain; a photo
    pasted large can cut p(source) yet be read as its own class), "static" (the success at
    the proposal's best size, ties by the gain there) or "gain" (the mean gain alone).
    final_keep > 0: a final stage (successive halving) scores this many on every train image
    x size x position, ranked by their best size's success averaged over the positions (as
    the static protocol counts). mirror_top > 0: this many of the best after the fine stage
    are also scored flipped left-right, each competing with its original. batch_size:
    pasted images per forward pass. combine > 1: the best proposals of this many photos are
    paired side by side, every ordered pair, each part cut or squeezed to half the width (`collages`),
    and compete with the single proposals
    (0: none); they are chosen among the best proposals of the `combine_from` photos with the
    highest mean fine gain, by their success alone on every train image and corner at area
    `combine_size`. objective: the gain every stage measures (`patches.crops.target_score`):
    "log_ratio" (log p(target) - log p(source)) or "margin" (log p(target) - the largest other log p).
    """

    top_k: int = 10
    shortlist: int = 320
    scales: tuple[float, ...] = CROP_SCALES
    aspects: tuple[float, ...] = CROP_ASPECTS
    whole_share: float = 0.5
    whole_sweep: int = 512
    n_random: int = 8
    coarse_images: int = 4
    coarse_size: float | None = None
    fine_keep: int = 160
    fine_corners_per_image: int | None = 1
    per_photo: int = 1
    patch_px: int = 128
    rank_by: str = "success"
    final_keep: int = 0
    mirror_top: int = 0
    batch_size: int = 64
    combine: int = 12
    combine_from: int = 40
    combine_size: float = 0.25
    objective: str = "log_ratio"

    @property
    def makes_collages(self) -> bool:
        return self.combine > 1

    def __post_init__(self) -> None:
        if self.rank_by not in RANK_BY:
            raise ValueError(f"rank_by must be one of {RANK_BY}, got {self.rank_by!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 0 < self.combine_size <= 1:
            raise ValueError(f"combine_size is a fraction of the image area in (0, 1], got {self.combine_size}")


@dataclass
class _Search:
    """One pair's search: its fixed inputs (the pair direction among them), and every proposal cut so
    far (`pool`) with its pixels, whether it is a random baseline, and its coarse gain (NaN: not
    coarse-scored)."""

    classifier: Any
    index: LibraryIndex
    train: torch.Tensor
    source: int
    target: int
    sizes: Sequence[float]
    positions: Sequence[str]
    settings: SearchSettings
    direction: torch.Tensor
    pool: Proposals
    is_random: torch.Tensor
    pixels: torch.Tensor
    coarse: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def score(self, crops: torch.Tensor, images: torch.Tensor, areas: Sequence[float],
              per_image: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`score_rotated` of crops pasted on images for this pair: mean gain and success, (K, areas) each."""
        return score_rotated(self.classifier, crops, images, self.source, self.target, areas, self.positions,
                             per_image, self.settings.batch_size, self.settings.objective)


def search_library(
    classifier,
    index: LibraryIndex,
    train_images: torch.Tensor,
    source: int,
    target: int,
    settings: SearchSettings = SearchSettings(),
    *,
    sizes: Sequence[float] = (0.1, 0.25),
    positions: Sequence[str] = CORNERS,
    generator: torch.Generator | None = None,
    progress: bool = False,
    target_images: torch.Tensor | None = None,
) -> tuple[list[Candidate], dict[str, Any]]:
    """Natural patches for source -> target from an indexed library (see the module docstring
    and SearchSettings).

    train_images (M,3,S,S) in [0,1]: source images the patches are pasted on, at `sizes`
    (fractions of the image area) and `positions`. generator: seeds the random baseline
    photos and the coarse images. Returns (candidates named natural-1, natural-2, ..., stats).
    """
    if len(train_images) == 0:
        raise UserError("search_library needs at least one training image of the source class")
    cfg = settings
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    say = print if progress else (lambda *_a, **_k: None)
    t = [time.perf_counter()]
    train = train_images.to(classifier.device).contiguous(memory_format=torch.channels_last)
    pair_images = None if target_images is None else (train_images, target_images)
    d, how = library_direction(classifier, index, source, target, pair_images)
    eligible, excluded = eligible_photos(index, source, target)
    pool, is_random, ranked = _pool(index, d, eligible, gen, cfg)
    t.append(time.perf_counter())
    say(f"[library] {ranked} proposals ranked from the index; {len(pool)} to score exactly")
    s = _Search(classifier, index, train, source, target, sizes, positions, cfg, d, pool, is_random,
                cut_proposals(index, pool, cfg.patch_px))
    t.append(time.perf_counter())
    csize = float(cfg.coarse_size if cfg.coarse_size is not None else max(sizes))
    coarse_imgs = _coarse_images(train, cfg.coarse_images, gen)
    s.coarse = s.score(s.pixels, coarse_imgs, (csize,), 1)[0][:, 0]
    t.append(time.perf_counter())
    say(f"[library] coarse: {len(pool)} proposals x {len(coarse_imgs)} images in {t[-1] - t[-2]:.1f} s")
    rows = fine_rows(s.pool, s.coarse, max(cfg.fine_keep, cfg.top_k, cfg.final_keep), max(cfg.top_k, cfg.final_keep),
                     cfg.per_photo + 1)
    fine, wins = s.score(s.pixels[rows], train, sizes, cfg.fine_corners_per_image)
    rows, fine, wins = _with_mirrors(s, rows, fine, wins)
    t.append(time.perf_counter())
    say(f"[library] fine: {len(rows)} proposals x {len(train)} images in {t[-1] - t[-2]:.1f} s")
    fine_n = len(rows)
    col, rescored = _collages(s, rows, fine)
    empty = (fine[:0], wins[:0])  # with a final stage, the collages are scored there with the proposals
    col_scores = s.score(col.pixels, train, sizes, cfg.fine_corners_per_image) if len(col) and not cfg.final_keep else empty
    t.append(time.perf_counter())
    if len(col):
        say(f"[library] collage: {len(col)} pairs of proposals x {len(train)} images in {t[-1] - t[-2]:.1f} s")
    if cfg.final_keep:
        rows, key, facts, col_key, col_facts = _final(s, rows, fine, wins, col)
        say(f"[library] final: {len(rows)} proposals x {len(train)} images x all settings in "
            f"{time.perf_counter() - t[-1]:.1f} s")
    else:
        key, facts, col_key, col_facts = _fine_ranking(s, fine, wins, *col_scores)
    t.append(time.perf_counter())
    cands = _candidates(s, rows, key, facts, col, col_key, col_facts)
    t.append(time.perf_counter())
    setup = {"coarse_images": len(coarse_imgs), "coarse_size": csize, "train_images": len(train), "sizes": list(sizes),
             "positions": list(positions), "fine_corners_per_image": cfg.fine_corners_per_image, "fine_scored": fine_n,
             "final_scored": len(rows) if cfg.final_keep else 0, "collages_scored": len(col),
             "collage_parts_rescored": rescored, "collage_part_size": cfg.combine_size,
             "collage_whole_photos": int(col.parts.whole.sum()),
             "ranked_by": "static (final stage)" if cfg.final_keep else cfg.rank_by}
    stats = _stats(s, facts["score_gain_logodds"], facts["train_success"], ranked, t, how, excluded, setup)
    return cands, stats


def _pool(index: LibraryIndex, d: torch.Tensor, eligible: np.ndarray, generator: torch.Generator,
          cfg: SearchSettings) -> tuple[Proposals, torch.Tensor, int]:
    """The index shortlist plus `n_random` random whole photos (a baseline): pool, is_random, proposals ranked."""
    short, ranked = index_proposals(index, d, eligible, cfg.shortlist, cfg.scales, cfg.aspects, cfg.whole_share,
                                    whole_sweep=cfg.whole_sweep)
    rand = random_whole(index, eligible, cfg.n_random, generator)
    is_random = torch.cat([torch.zeros(len(short), dtype=torch.bool), torch.ones(len(rand), dtype=torch.bool)])
    return Proposals.cat([short, rand]), is_random, ranked


def _coarse_images(train: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return train[torch.randperm(len(train), generator=generator)[: min(n, len(train))].to(train.device)]


def _with_mirrors(s: _Search, rows: torch.Tensor, fine: torch.Tensor,
                  wins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add the `mirror_top` best fine-scored shortlist proposals mirrored (flipped left-right) to
    the pool, scored on the same train images, sizes and corners (no coarse gain: NaN); returns
    rows, fine gain and success with theirs appended."""
    n = s.settings.mirror_top
    own = torch.nonzero(~s.is_random[rows]).flatten()
    if n <= 0 or not len(own):
        return rows, fine, wins
    best = rows[own[rank_key(fine[own], wins[own], s.settings.rank_by).topk(min(n, len(own))).indices]]
    flipped = s.pixels[best].flip(-1)
    g, w = s.score(flipped, s.train, s.sizes, s.settings.fine_corners_per_image)
    new = torch.arange(len(s.pool), len(s.pool) + len(best))
    s.pool = Proposals.cat([s.pool, s.pool.take(best).mirrored()])
    s.is_random = torch.cat([s.is_random, torch.zeros(len(best), dtype=torch.bool)])
    s.pixels = torch.cat([s.pixels, flipped])
    s.coarse = torch.cat([s.coarse, torch.full((len(best),), float("nan"))])
    return torch.cat([rows, new]), torch.cat([fine, g]), torch.cat([wins, w])


def _collages(s: _Search, rows: torch.Tensor, fine: torch.Tensor) -> tuple[Collages, int]:
    """Every ordered pair of the best proposals of `combine` photos (random baselines left out), each
    cut for half the width, side by side; and how many proposals were rescored alone to choose them."""
    cfg = s.settings
    parts = torch.empty(0, dtype=torch.long)
    rescored = 0
    if cfg.makes_collages:
        parts = component_rows(s.pool, rows, fine, ~s.is_random, max(cfg.combine, cfg.combine_from))
        rescored = len(parts) if len(parts) > cfg.combine else 0
    if rescored:
        gain, success = s.score(s.pixels[parts], s.train, (cfg.combine_size,), None)  # every corner
        parts = best_parts(parts, gain[:, 0], success[:, 0], cfg.combine)
    return cut_collages(s.index, s.pool, parts, cfg.patch_px, s.direction), rescored


def _fine_ranking(s: _Search, fine: torch.Tensor, wins: torch.Tensor, g: torch.Tensor, w: torch.Tensor) -> tuple[
        torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Sort keys and facts of the fine-scored proposals and of the collages (`g`, `w`: their gain and
    success, scored the same way), ranked together (keys comparable across both)."""
    key = rank_key(torch.cat([fine, g]), torch.cat([wins, w]), s.settings.rank_by)
    return key[: len(fine)], _fine_facts(fine, wins, s.sizes), key[len(fine):], _fine_facts(g, w, s.sizes)


def _final(s: _Search, rows: torch.Tensor, fine: torch.Tensor, wins: torch.Tensor, col: Collages) -> tuple[
        torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """The final stage: the `final_keep` best distinct fine-scored proposals, and every collage, on
    every train image at every size and position, ranked together the way the static protocol
    counts (`static_scores`): pool rows, sort key and facts, then the collages' key and facts."""
    cfg = s.settings
    keep = select_distinct(s.pool.take(rows), rank_key(fine, wins, cfg.rank_by), cfg.final_keep, cfg.per_photo)
    rows, fine = rows[keep], fine[keep].mean(1)
    g, w = score_crops_by_setting(s.classifier, torch.cat([s.pixels[rows], col.pixels]), s.train, s.source, s.target,
                                  s.sizes, s.positions, cfg.batch_size, cfg.objective)
    st = {k: v.cpu() for k, v in static_scores(g, w, s.sizes).items()}
    facts = {"score_gain_logodds": g.flatten(1).mean(1).cpu(), "train_success": w.flatten(1).mean(1).cpu(),
             "train_static_success": st["success"], "train_static_size": st["size"]}
    key = rank_key(st["gain"][:, None], st["success"][:, None], "success")
    n = len(rows)
    mine = {k: v[:n] for k, v in facts.items()}
    mine["fine_gain"] = fine
    return rows, key[:n], mine, key[n:], {k: v[n:] for k, v in facts.items()}


def _fine_facts(gain: torch.Tensor, win: torch.Tensor, sizes: Sequence[float]) -> dict[str, torch.Tensor]:
    """Provenance facts from per-area fine scores (K, areas): the mean gain and success, and the
    best area's success (one corner per image, rotating) and area."""
    best_win, _, best = at_best_area(gain, win)
    return {"score_gain_logodds": gain.mean(1), "train_success": win.mean(1), "train_best_size_success": best_win,
            "train_best_size": torch.as_tensor(sizes, dtype=torch.float64)[best]}


def _candidates(s: _Search, rows: torch.Tensor, key: torch.Tensor, facts: dict[str, torch.Tensor],
                col: Collages, col_key: torch.Tensor, col_facts: dict[str, torch.Tensor]) -> list[Candidate]:
    """The top_k patches, best `key` first, among the distinct scored proposals (pool rows `rows`) and
    the distinct collages, as Candidates named natural-1, natural-2, ...; `facts` and `col_facts`
    map a provenance name to a (len(rows),) and a (len(col),) tensor."""
    k = s.settings.top_k
    sub = s.pool.take(rows)
    ranked = ([(float(key[j]), False, j) for j in select_distinct(sub, key, k, s.settings.per_photo)]
              + [(float(col_key[j]), True, j) for j in distinct_pairs(col, col_key, k)])
    chosen = sorted(ranked, key=lambda item: -item[0])[:k]
    pixels = [col.pixels[j] if is_col else s.pixels[rows[j]] for _, is_col, j in chosen]
    alone = s.classifier.reads_as(torch.stack(pixels)) if chosen else []
    out = []
    for r, ((_, is_col, j), patch, a) in enumerate(zip(chosen, pixels, alone)):
        if is_col:
            own = {name: v[j] for name, v in col_facts.items()}
            cand = _collage_candidate(s, r + 1, col, j, patch, own, a)
        else:
            own = {name: v[j] for name, v in facts.items()}
            own.update(index_score=sub.score[j], coarse_gain=s.coarse[rows[j]])
            cand = _candidate(s.classifier, s.index, r + 1, sub, j, patch, own, a)
            cand.provenance["random_baseline"] = bool(s.is_random[rows[j]])
        out.append(cand)
    return out


def _top1_dict(classifier, index: LibraryIndex, row: int) -> dict[str, Any]:
    return classifier.classes.prediction(int(index.top1[row]), index.top1_prob[row])


def _measured(value) -> float | None:
    """A provenance number, rounded; None where nothing was measured (NaN: a random baseline
    photo has no index score, a mirror no coarse gain), as the JSON files allow no NaN."""
    v = float(value)
    return round(v, 4) if math.isfinite(v) else None


def _photo_facts(classifier, index: LibraryIndex, props: Proposals, j: int) -> dict[str, Any]:
    """Where proposal j was cut from: method, photo file and row, box, the photo's label and top-1, donor."""
    row = int(props.photo[j])
    label = int(index.labels[row])
    donor = label if label >= 0 else int(index.top1[row])
    box = props.boxes[j]
    s = index.input_size
    mirrored = bool(props.mirror[j])
    return {
        "method": ("library photo, whole" if bool(props.whole[j]) else "library crop") + (", mirrored" if mirrored else ""),
        "mirrored": mirrored,
        "file": index.paths[row], "library": str(index.root), "library_row": row,
        "box_xyxy": [round(float(v), 1) for v in box],
        "box_fraction_wh": [round(float(box[2] - box[0]) / s, 3), round(float(box[3] - box[1]) / s, 3)],
        "photo_label": None if label < 0 else label,
        "photo_label_name": None if label < 0 else classifier.classes.label(label),
        "photo_top1": _top1_dict(classifier, index, row),
        "donor_class": donor, "donor_name": classifier.classes.label(donor),
    }


def _candidate(classifier, index: LibraryIndex, rank: int, props: Proposals, j: int, patch: torch.Tensor,
               facts: dict[str, float], alone: dict[str, Any]) -> Candidate:
    return _natural(rank, patch, _photo_facts(classifier, index, props, j), facts, alone)


def _natural(rank: int, patch: torch.Tensor, prov: dict[str, Any], facts: dict[str, float],
             alone: dict[str, Any]) -> Candidate:
    """Candidate natural-{rank}: provenance `prov` plus the measured `facts`, scored by its gain."""
    prov = dict(prov, **{k: _measured(v) for k, v in facts.items()})
    return Candidate(patch, "natural", f"natural-{rank}", provenance=prov, score=float(facts["score_gain_logodds"]),
                     reads_as=alone)


def _collage_candidate(s: _Search, rank: int, col: Collages, j: int, patch: torch.Tensor, facts: dict[str, float],
                       alone: dict[str, Any]) -> Candidate:
    """A collage as a Candidate: the left part's photo facts at the top level (as a single proposal's),
    both parts' under `parts`."""
    parts = [_photo_facts(s.classifier, s.index, col.parts, int(r)) for r in (col.left[j], col.right[j])]
    prov = dict(parts[0], method="library collage: two proposals side by side, each cut or squeezed to half width",
                donor_name=" + ".join(p["donor_name"] for p in parts), parts=parts, random_baseline=False)
    return _natural(rank, patch, prov, facts, alone)


def _stats(s: _Search, gain: torch.Tensor, wins: torch.Tensor, ranked: int, t: list[float], how: str,
           excluded: dict[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    """The search statistics written to the generator notes."""
    pool, is_random, coarse = s.pool, s.is_random, s.coarse
    short, cut = ~is_random & ~pool.mirror, ~pool.mirror  # mirrors are fine-scored only
    n_coarse = int(cut.sum())
    per_img = min(setup["fine_corners_per_image"] or len(setup["positions"]), len(setup["positions"]))
    per_size = setup["train_images"] * len(setup["sizes"])
    final_n = setup["final_scored"] + (setup["collages_scored"] if setup["final_scored"] else 0)
    forwards = (n_coarse * setup["coarse_images"] + (setup["fine_scored"] + setup["collages_scored"]) * per_size * per_img
                + final_n * per_size * len(setup["positions"])
                + setup["collage_parts_rescored"] * setup["train_images"] * len(setup["positions"]))
    whole = pool.whole & short
    return {
        "direction": how, "proposals": int(ranked), "shortlist": int(short.sum()),
        "random_whole_photos": int(is_random.sum()), "mirrored": int(pool.mirror.sum()),
        "exactly_scored": int(n_coarse + setup["fine_scored"] + setup["final_scored"] + setup["collages_scored"]
                              + setup["collage_parts_rescored"]),
        "coarse_scored": n_coarse, "pasted_forwards": int(forwards), **setup, **excluded,
        "seconds": round(t[-1] - t[0], 2),
        "stage_seconds": {k: round(b - a, 2) for k, a, b in zip(STAGES, t, t[1:])},
        "coarse_gain_mean": {
            "shortlist_whole": _mean(coarse[whole]), "shortlist_crops": _mean(coarse[short & ~pool.whole]),
            "random_whole": _mean(coarse[is_random]),
        },
        "index_vs_coarse_spearman": {
            "whole": _spearman(pool.score[whole], coarse[whole]),
            "crops": _spearman(pool.score[short & ~pool.whole], coarse[short & ~pool.whole]),
        },
        "best_gain": round(float(gain.max()), 4) if len(gain) else None,
        "best_train_success": round(float(wins.max()), 4) if len(wins) else None,
        "class_ranking": _class_ranking(s.classifier, s.index, pool.take(torch.nonzero(cut).flatten()), coarse[cut]),
        "class_ranking_stage": "coarse exact gain, best proposal per photo class (label, else top-1)",
    }


def _mean(x: torch.Tensor) -> float | None:
    return round(float(x.mean()), 4) if len(x) else None


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return round(float(torch.corrcoef(torch.stack([ra, rb]))[0, 1]), 4)


def _class_ranking(classifier, index: LibraryIndex, props: Proposals, gain: torch.Tensor) -> list[dict[str, Any]]:
    """Photo classes by the best exact gain among their proposals (label, else the model's top-1)."""
    cls = index.photo_class()[props.photo.numpy()]
    best: dict[int, list[float]] = {}
    for c, g in zip(cls.tolist(), gain.tolist()):
        best.setdefault(int(c), []).append(g)
    rows = [{"class": c, "name": classifier.classes.label(c), "best_gain": round(max(v), 4), "proposals": len(v)}
            for c, v in best.items()]
    return sorted(rows, key=lambda r: -r["best_gain"])
