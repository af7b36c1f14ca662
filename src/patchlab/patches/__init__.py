"""Patch candidates: compositing (apply), and generators (synth, feature, natural)."""
from .apply import apply_at, apply_patch, centers_for, placement_grid
from .candidate import Candidate, load_patch

__all__ = ["Candidate", "apply_at", "apply_patch", "centers_for", "load_patch", "placement_grid"]
