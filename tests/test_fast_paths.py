"""The fast paths per family: incremental pasted-image scoring (EfficientNet-Lite only), channels-last
input and CPU bfloat16 training work for a family or step aside, so the numbers are the plain path's."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from patchlab.classes import generic_classes
from patchlab.models import Classifier, wrap
from patchlab.patches.apply import CORNERS, apply_at
from patchlab.patches.crops import score_crops_by_setting
from patchlab.patches.region_forward import paste_forward
from patchlab.patches.synth import synthesize_patch


def _tiny_vit() -> Classifier:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                            embed_dim=32, num_heads=2, num_classes=10)
    return Classifier(net, spec="tiny-vit", classes=generic_classes(10), input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def _tiny_resnet() -> Classifier:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)
    return Classifier(net, spec="tiny-resnet", classes=generic_classes(10), input_size=48, mean=(0.5,) * 3,
                      std=(0.5,) * 3)


@pytest.mark.parametrize("make", [_tiny_vit, _tiny_resnet], ids=["timm-vit", "torchvision-resnet"])
def test_pasted_scoring_equals_the_plain_forward(make):
    """region_forward declines a network that is not an EfficientNet-Lite; the pasted-image scores are
    then exactly those of pasting and running the network in full."""
    clf = make()
    s = clf.input_size
    gen = torch.Generator().manual_seed(1)
    images, crops = torch.rand(3, 3, s, s, generator=gen), torch.rand(4, 3, 12, 12, generator=gen)
    assert paste_forward(clf, images) is None
    areas = (0.1, 0.3)
    gains, wins = score_crops_by_setting(clf, crops, images, 0, 1, areas, CORNERS, batch_size=5)
    with torch.no_grad():
        clean = clf(images).log_softmax(-1)
        base = (clean[:, 1] - clean[:, 0]).mean()
        for k, crop in enumerate(crops):
            for a, area in enumerate(areas):
                for p, pos in enumerate(CORNERS):
                    logp = clf(apply_at(images, crop, area, pos)).log_softmax(-1)
                    torch.testing.assert_close(gains[k, a, p], (logp[:, 1] - logp[:, 0]).mean() - base,
                                               rtol=1e-5, atol=1e-5)
                    assert wins[k, a, p] == (logp.argmax(-1) == 1).float().mean()
    assert gains.abs().max() > 0  # the crops move the scores: the comparison is not of constants


class ViewNet(nn.Module):
    """A classic CNN that flattens with `.view`, which channels-last maps do not allow."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5)
        self.fc = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(-1, 4 * 12 * 12))


def test_channels_last_steps_aside_where_the_network_cannot_take_it():
    torch.manual_seed(0)
    net = ViewNet()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(RuntimeError, match="view"):
        net(x.contiguous(memory_format=torch.channels_last))
    clf = wrap(net, input_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, labels=None)
    assert clf.channels_last is False
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net((x - 0.5) / 0.5), rtol=0, atol=0)
    # the families that take it keep it: a transformer's patch embedding is a convolution
    assert _tiny_vit().check_channels_last() and _tiny_resnet().check_channels_last()


def test_bfloat16_training_runs_on_a_transformer():
    """amp=True asks for bfloat16 autocast on any CPU (elsewhere it is used only where native): the
    transformer's attention and the EOT step run in it and give a finite patch of the asked size."""
    clf = _tiny_vit()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cand = synthesize_patch(clf, images, 1, 0, steps=2, patch_px=8, batch_size=2, amp=True,
                            generator=torch.Generator().manual_seed(3))
    assert cand.provenance["autocast"] == "bfloat16" and cand.patch.shape == (3, 8, 8)
    assert torch.isfinite(cand.patch).all()
