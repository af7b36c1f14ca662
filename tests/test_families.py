"""One network of each family, with random weights, built the way users build theirs (a spec plus a
weights file saved from the network, model options and preprocessing overrides; or `wrap`): the
feature layer is the last spatial map before pooling, captured as (B,C,H,W) with gradients, and
capturing leaves the logits unchanged."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from patchlab.errors import UserError
from patchlab.models import Classifier, load_classifier, wrap


@dataclass(frozen=True)
class Family:
    """A spec with its options, and the feature map the spec should give: (layer, (C,H,W))."""

    spec: str
    options: dict[str, Any]
    input_size: int | None  # a preprocessing override, when the model's own size is too slow for a test
    layer: str
    shape: tuple[int, int, int]


SWIN = {"img_size": 64, "window_size": 4, "embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
FAMILIES = {
    "resnet": Family("torchvision:resnet18", {}, 64, "layer4", (512, 2, 2)),
    "vit": Family("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}, None, "norm", (192, 4, 4)),
    "deit_distilled": Family("timm:deit_tiny_distilled_patch16_224", {"img_size": 32, "patch_size": 16, "depth": 2},
                             None, "norm", (192, 2, 2)),
    "vit_registers": Family("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "reg_tokens": 4},
                            None, "norm", (192, 4, 4)),
    "convnext": Family("timm:convnext_atto", {}, 64, "norm_pre", (320, 2, 2)),
    "mobilenet_v3": Family("torchvision:mobilenet_v3_small", {}, 64, "features", (576, 2, 2)),
    "swin": Family("timm:swin_tiny_patch4_window7_224", SWIN, None, "norm", (192, 2, 2)),
}


def _random_net(spec: str, options: dict[str, Any]) -> nn.Module:
    """A randomly initialised network of a spec, as a user trains one."""
    hub, name = spec.split(":")
    if hub == "timm":
        import timm

        return timm.create_model(name, pretrained=False, **options)
    import torchvision

    return torchvision.models.get_model(name, weights=None, **options)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Classifier]:
    """Each family through the registry, from a weights file saved from a random network."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for key, fam in FAMILIES.items():
        torch.manual_seed(0)
        torch.save(_random_net(fam.spec, fam.options).state_dict(), root / f"{key}.pth")
        out[key] = load_classifier(fam.spec, "cpu", weights=str(root / f"{key}.pth"), model_options=fam.options,
                                   preprocessing_overrides={"input_size": fam.input_size} if fam.input_size else None)
    return out


def _check_feature_map(clf: Classifier, layer: str, shape: tuple[int, int, int]) -> None:
    """The feature layer is `layer`, captured as (2,C,H,W) with gradients to the input; logits unchanged."""
    assert clf.feature_layer == layer and clf.layer_shapes()[layer] == shape
    s = clf.input_size
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0), requires_grad=True)
    logits, acts = clf.run(x, [layer])
    fmap = acts[layer]
    assert fmap.shape == (2, *shape) and shape[1] > 1 and shape[2] > 1
    (grad,) = torch.autograd.grad(fmap.square().sum(), x)
    assert grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(clf(x), logits.detach())
    assert all(not m._forward_hooks for m in clf.net.modules())


@pytest.mark.parametrize("key", list(FAMILIES))
def test_each_family_reads_its_last_spatial_map(built, key):
    fam = FAMILIES[key]
    clf = built[key]
    assert clf.num_classes == 1000 and clf.classes.label(0) == "tench"
    _check_feature_map(clf, fam.layer, fam.shape)
    if "vit" in key or "deit" in key:  # the map's channels are the embedding, the grid the patch grid
        assert clf.head is not None and clf.head.in_features == fam.shape[0]
        side = fam.options["img_size"] // fam.options["patch_size"]
        assert fam.shape[1:] == (side, side)


@pytest.mark.parametrize("key,prefix", [("vit", 1), ("deit_distilled", 2), ("vit_registers", 5)])
def test_token_maps_drop_class_distillation_and_register_tokens(built, key, prefix):
    clf = built[key]
    assert clf.architecture.prefix == prefix
    raw: dict[str, torch.Tensor] = {}
    handle = clf.net.norm.register_forward_hook(lambda _m, _i, o: raw.__setitem__("tokens", o))
    try:
        _, acts = clf.run(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), ["norm"])
    finally:
        handle.remove()
    fmap, tokens = acts["norm"], raw["tokens"]
    gh, gw = clf.architecture.grid
    assert tokens.shape[1] == prefix + gh * gw
    for i, j in [(0, 0), (0, gw - 1), (gh - 1, 0), (gh - 1, gw - 1)]:
        torch.testing.assert_close(fmap[:, :, i, j], tokens[:, prefix + i * gw + j])


