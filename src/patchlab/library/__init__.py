"""Photo libraries: index a folder once per model, then search it for natural patches.

`index_library` stores pooled and spatial features of every photo (float16
memmaps, cached by model and content); `search_library` ranks whole photos and
crops along a pair's separating direction from the index alone, then scores
the best exactly by pasting them (Carter et al. 2019; Casper et al. 2022);
`control_photo_rows` picks the random photos of the library null control.
"""
from .controls import control_photo_rows
from .index import LibraryIndex, check_library, index_library, library_records, spatial_basis
from .search import SearchSettings, search_library

__all__ = [
    "LibraryIndex", "SearchSettings", "check_library", "control_photo_rows", "index_library", "library_records",
    "search_library", "spatial_basis",
]
