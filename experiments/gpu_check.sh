#!/usr/bin/env bash
# The one prepared script a session runs on the GPU machine (device tool), within ~8 minutes.
# Prints each figure with the device name; writes a log to $OUT (or ./gpu_check.log).
#
# Here, once (the GPU machine has torch but not all our packages; see the device README):
#   bash experiments/gpu_prepare.sh   # the missing wheels into .whl/, 200 real photos into .gpu_photos/ (both ignored)
# Then, via the device tool:  run(command="bash experiments/gpu_check.sh", carry=[".whl", ".gpu_photos"], timeout_s=590)
# Each step has its own time limit (STEP_LIMIT, default 240 s), so one slow step cannot cost the rest.
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
step() {  # name, command...: runs it under its time limit and prints its wall time and exit status
  local name=$1 t0 rc; shift; echo; echo "== $name"; t0=$(date +%s.%N)
  timeout "${STEP_LIMIT:-240}" "$@"; rc=$?
  echo "   wall $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s, exit $rc"
}
step "CUDA tests (CPU/GPU-equal seeding, synth and incremental pasted logits on cuda)" python3 -m pytest -q -x -k "cuda" tests/test_pairdata.py tests/test_synth.py tests/test_region_forward.py
if [ -d .gpu_photos ]; then  # issue 13: indexing against the plain forward, search time, the 1.28 M projection
  step "library: indexing vs plain forward (batch 128), search" python3 experiments/bench_library.py --device cuda --library .gpu_photos --batch-size 128 --throughput-photos 0
  step "library: 5,000 flipped/cropped copies of the photos (timing only), projection to 1.28 M" python3 experiments/bench_library.py --device cuda --library .gpu_photos --batch-size 128 --scale 5000
else
  echo "no .gpu_photos: library steps skipped (run experiments/gpu_prepare.sh here and carry it)"
fi
step "probe --budget quick, cold cache" python3 -m patchlab probe --classes snorkel scuba_diver --budget quick --device cuda --out /tmp/gpu-runs
step "probe --budget standard, cold cache" python3 -m patchlab probe --classes snorkel scuba_diver --budget standard --device cuda --out /tmp/gpu-runs
step "evaluation throughput vs plain forward" python3 experiments/bench_evaluate.py --device cuda --images 64 --placements 8
step "EOT step vs bare forward+backward, and ART" python3 experiments/bench_patch.py --device cuda
step "audit --pairs 20 --budget quick" python3 -m patchlab audit --pairs 20 --budget quick --device cuda --out /tmp/gpu-audit
echo; echo "log: $log"
