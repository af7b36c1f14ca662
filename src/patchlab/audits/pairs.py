"""Which class pairs an audit probes.

Three sources, each giving ordered (source, target) pairs with a score:
- `head_pairs`: from the model alone. Classes whose head directions point the
  same way (cosine of the mean-centred rows of the final linear layer) are
  the ones the model separates least; this is the class-similarity signal
  that SNAFUE (Casper et al. 2022) reads off a soft confusion matrix, without
  needing images. Each unordered pair is audited once, towards the class with
  the larger head bias (the class the model already leans to).
- `confusion_pairs`: from real photos (--data): the ordered pairs the model
  confuses most, as the fraction of source images it calls the target.
- `read_pairs_file`: an explicit CSV with `source,target` columns.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..classes import slugify
from ..data import discover, iter_batches
from ..errors import UserError
from ..pairdata import split_of
from ..pipelines.common import resolve_pair


@dataclass(frozen=True)
class Pair:
    """One ordered class pair to audit, with why it was chosen."""

    source: int
    target: int
    source_name: str
    target_name: str
    similarity: float | None  # cosine of the two centred head directions (None without a linear head)
    confusion: float | None = None  # fraction of source photos predicted as target (--data only)
    chosen_by: str = "head"

    def key(self) -> str:
        """Folder name for this pair inside the audit: '0801-snorkel-to-0983-scuba_diver'."""
        src, tgt = slugify(self.source_name)[:40], slugify(self.target_name)[:40]
        return f"{self.source:04d}-{src}-to-{self.target:04d}-{tgt}"

    def as_row(self) -> dict:
        return asdict(self)


def head_similarity(clf) -> torch.Tensor:
    """(C, C) cosine similarity of the mean-centred rows of the classifier's head."""
    if clf.head is None:
        raise UserError(f"model {clf.spec} has no linear head to compare classes with; use --data or --pairs-file")
    W = clf.head.weight.detach().double().cpu()
    Wc = torch.nn.functional.normalize(W - W.mean(0, keepdim=True), dim=1)
    return Wc @ Wc.T


def _ordered(clf, i: int, j: int) -> tuple[int, int]:
    """Direction of an unordered pair: towards the class with the larger head bias (ties: larger index)."""
    bias = getattr(clf.head, "bias", None)
    if bias is None:
        return (min(i, j), max(i, j))
    bi, bj = float(bias[i]), float(bias[j])
    return (i, j) if (bj, j) > (bi, i) else (j, i)


def head_pairs(clf, n: int) -> list[Pair]:
    """The n most similar class pairs by head direction, one direction each."""
    if n < 1:
        raise UserError("--pairs must be at least 1")
    S = head_similarity(clf)
    C = S.shape[0]
    iu = torch.triu_indices(C, C, 1)
    values = S[iu[0], iu[1]]
    top = torch.topk(values, min(n, values.numel()))
    pairs = []
    for v, k in zip(top.values.tolist(), top.indices.tolist()):
        s, t = _ordered(clf, int(iu[0, k]), int(iu[1, k]))
        pairs.append(Pair(s, t, clf.classes.label(s), clf.classes.label(t), round(v, 6)))
    return pairs


def train_records(records: list, seed: int) -> list:
    """Each class's photos in the TRAIN split of `patchlab.pairdata` (sorted by path, as probe sorts them)."""
    by_class: dict[int, list] = {}
    for r in sorted(records, key=lambda r: str(r.path)):
        by_class.setdefault(r.label, []).append(r)
    return [r for recs in by_class.values() for r, split in zip(recs, split_of(len(recs), seed)) if split == "train"]


def confusion_pairs(clf, data: str | Path, n: int, batch_size: int = 64, min_images: int = 3, seed: int = 0) -> list[Pair]:
    """The n ordered pairs most confused on the TRAIN-split photos in `data` (fraction of
    source images predicted as target), so the pairs are never chosen on the photos
    their probes count; only source classes with at least `min_images` such photos count."""
    if n < 1:
        raise UserError("--pairs must be at least 1")
    records = train_records([r for r in discover(data, clf.classes) if r.label is not None], seed)
    if not records:
        raise UserError(f"no labelled photos in {data}: a confusion matrix needs class folders or a labels CSV")
    C = clf.num_classes
    counts = torch.zeros(C, C, dtype=torch.float64)
    for batch in iter_batches(records, clf.input_size, clf.crop_pct, batch_size,
                              interpolation=clf.preprocessing.interpolation):
        with torch.inference_mode():
            pred = clf(batch.images.to(clf.device)).argmax(1).cpu()
        counts.index_put_((batch.labels.long(), pred), torch.ones(len(pred), dtype=torch.float64), accumulate=True)
    per_class = counts.sum(1, keepdim=True)
    rate = torch.where(per_class >= min_images, counts / per_class.clamp(min=1), torch.zeros_like(counts))
    rate.fill_diagonal_(0)
    if not (rate > 0).any():
        raise UserError(f"the model confuses no class pair on the train-split photos in {data} "
                        f"(needs classes with >= {min_images} of them, 2 in every 8 photos); "
                        "use --pairs without --data, or --pairs-file")
    S = head_similarity(clf) if clf.head is not None else None
    flat = rate.flatten()
    # rank by confusion, ties by head similarity
    tie = S.flatten() * 1e-6 if S is not None else torch.zeros_like(flat)
    order = torch.argsort(flat + tie, descending=True)
    pairs = []
    for k in order.tolist():
        if flat[k] <= 0 or len(pairs) >= n:
            break
        s, t = divmod(k, C)
        sim = round(float(S[s, t]), 6) if S is not None else None
        pairs.append(Pair(s, t, clf.classes.label(s), clf.classes.label(t), sim,
                          confusion=round(float(flat[k]), 6), chosen_by="confusion"))
    return pairs


def read_pairs_file(clf, path: str | Path) -> list[Pair]:
    """Pairs from a CSV with columns source,target (names, WordNet ids or indices; header optional)."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except FileNotFoundError:
        raise UserError(f"--pairs-file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --pairs-file {path}: {exc}") from None
    numbered = [(line, [c.strip() for c in r]) for line, r in enumerate(rows, 1)
                if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if numbered and [c.lower() for c in numbered[0][1][:2]] == ["source", "target"]:
        numbered = numbered[1:]
    if not numbered:
        raise UserError(f"--pairs-file {path} lists no pairs (expected lines 'source,target')")
    S = head_similarity(clf) if clf.head is not None else None
    pairs, seen = [], set()
    for line, r in numbered:
        if len(r) < 2 or not r[0] or not r[1]:
            raise UserError(f"--pairs-file {path}: line {line} needs two classes 'source,target', got {','.join(r)!r}")
        try:
            classes = resolve_pair(clf, r[0], r[1])
        except UserError as exc:
            raise UserError(f"--pairs-file {path}, line {line}: {exc}") from None
        s, t = classes.source, classes.target
        if (s, t) in seen:
            continue
        seen.add((s, t))
        sim = round(float(S[s, t]), 6) if S is not None else None
        pairs.append(Pair(s, t, clf.classes.label(s), clf.classes.label(t), sim, chosen_by="file"))
    return pairs