def test_swin_stage_maps_are_permuted_from_nhwc(built):
    clf = built["swin"]
    raw: dict[str, torch.Tensor] = {}
    handle = clf.net.norm.register_forward_hook(lambda _m, _i, o: raw.__setitem__("nhwc", o))
    try:
        _, acts = clf.run(torch.rand(1, 3, 64, 64), ["norm", "layers.2"])
    finally:
        handle.remove()
    assert raw["nhwc"].shape == (1, 2, 2, 192)
    torch.testing.assert_close(acts["norm"], raw["nhwc"].permute(0, 3, 1, 2))
    assert acts["layers.2"].shape == (1, 96, 4, 4)


def test_class_token_heads_get_their_atlas_one_block_earlier(built):
    """With a class-token head the last block's patch tokens never reach the logits; the block before does."""
    clf = built["vit"]
    assert clf.layer_choices() == {"atlas": "blocks.10", "library index": "norm", "pair direction": "norm"}
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    logits, acts = clf.run(x, ["norm", "blocks.10"])
    g_last, g_before = torch.autograd.grad(logits[0, 3], [acts["norm"], acts["blocks.10"]])
    assert g_last.abs().max() == 0 and g_before.abs().max() > 0


def test_a_hook_on_a_token_layer_sees_and_replaces_the_map(built):
    """What atlases do: make the (B,C,H,W) map a gradient leaf and let a clone flow on."""
    clf = built["vit"]
    store: dict[str, torch.Tensor] = {}

    def leaf(_m, _i, out):
        store["h"] = out.detach().requires_grad_(True)
        return store["h"].clone()

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    handle = clf.layer("blocks.10").register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            logits = clf(x)
            (g,) = torch.autograd.grad(logits[:, 5].sum(), store["h"])
    finally:
        handle.remove()
    assert store["h"].shape == (2, 192, 4, 4) and g.abs().sum() > 0
    torch.testing.assert_close(logits.detach(), clf(x))


def test_explicit_layers_are_checked_against_the_model(built):
    clf = built["vit"]
    with pytest.raises(UserError, match=r"no layer 'blocks\.11\.atn'; did you mean blocks\.11\.attn"):
        clf.set_feature_layer("blocks.11.atn")
    with pytest.raises(UserError, match=r"blocks\.11\.attn\.k_norm.*\(3, 17, 64\) is not a spatial map.*4x4 patch grid"):
        clf.set_feature_layer("blocks.11.attn.k_norm")
    with pytest.raises(UserError, match=r"'head'.*\(1000,\) is not a spatial map"):
        clf.set_feature_layer("head")
    assert clf.feature_layer == "norm"
    clf.set_feature_layer("blocks.5")
    assert clf.feature_layer == "blocks.5" and clf.atlas_layer == "blocks.5"  # a user's choice holds for every use
    clf.set_feature_layer("norm")


def test_torchvision_transformers_through_wrap():
    """torchvision's ViT (one class token) and Swin (NHWC stages, then its own permute) as users wrap them."""
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16,
                                               mlp_dim=32)
    clf = wrap(vit, input_size=32)
    _check_feature_map(clf, "encoder", (16, 4, 4))
    assert clf.atlas_layer == "encoder.layers.encoder_layer_1"
    swin = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1],
                                              window_size=[4, 4])
    clf = wrap(swin, input_size=32)
    _check_feature_map(clf, "permute", (32, 4, 4))
    assert clf.layer_shapes()["norm"] == (32, 4, 4)  # the NHWC norm output, viewed
    clf.set_feature_layer("features.1")
    _check_feature_map(clf, "features.1", (16, 8, 8))


def test_the_lite_family_keeps_its_map_and_preprocessing(default_model):
    clf = default_model
    assert clf.preprocessing.as_dict() == {"input_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3,
                                           "crop_pct": 224 / 256, "interpolation": "bicubic"}
    _check_feature_map(clf, "head", (1280, 7, 7))


def test_a_ten_class_network_of_your_own_with_a_labels_file(tmp_path: Path):
    (tmp_path / "ten.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, "
        "padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))\n"
    )
    (tmp_path / "labels.txt").write_text("".join(f"kind {i}\n" for i in range(10)))
    clf = load_classifier(f"{tmp_path / 'ten.py'}:build", "cpu", labels=tmp_path / "labels.txt",
                          preprocessing_overrides={"input_size": 32})
    assert clf.num_classes == 10 and clf.classes.names[7] == "kind 7" and clf.classes.resolve("kind 2") == 2
    assert clf.head is clf.net[6]
    _check_feature_map(clf, "3", (12, 8, 8))
