"""Class names, WordNet ids and indices: resolve what users type.

ImageNet-1k names and WordNet ids come from the synset lists that timm ships
as package data; a display name is the first lemma of each synset.
"""
from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

_WNID = re.compile(r"^n\d{8}$")


def normalize(text: str) -> str:
    """Case, space, underscore and hyphen insensitive key: 'Scuba_Diver' -> 'scuba diver'."""
    return " ".join(re.split(r"[\s_\-]+", text.strip().lower())).strip()


def slugify(label: str) -> str:
    """File-name-safe form of a class label: 'scuba diver' -> 'scuba_diver'."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


@dataclass(frozen=True)
class ClassMatch:
    index: int
    name: str
    wnid: str | None

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "wnid": self.wnid}


@dataclass
class ClassIndex:
    """Names (and optional WordNet ids and alias lemmas) of a model's outputs."""

    names: list[str]
    wnids: list[str] | None = None
    aliases: list[list[str]] | None = None
    _by_key: dict[str, set[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {}
        for i, name in enumerate(self.names):
            keys = {normalize(name)} | {normalize(a) for a in (self.aliases[i] if self.aliases else [])}
            for key in keys:
                self._by_key.setdefault(key, set()).add(i)

    def __len__(self) -> int:
        return len(self.names)

    def match(self, index: int) -> ClassMatch:
        return ClassMatch(index, self.names[index], self.wnids[index] if self.wnids else None)

    def label(self, index: int) -> str:
        """A name that is unique among the classes (adds the WordNet id to duplicates)."""
        name = self.names[index]
        if len(self._by_key.get(normalize(name), ())) > 1 and self.wnids:
            return f"{name} ({self.wnids[index]})"
        return name

    def slug(self, index: int) -> str:
        """File-name-safe form of the label: 'scuba_diver'."""
        return slugify(self.label(index))

    def search(self, query: str) -> list[ClassMatch]:
        """Every class the query names exactly (index, WordNet id, name or lemma)."""
        q = query.strip()
        if re.fullmatch(r"\d+", q):
            i = int(q)
            return [self.match(i)] if 0 <= i < len(self.names) else []
        if self.wnids and _WNID.match(q.lower()):
            return [self.match(i) for i, w in enumerate(self.wnids) if w == q.lower()]
        return [self.match(i) for i in sorted(self._by_key.get(normalize(q), ()))]

    def suggest(self, query: str, n: int = 5) -> list[ClassMatch]:
        """Close names for a query that matched nothing ('scubadiver' -> scuba diver)."""
        q = normalize(query)
        squashed = {k.replace(" ", ""): k for k in self._by_key}
        hits = difflib.get_close_matches(q.replace(" ", ""), list(squashed), n=n, cutoff=0.6)
        keys = [squashed[h] for h in hits]
        keys += [k for k in self._by_key if q and q in k and k not in keys]
        out: list[ClassMatch] = []
        for k in keys:
            for i in sorted(self._by_key[k]):
                m = self.match(i)
                if m not in out:
                    out.append(m)
        return out[:n]

    def prediction(self, index: int, prob: float, *, digits: int | None = 4) -> dict[str, Any]:
        """{"index", "name", "prob"} of one class the model predicts; prob rounded to `digits`
        (None: kept as it is)."""
        p = float(prob)
        return {"index": int(index), "name": self.label(int(index)), "prob": p if digits is None else round(p, digits)}

    def top(self, probs: torch.Tensor, k: int = 1, *, digits: int | None = 4) -> list[list[dict[str, Any]]]:
        """The k most probable classes of each row of probabilities (N,K), as `prediction` dicts.
        k=1 takes the first maximal class of a row (as argmax does)."""
        values, indices = probs.max(-1, keepdim=True) if k == 1 else probs.topk(k, dim=-1)
        return [[self.prediction(i, v, digits=digits) for v, i in zip(vs, ix)]
                for vs, ix in zip(values.tolist(), indices.tolist())]

    def resolve(self, query: str) -> int:
        """One class index for what the user typed, or a UserError with suggestions."""
        found = self.search(query)
        if len(found) == 1:
            return found[0].index
        if len(found) > 1:
            opts = "; ".join(f"{m.index} {m.name}" + (f" ({m.wnid})" if m.wnid else "") for m in found)
            raise UserError(f"class {query!r} is ambiguous: {opts}. Give the index or WordNet id.")
        if re.fullmatch(r"\s*\d+\s*", query):
            raise UserError(f"class index {query.strip()} is out of range: this model has classes 0..{len(self.names) - 1}")
        sugg = self.suggest(query)
        hint = f"; did you mean {', '.join(repr(m.name) for m in sugg)}?" if sugg else ""
        raise UserError(f"unknown class {query!r}{hint} (see `patchlab classes QUERY`)")


def _timm_info():
    """timm's `data/_info` folder, found without importing timm (which pulls in torchvision)."""
    spec = importlib.util.find_spec("timm")
    if spec is None:
        raise UserError("ImageNet class names come from the timm package; install it with `pip install timm`")
    for location in spec.submodule_search_locations or ():
        info = Path(location) / "data" / "_info"
        if (info / "imagenet_synsets.txt").is_file():
            return info
    return resources.files("timm.data") / "_info"  # zipped or unusual installs


@lru_cache(maxsize=1)
def imagenet_classes() -> ClassIndex:
    """The 1000 ImageNet-1k classes in the standard index order."""
    info = _timm_info()
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    lemmas: dict[str, list[str]] = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        wnid, _, text = line.partition("\t")
        lemmas[wnid] = [t.strip() for t in text.split(",") if t.strip()]
    aliases = [lemmas[w] for w in wnids]
    return ClassIndex(names=[a[0] for a in aliases], wnids=wnids, aliases=aliases)


def generic_classes(n: int) -> ClassIndex:
    """Placeholder names for a model whose classes are not ImageNet-1k."""
    return ClassIndex(names=[f"class_{i}" for i in range(n)])


def classes_for(num_classes: int) -> ClassIndex:
    """ImageNet-1k's classes for a model with 1000 outputs, placeholder names otherwise."""
    return imagenet_classes() if num_classes == 1000 else generic_classes(num_classes)
