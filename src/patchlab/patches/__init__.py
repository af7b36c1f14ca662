"""Patch building blocks the generators share: compositing (apply), candidates, EOT
placements, crops, the pair direction, feature rendering, the synth optimisation and the
donor-crop search. The generators themselves are `patchlab.generators`."""
from .apply import apply_at, apply_patch, centers_for, placement_grid
from .candidate import Candidate, load_patch

__all__ = ["Candidate", "apply_at", "apply_patch", "centers_for", "load_patch", "placement_grid"]
