"""What every command does first, written once: check the input paths and the budget, load the
classifier (spec, weights, labels file, feature layer, preprocessing overrides), resolve the
SOURCE -> TARGET pair (refusing the same class), name the run folder, and record the inputs in
the run's config (`patchlab.runfolder.RunConfig`)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

from ..generators.plan import Plan, get_plan
from ..data import check_photo_folder
from ..errors import UserError
from ..library import check_library
from ..models import Classifier, load_classifier
from ..pairdata import ANY, SplitSizes
from ..runfolder import DataSource, RunConfig


def check_paths(*, data: str | Path | None = None, donor_data: str | Path | None = None,
                library: str | Path | None = None) -> None:
    """UserError for a missing path, or a --library or --donor-data folder with no readable
    photo (found before minutes of work)."""
    for path, what in ((data, "--data"), (donor_data, "--donor-data"), (library, "--library")):
        if path is not None and not Path(path).exists():
            raise UserError(f"{what} path does not exist: {path}")
    if library is not None:
        check_library(library)
    if donor_data is not None and Path(donor_data).is_dir():  # a file may be a labels CSV
        check_photo_folder(Path(donor_data), "--donor-data")


def check_inputs(budget: str, *, data: str | Path | None = None, donor_data: str | Path | None = None,
                 library: str | Path | None = None) -> Plan:
    """The Plan named `budget`, after `check_paths`; UserError for an unknown budget."""
    plan = get_plan(budget)
    check_paths(data=data, donor_data=donor_data, library=library)
    return plan


class ModelOptions(TypedDict, total=False):
    """What every model command takes beside the spec and weights file: a labels file naming the
    model's outputs, and preprocessing overrides (None: the model's own; see `Preprocessing`)."""

    labels: str | Path | None
    input_size: int | None
    mean: Sequence[float] | str | None
    std: Sequence[float] | str | None
    crop_pct: float | None
    interpolation: str | None


PREPROCESSING_OPTIONS = ("input_size", "mean", "std", "crop_pct", "interpolation")
MODEL_OPTIONS = ("labels", *PREPROCESSING_OPTIONS)


def preprocessing_overrides(options: ModelOptions) -> dict[str, Any]:
    """The preprocessing fields `options` set (those not None); TypeError for a key that is not a model option."""
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected model option(s) {', '.join(unknown)}; known: {', '.join(MODEL_OPTIONS)}")
    return {k: options[k] for k in PREPROCESSING_OPTIONS if options.get(k) is not None}


def load_model(model: str, device: str = "auto", weights: str | Path | None = None, *, layer: str | None = None,
               direction: bool = False, **options: Unpack[ModelOptions]) -> Classifier:
    """The classifier of a model spec (`patchlab models`: a name, `timm:NAME`, `FILE.py:FUNCTION`, ...) with
    its weights file, labels file, feature layer (checked against the model; None: its last spatial map)
    and preprocessing overrides, on `device`. direction: the command follows the pair direction at the
    feature layer (probe, paste, audit; see `check_direction_layer`)."""
    labels = options.get("labels")
    clf = load_classifier(model, device, weights=str(weights) if weights else None, labels=labels, layer=layer,
                          preprocessing_overrides=preprocessing_overrides(options) or None)
    if direction:
        check_direction_layer(clf)
    return clf


def check_direction_layer(classifier: Classifier) -> None:
    """UserError when the pair direction cannot be read at the feature layer: the direction is the
    linear head's w_target - w_source on its input features, so the layer's map must have as many
    channels as the head has inputs (an earlier stage does not; a map pooled to 1x1 at a small input
    size leaves only an earlier one). A head that reads no spatial map (MobileNetV3's two-layer head)
    passes: the direction-led candidates step aside with a note."""
    if classifier.head is None or classifier.direction_head is not None:
        return
    layer, inputs = classifier.feature_layer, classifier.head.in_features
    shapes = classifier.layer_shapes()
    channels = shapes[layer][0]
    if any(len(shape) == 3 and shape[0] == inputs for shape in shapes.values()):
        raise UserError(f"layer {layer!r} of model {classifier.spec} has {channels} channels, but its head reads "
                        f"{inputs} features: the pair direction lives there, so give --layer a map of {inputs} "
                        "channels (see `patchlab layers`), or a larger --input-size; atlases take any spatial layer")


def model_identity(layer: str | None = None, **options: Unpack[ModelOptions]) -> dict[str, Any]:
    """The model choices beside spec and weights that change a run's results, as `run_identity` takes them."""
    overrides = preprocessing_overrides(options)
    return {"labels": options.get("labels"), "layer": layer,
            "preprocessing": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()} or None}


@dataclass(frozen=True)
class ClassPair:
    """The resolved SOURCE -> TARGET of a command; source None is 'any class but the target'."""

    classifier: Classifier
    source: int | None
    target: int

    @property
    def source_label(self) -> str:
        return ANY if self.source is None else self.classifier.classes.label(self.source)

    @property
    def target_label(self) -> str:
        return self.classifier.classes.label(self.target)

    def slug(self) -> str:
        """'snorkel-to-scuba_diver' (folder names)."""
        return "-to-".join(slugs(self.classifier, self.source, self.target))


def resolve_pair(classifier: Classifier, source: str | int, target: str | int, *, allow_any: bool = False) -> ClassPair:
    """SOURCE and TARGET (names, WordNet ids or indices) as class indices; with allow_any, source
    'any' is None. UserError for an unknown class, or the same class twice."""
    src = None if allow_any and str(source).strip().lower() == ANY else classifier.classes.resolve(str(source))
    tgt = classifier.classes.resolve(str(target))
    if src == tgt:
        raise UserError(f"source and target are the same class ({classifier.classes.label(tgt)!r})")
    return ClassPair(classifier, src, tgt)


def slugs(classifier: Classifier, *classes: int | None) -> list[str]:
    """Each class as a folder-name slug ('any' for None)."""
    return [ANY if c is None else classifier.classes.slug(c) for c in classes]


def run_dir_name(what: str, command: str | None = None) -> str:
    """A new run folder's name: '<time>-<what>' (probe, evaluate) or '<command>-<what>-<time>'."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{what}" if command is None else f"{command}-{what}-{stamp}"


def model_record(classifier: Classifier, *, labels: str | Path | None = None, layers: bool = False) -> dict[str, Any]:
    """How a run's model was prepared, as its config records it: spec, labels file, the layer each use
    read (`Classifier.layer_choices`; only for a command that reads one, `layers`) and preprocessing."""
    return {"model": classifier.spec, "labels": str(Path(labels).resolve()) if labels else None,
            "layer": classifier.layer_choices() if layers else None,
            "preprocessing": classifier.preprocessing.as_dict()}


def run_config(source: str | None, target: str | None, *, data: str | Path | None, budget: str | None = None,
               splits: SplitSizes | None = None, weights: str | Path | None = None,
               classifier: Classifier | None = None, labels: str | Path | None = None, layers: bool = False,
               **settings: Any) -> RunConfig:
    """A command's config as every command records it: classes, data source, budget, the split
    sizes asked of `patchlab.pairdata`, weights file, the model as `model_record` gives it (with
    `classifier`); then the command's own settings."""
    model = model_record(classifier, labels=labels, layers=layers) if classifier is not None else {}
    return RunConfig(source, target, DataSource.of(data), budget, asdict(splits) if splits else None,
                     str(weights) if weights else None, **model, extra=settings)
