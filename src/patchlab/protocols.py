"""One source of truth for the evaluation protocols, the headline protocol and
default patch sizes (fractions of the image AREA).

- static: one size and placement for all images (Carter et al. 2019);
- dynamic: the best placement x size per image (Carter et al. 2019);
- random: random placements and rotations (Brown et al. 2017), the headline:
  it needs no per-image choice, so it is the fairest single number;
- physical: random placements through a print-and-camera transform (printer
  gamut, perspective, lighting, blur, noise, JPEG: `patchlab.patches.physical`;
  EOT, Athalye et al. 2018; RP2, Eykholt et al. 2018). Measured only when asked
  for: PROTOCOLS, the default set, leaves it out; ALL_PROTOCOLS names every one.
"""
from __future__ import annotations

from collections.abc import Iterable

PROTOCOLS = ("static", "dynamic", "random")
PHYSICAL = "physical"
ALL_PROTOCOLS = PROTOCOLS + (PHYSICAL,)
PRIMARY_PROTOCOL = "random"
DEFAULT_SIZES = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40)


def primary_of(protocols: Iterable[str]) -> str:
    """The headline protocol among those measured (PRIMARY_PROTOCOL first)."""
    protocols = list(protocols)
    return next(p for p in (PRIMARY_PROTOCOL,) + ALL_PROTOCOLS if p in protocols)
