"""A photo library indexed once per model: features on disk, searched per pair.

One streamed, batched forward pass over a folder of photos (labelled or not)
stores, per photo, what the model sees in its centre crop: the pooled features
at the classifier's feature layer (N,C), the spatial feature map (N,h,w,C) --
or its projection on a fixed basis of `spatial_dim` directions for large
libraries -- and the model's own top-1 class and probability, all from the
same forward pass. Arrays are float16 `.npy` files, written row by row and
opened as memory maps, so a library never has to fit in RAM. The cache folder is keyed by the model's
fingerprint and the library's content (relative paths, sizes, mtimes, labels)
and written to a temporary folder renamed into place at the end, so an
interrupted index is never used.

The index serves searches for natural patches in the spirit of Carter et al.
2019 (Activation Atlas: a real photo of something else flips a pair) and of
Casper et al. 2022 (SNAFUE: copy/paste search by feature similarity).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache import cache_dir, cache_key
from ..data import (
    DECODE_VERSION, ImageRecord, check_photo_folder, discover, iter_batches, list_image_files, load_images,
    pixels_to_float,
)
from ..errors import UserError
from ..models import model_fingerprint

log = logging.getLogger("patchlab")

VERSION = 1  # bump when the stored arrays change meaning
AUTO_PROJECT_ABOVE = 20_000  # libraries larger than this store projected spatial maps by default
AUTO_SPATIAL_DIM = 256  # head-SVD basis: rank correlation of cell scores ~0.77 with full maps (default model)
BASIS_SEED = 0


@dataclass
class LibraryIndex:
    """Per-photo features of a library (row i <-> paths[i]).

    pooled (N,C) and spatial (N,h,w,D) are float16 memmaps; D = C (full) or
    `spatial_dim` with `basis` (C,D) orthonormal columns: spatial = features @ basis.
    labels (N,) hold class indices, -1 when unlabelled; top1 / top1_prob are the
    model's own call on the photo. skipped: [{"path", "reason"}] for files that
    could not be decoded. `built` is True when this call ran the forward pass.
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    pooled: np.ndarray
    spatial: np.ndarray
    top1: np.ndarray
    top1_prob: np.ndarray
    skipped: list[dict[str, str]]
    input_size: int
    crop_pct: float
    folder: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    basis: np.ndarray | None = None
    built: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return int(self.spatial.shape[1]), int(self.spatial.shape[2])

    def photo_class(self) -> np.ndarray:
        """(N,) the photo's label where known, else the model's top-1."""
        return np.where(self.labels >= 0, self.labels, self.top1)

    def project(self, direction: torch.Tensor) -> torch.Tensor:
        """A (C,) feature-layer direction in the spatial store's coordinates: (D,)."""
        d = direction.detach().float().cpu()
        return d if self.basis is None else torch.from_numpy(self.basis).float().T @ d

    def pooled_scores(self, direction: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """d . pooled for every photo: (N,) float32, read in chunks."""
        d = direction.detach().float().cpu()
        parts = [torch.from_numpy(np.asarray(self.pooled[i : i + chunk], dtype=np.float32)) @ d
                 for i in range(0, len(self), chunk)]
        return torch.cat(parts) if parts else torch.empty(0)

    def cell_scores(self, direction: torch.Tensor, rows: slice | np.ndarray) -> torch.Tensor:
        """d . spatial for the photos `rows`: (n,h,w) float32 (d projected on demand)."""
        block = torch.from_numpy(np.asarray(self.spatial[rows], dtype=np.float32))
        return block @ self.project(direction)

    def load_photos(self, indices: Sequence[int]) -> torch.Tensor:
        """Re-decode photos `indices` as the model sees them: (k,3,S,S) in [0,1]."""
        idx = [int(i) for i in indices]
        if not idx:
            return torch.empty(0, 3, self.input_size, self.input_size)
        records = [ImageRecord(self.root / self.paths[i]) for i in idx]
        got = load_images(records, self.input_size, self.crop_pct, batch_size=max(1, min(64, len(idx))), interpolation=self.manifest.get("interpolation", "bicubic"))
        if len(got) != len(idx):
            bad = "; ".join(got.skipped[:3])
            raise UserError(f"library {self.root} changed since it was indexed ({bad}); index it again")
        return got.images


# -- the library's files and its cache key ---------------------------------------
def library_records(folder: str | Path, classes) -> list[ImageRecord]:
    """Photos under `folder`: labelled by `patchlab.data.discover` layouts, else every image file (recursive)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"library must be a folder of photos: {root}")
    try:
        records = discover(root, classes)
    except UserError:
        records = []
    if not records or all(r.label is None for r in records):
        records = [ImageRecord(p) for p in list_image_files([root])]
    if not records:
        raise UserError(f"no images found in library {root}")
    return records


def check_library(folder: str | Path) -> Path:
    """Fail fast, before any forward pass: UserError unless `folder` is a folder with at least
    one photo that decodes (`patchlab.data.check_photo_folder`)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--library must be a folder of photos: {root}")
    return check_photo_folder(root, "library")


def _relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def content_digest(root: Path, records: Sequence[ImageRecord]) -> str:
    """SHA-256 over sorted (relative path, label, size, mtime_ns) of every file."""
    rows = []
    for r in records:
        try:
            st = os.stat(r.path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        rows.append(f"{_relative(root, r.path)}\t{-1 if r.label is None else r.label}\t{size}\t{mtime}")
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update(row.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _resolve_dim(spatial_dim: int | None, n: int, channels: int) -> int:
    if spatial_dim is None:
        spatial_dim = AUTO_SPATIAL_DIM if n > AUTO_PROJECT_ABOVE else channels
    if spatial_dim < 1:
        raise UserError(f"spatial_dim must be positive, got {spatial_dim}")
    return min(int(spatial_dim), channels)


def _feature_channels(classifier) -> int:
    return int(classifier.layer_shapes()[classifier.feature_layer][0])


def spatial_basis(classifier, channels: int, dim: int) -> tuple[np.ndarray | None, str]:
    """(C,dim) orthonormal basis for projected spatial maps, and what it is.

    With a linear head on the C pooled features: the top right-singular vectors
    of the centred head weights, the subspace every pair direction
    w_target - w_source lies in (data-free, deterministic). Otherwise a seeded
    random orthonormal basis. On the default model and 500 photos, over six
    pairs, the rank correlation of projected with full cell scores is 0.43 /
    0.57 / 0.77 at 64 / 128 / 256 dims (random basis: 0.23 / 0.29 / 0.42; a
    PCA of the photos' features: 0.38 / 0.50 / 0.64).
    """
    if dim >= channels:
        return None, "full"
    head = classifier.head
    if head is not None and head.in_features == channels:
        w = head.weight.detach().double().cpu()
        _, _, vh = torch.linalg.svd(w - w.mean(0, keepdim=True), full_matrices=False)
        return vh[:dim].T.float().numpy().copy(), "head-svd"
    g = torch.Generator().manual_seed(BASIS_SEED)
    q, _ = torch.linalg.qr(torch.randn(channels, dim, generator=g, dtype=torch.float64))
    return q.float().numpy().copy(), f"random-orthonormal(seed={BASIS_SEED})"


# -- building -----------------------------------------------------------------------
def _default_workers(n: int, batch_size: int, device: torch.device) -> int:
    """Decoding processes: none for a couple of batches; on a GPU, enough to keep up with it
    (up to 8); on CPU one if a core is left over by the forward's threads, else none (this
    process then decodes each batch in turn on one thread per core): on 2 cores a decode
    worker beside the 2-thread forward was slower than decoding in turn (61.9 against
    78.5 img/s, `experiments/bench_library.py`; with the centre-box resampling and two
    decode threads 100.2 against 73.3)."""
    cores = os.cpu_count() or 1
    if n <= 2 * batch_size or cores < 2:
        return 0
    if device.type == "cuda":
        return min(8, cores - 1)
    return 1 if cores > torch.get_num_threads() else 0


def _batches(records, classifier, batch_size: int, workers: int, progress: bool) -> Iterator[tuple[Any, list]]:
    """Decoded batches with the records that failed in each (DataLoader order is kept)."""
    it = iter_batches(records, classifier.input_size, classifier.crop_pct, batch_size, workers, uint8=True, interpolation=classifier.preprocessing.interpolation)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=-(-len(records) // batch_size), desc="index", unit="batch")
    for b, batch in enumerate(it):
        chunk = records[b * batch_size : (b + 1) * batch_size]
        good = set(batch.paths)
        yield batch, [r for r in chunk if str(r.path) not in good]


def shrink_npy(path: Path, rows: int) -> None:
    """Cut an .npy file to its first `rows` rows in place: rewrite the shape in its header
    (padded to the same length) and truncate the data; O(1), no copy."""
    fmt = np.lib.format
    with open(path, "r+b") as fh:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
        prefix = 8 + (2 if version == (1, 0) else 4)
        header = repr({"descr": fmt.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])})
        if fortran or len(header) + 1 > offset - prefix:
            raise ValueError(f"cannot shrink {path} in place")
        fh.seek(prefix)
        fh.write(header.encode("latin1").ljust(offset - prefix - 1) + b"\n")
        fh.truncate(offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


class _Store:
    """The .npy files of an index being written, sized for all records (float16); rows are
    written through plain file handles (no mapping, so resident memory stays flat) and the
    files are cut to the rows written at the end."""

    def __init__(self, tmp: Path, n: int, channels: int, hw: tuple[int, int], dim: int):
        self.tmp, self.n, self.row = tmp, n, 0
        self.shapes = {"pooled": (n, channels), "spatial": (n, *hw, dim)}
        self.files, self.offsets = {}, {}
        for name, shape in self.shapes.items():
            mm = np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", np.float16, shape)
            self.offsets[name] = mm.offset
            del mm
            self.files[name] = open(tmp / f"{name}.npy", "r+b")  # closed by close() / abort()
        self.top1 = np.zeros(n, np.int32)
        self.prob = np.zeros(n, np.float32)

    def write(self, pooled: np.ndarray, spatial: np.ndarray, top1: np.ndarray, prob: np.ndarray) -> None:
        r0, r1 = self.row, self.row + len(pooled)
        for name, block in (("pooled", pooled), ("spatial", spatial)):
            fh = self.files[name]
            fh.seek(self.offsets[name] + r0 * block[0].nbytes)
            fh.write(np.ascontiguousarray(block, dtype=np.float16).tobytes())
        self.top1[r0:r1], self.prob[r0:r1] = top1, prob
        self.row = r1

    def abort(self) -> None:
        for fh in self.files.values():
            fh.close()

    def close(self) -> dict[str, list[int]]:
        """Close the files, cut them to the rows written (when files were skipped); their shapes."""
        for name, fh in self.files.items():
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the folder is renamed into place
            fh.close()
            if self.row < self.n:
                shrink_npy(self.tmp / f"{name}.npy", self.row)
        return {name: [self.row, *shape[1:]] for name, shape in self.shapes.items()}


@torch.inference_mode()
def _forward(classifier, images: torch.Tensor, basis: torch.Tensor | None):
    """One forward pass on uint8 or float images: pooled (B,C), spatial (B,h,w,D), top-1 and its
    prob (channels-last input)."""
    x = images.to(classifier.device)
    x = (pixels_to_float(x) if x.dtype == torch.uint8 else x).contiguous(memory_format=torch.channels_last)
    logits, acts = classifier.run(x, [classifier.feature_layer])
    fmap = acts[classifier.feature_layer].float()
    spatial = fmap.permute(0, 2, 3, 1)
    if basis is not None:
        spatial = spatial @ basis
    prob, top = logits.float().softmax(-1).max(-1)
    return fmap.mean(dim=(2, 3)), spatial, top, prob


def _write_arrays(classifier, records, tmp: Path, dim: int, basis_np, batch_size, workers, progress):
    """Stream the library through the model into `tmp`; returns (store, kept records, skipped)."""
    basis = None if basis_np is None else torch.from_numpy(basis_np).to(classifier.device)
    store, kept, skipped = None, [], []
    try:
        for batch, failed in _batches(records, classifier, batch_size, workers, progress):
            skipped += [(r, msg) for r, msg in zip(failed, batch.skipped)]
            if not len(batch):
                continue
            pooled, spatial, top, prob = _forward(classifier, batch.images, basis)
            if store is None:
                store = _Store(tmp, len(records), pooled.shape[1], tuple(spatial.shape[1:3]), spatial.shape[3])
            store.write(pooled.half().cpu().numpy(), spatial.half().cpu().numpy(), top.cpu().numpy(),
                        prob.cpu().numpy())
            kept += [ImageRecord(Path(p), None if int(lab) < 0 else int(lab))
                     for p, lab in zip(batch.paths, batch.labels)]
    except BaseException:
        if store is not None:
            store.abort()
        raise
    if store is None:
        raise UserError(f"none of the {len(records)} library files could be decoded as an image")
    return store, kept, skipped


def _manifest(classifier, root: Path, key: str, kept, skipped, shapes, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "patchlab-library", "version": VERSION, "key": key, "complete": True,
        "model": model_fingerprint(classifier), "spec": classifier.spec, "layer": classifier.feature_layer,
        "input_size": classifier.input_size, "crop_pct": classifier.crop_pct, "interpolation": classifier.preprocessing.interpolation, "root": str(root),
        "files": [_relative(root, r.path) for r in kept],
        "labels": [-1 if r.label is None else int(r.label) for r in kept],
        "skipped": [{"path": _relative(root, r.path), "reason": msg} for r, msg in skipped],
        "shapes": shapes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info,
    }


def _build(classifier, root: Path, records, key: str, tmp: Path, spatial_dim, batch_size, workers, progress) -> None:
    """Index `records` into the empty folder `tmp` (manifest.json written last)."""
    channels = _feature_channels(classifier)
    dim = _resolve_dim(spatial_dim, len(records), channels)
    basis, basis_kind = spatial_basis(classifier, channels, dim)
    if workers is None:
        workers = _default_workers(len(records), batch_size, classifier.device)
    t0 = time.perf_counter()
    store, kept, skipped = _write_arrays(classifier, records, tmp, dim, basis, batch_size, workers, progress)
    shapes = store.close()
    seconds = time.perf_counter() - t0
    np.save(tmp / "top1.npy", store.top1[: store.row])
    np.save(tmp / "top1_prob.npy", store.prob[: store.row])
    if basis is not None:
        np.save(tmp / "basis.npy", basis)
    info = {
        "spatial_dim": dim, "basis": basis_kind, "batch_size": batch_size, "workers": workers,
        "seconds": round(seconds, 3), "images_per_s": round(store.row / max(seconds, 1e-9), 2),
        "device": str(classifier.device),
    }
    man = _manifest(classifier, root, key, kept, skipped, shapes, info)
    (tmp / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")


def _open(folder: Path, root: Path) -> LibraryIndex:
    man = json.loads((folder / "manifest.json").read_text())
    if not man.get("complete") or man.get("version") != VERSION:
        raise ValueError("incomplete or old index")
    pooled = np.load(folder / "pooled.npy", mmap_mode="r")
    spatial = np.load(folder / "spatial.npy", mmap_mode="r")
    n = len(man["files"])
    if pooled.shape[0] != n or spatial.shape[0] != n or list(spatial.shape) != man["shapes"]["spatial"]:
        raise ValueError("array shapes do not match the manifest")
    basis = np.load(folder / "basis.npy") if (folder / "basis.npy").is_file() else None
    return LibraryIndex(
        root=root, paths=list(man["files"]), labels=np.asarray(man["labels"], dtype=np.int64), pooled=pooled,
        spatial=spatial, top1=np.load(folder / "top1.npy").astype(np.int64),
        top1_prob=np.load(folder / "top1_prob.npy"),
        skipped=list(man["skipped"]), input_size=int(man["input_size"]), crop_pct=float(man["crop_pct"]),
        folder=folder, manifest=man, basis=basis,
    )


def _clean_stale(cache_root: Path, key: str) -> None:
    """Remove temporary folders of this key left by interrupted builds (their process is gone)."""
    for tmp in cache_root.glob(f".{key}.*.tmp"):
        try:
            pid = int(tmp.name.split(".")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def index_library(
    classifier,
    folder: str | Path,
    *,
    batch_size: int = 32,
    cache_root: str | Path | None = None,
    progress: bool = False,
    spatial_dim: int | None = None,
    workers: int | None = None,
) -> LibraryIndex:
    """Index a folder of photos for `classifier` once; later calls load the cached memmaps.

    spatial_dim: None stores full spatial maps up to 20k photos and projects on
    256 directions above (see `spatial_basis`); an int < C always projects.
    workers: decoding processes for the DataLoader (None: 1 for large folders).
    Changing, adding or removing a file (size or mtime) or a label gives a new key.
    """
    root = Path(folder).resolve()
    records = library_records(root, classifier.classes)
    cache_root = Path(cache_root) if cache_root is not None else cache_dir() / "library"
    key = cache_key(kind="library", version=VERSION, decode=DECODE_VERSION, model=model_fingerprint(classifier),
                    layer=classifier.feature_layer, size=classifier.input_size, crop_pct=classifier.crop_pct,
                    spatial_dim=spatial_dim, files=content_digest(root, records), **({} if classifier.preprocessing.interpolation == "bicubic" else {"interpolation": classifier.preprocessing.interpolation}))
    final = cache_root / key
    if (final / "manifest.json").is_file():
        try:
            return _open(final, root)
        except Exception as exc:  # damaged entry: rebuild it
            log.warning("library index %s is unusable (%s); rebuilding", final, exc)
            shutil.rmtree(final, ignore_errors=True)
    cache_root.mkdir(parents=True, exist_ok=True)
    _clean_stale(cache_root, key)
    tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{key}.{os.getpid()}.", suffix=".tmp"))
    try:
        _build(classifier, root, records, key, tmp, spatial_dim, batch_size, workers, progress)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same index first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    index = _open(final, root)
    index.built = True
    return index
