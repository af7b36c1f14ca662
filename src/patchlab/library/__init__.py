"""Photo libraries: index a folder once per model, then search it for natural patches.

`index_library` stores pooled and spatial features of every photo (float16
memmaps, cached by model and content); `search_library` ranks whole photos and
crops along a pair's separating direction from the index alone, then scores
the best exactly by pasting them (Carter et al. 2019; Casper et al. 2022).
"""
from .index import LibraryIndex, check_library, index_library, library_records, spatial_basis
from .search import library_control_photos, random_library_photos, search_library

__all__ = [
    "LibraryIndex", "check_library", "index_library", "library_control_photos", "library_records", "random_library_photos",
    "search_library", "spatial_basis",
]
