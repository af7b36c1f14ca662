"""Activation atlases and class-pair donor discovery (Carter et al., "Activation Atlas", Distill 2019).

collect -> layout -> grid -> icons; pair (class-pair view) -> donors; run.build_atlas ties them together
(config: its settings; pools: its images; donor_run: donor ranking in a run; result: what it returns and writes).
"""
from .config import AtlasConfig
from .collect import Activations, attribute_batch, collect, folder_batches, tensor_batches
from .donors import activation_scores, head_alignment, rank_donors, shortlist
from .grid import Cells, bin_points, cells_table, make_grid
from .layout import CLASS_ATLAS, WHOLE_LAYER, Layout, layout, normalize_layout, whiten
from .pair import PairView, pair_view
from .result import AtlasResult
from .run import build_atlas

__all__ = [
    "Activations", "attribute_batch", "collect", "folder_batches", "tensor_batches",
    "activation_scores", "head_alignment", "rank_donors", "shortlist",
    "Cells", "bin_points", "cells_table", "make_grid",
    "CLASS_ATLAS", "WHOLE_LAYER", "Layout", "layout", "normalize_layout", "whiten",
    "PairView", "pair_view", "AtlasConfig", "AtlasResult", "build_atlas",
]
