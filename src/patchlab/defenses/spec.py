"""Defence specs: `parse_defense("jpeg:75")` -> `Defense`, checked with one-line UserErrors.

Known defences (name:PARAMETER):
  jpeg:QUALITY         JPEG encode/decode at QUALITY 1..100 (Dziugaite et al. 2016; Guo et al. 2018)
  median:KERNEL        KERNELxKERNEL median filter, odd KERNEL >= 3 (feature squeezing, Xu et al. 2018)
  bitdepth:BITS        colour depth reduced to BITS 1..8 per channel (feature squeezing, Xu et al. 2018)
  patchcleanser:AREA   PatchCleanser double masking for a patch of up to AREA (0, 0.5] of the image
                       (Xiang et al., USENIX Security 2022)
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError

USAGE = "jpeg:QUALITY, median:KERNEL, bitdepth:BITS or patchcleanser:AREA"
MAX_AREA = 0.5
# integer-valued defences: name -> (parameter name, rule in words, check)
INTEGER_RULES: dict[str, tuple[str, str, Callable[[int], bool]]] = {
    "jpeg": ("quality", "an integer in 1..100", lambda v: 1 <= v <= 100),
    "median": ("kernel", "an odd integer >= 3", lambda v: v >= 3 and v % 2 == 1),
    "bitdepth": ("bits", "an integer in 1..8", lambda v: 1 <= v <= 8),
}
DEFENSES = (*INTEGER_RULES, "patchcleanser")
AREA_RULE = f"patchcleanser area must be a fraction of the image area in (0, {MAX_AREA}]"


@dataclass(frozen=True)
class Defense:
    """One defence: `name` (one of DEFENSES) and its parameter `value` (an int for jpeg,
    median and bitdepth; the patch area fraction for patchcleanser). str() gives the spec back."""

    name: str
    value: int | float

    def __post_init__(self) -> None:
        if self.name not in DEFENSES:
            raise UserError(f"unknown defence {self.name!r}; use {USAGE}")
        if self.name == "patchcleanser":
            if not (isinstance(self.value, (int, float)) and 0 < self.value <= MAX_AREA):
                raise UserError(f"{AREA_RULE}, got {self.value!r}")
            return
        what, rule, check = INTEGER_RULES[self.name]
        if not (isinstance(self.value, int) and not isinstance(self.value, bool) and check(self.value)):
            raise UserError(f"{self.name} {what} must be {rule}, got {self.value!r}")

    def __str__(self) -> str:
        return f"{self.name}:{self.value:g}" if self.name == "patchcleanser" else f"{self.name}:{self.value}"


def parse_defense(text: str) -> Defense:
    """A Defense from 'name:PARAMETER' (see the module docstring); UserError (one line) when the name is
    unknown, the parameter is missing or malformed, or it is out of range."""
    name, sep, raw = text.strip().partition(":")
    name, raw = name.strip().lower(), raw.strip()
    if name not in DEFENSES:
        raise UserError(f"unknown defence {name!r}; use {USAGE}")
    if not sep or not raw:
        raise UserError(f"defence {text.strip()!r} needs a parameter; use {USAGE}")
    if name == "patchcleanser":
        try:
            area = float(raw)
        except ValueError:
            area = math.nan
        if not math.isfinite(area):
            raise UserError(f"{AREA_RULE}, got {raw!r}")
        return Defense(name, area)
    try:
        value = int(raw)
    except ValueError:
        what, rule, _ = INTEGER_RULES[name]
        raise UserError(f"{name} {what} must be {rule}, got {raw!r}") from None
    return Defense(name, value)
