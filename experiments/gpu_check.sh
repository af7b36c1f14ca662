#!/usr/bin/env bash
# The one prepared script a session runs on the GPU machine (device tool), within ~8 minutes.
# Prints each figure with the device name; writes a log to $OUT (or ./gpu_check.log).
#
# Here, once (the GPU machine has torch but not our other packages; see the device README):
#   echo /.whl/ >> .git/info/exclude
#   bash experiments/gpu_wheels.sh            # pip download of our pure-Python / manylinux deps into .whl/
# Then, via the device tool:  run(command="bash experiments/gpu_check.sh", carry=[".whl"], timeout_s=590)
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-.}/gpu_check.log"
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD/src"
else
  export PYTHONPATH="$PWD/src"
fi
export PATCHLAB_CACHE=/tmp/patchlab-cache  # cold cache for the timings
python3 - <<'PY'
import torch
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA", "| torch", torch.__version__)
PY
step() { echo; echo "== $1"; shift; /usr/bin/time -f "   wall %e s" "$@"; }
step "CUDA tests (CPU/GPU-equal seeding, synth on cuda)" python3 -m pytest -q -x -k "cuda" tests/test_pairdata.py tests/test_synth.py
step "probe --budget quick, cold cache" python3 -m patchlab probe --classes snorkel scuba_diver --budget quick --device cuda --out /tmp/gpu-runs
step "probe --budget standard, cold cache" python3 -m patchlab probe --classes snorkel scuba_diver --budget standard --device cuda --out /tmp/gpu-runs
step "evaluation throughput vs plain forward" python3 experiments/bench_evaluate.py --device cuda --images 64 --placements 8
step "EOT step vs bare forward+backward, and ART" python3 experiments/bench_patch.py --device cuda
step "audit --pairs 20 --budget quick" python3 -m patchlab audit --pairs 20 --budget quick --device cuda --out /tmp/gpu-audit
echo; echo "log: $log"
