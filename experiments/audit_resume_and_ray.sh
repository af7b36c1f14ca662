#!/usr/bin/env bash
# Issue 8 acceptance on the default model, offline:
#  1. `patchlab audit --pairs 3 --budget quick`, killed (SIGKILL) after KILL_AFTER seconds;
#  2. the same command again: must report the finished pairs and run only the missing ones;
#  3. the same audit with `--ray auto` into another folder;
#  4. the two leaderboards compared column by column (timings excluded).
# Usage: experiments/audit_resume_and_ray.sh [WORKDIR] [KILL_AFTER]
set -uo pipefail
work=${1:-/tmp/patchlab-audit-acceptance}
kill_after=${2:-330}
rm -rf "$work" && mkdir -p "$work"
t0=$(date +%s)
timeout -s KILL "$kill_after" patchlab audit --pairs 3 --budget quick --out "$work/in-process" 2>"$work/run1.log"
echo "run 1: exit $? after $(( $(date +%s) - t0 )) s (killed on purpose)"; grep -E "^audit of|^\[" "$work/run1.log"
t1=$(date +%s)
patchlab audit --pairs 3 --budget quick --out "$work/in-process" 2>"$work/run2.log" >"$work/run2.out"
echo "run 2: exit $? after $(( $(date +%s) - t1 )) s"; grep -E "^audit of|^\[" "$work/run2.log"; cat "$work/run2.out"
t2=$(date +%s)
patchlab audit --pairs 3 --budget quick --out "$work/ray" --ray auto 2>"$work/run3.log" >"$work/run3.out"
echo "ray run: exit $? after $(( $(date +%s) - t2 )) s"; grep -E "^audit of|^Ray|^\[" "$work/run3.log"; cat "$work/run3.out"
python - "$work" <<'PY'
import sys, pandas as pd
w = sys.argv[1]
cols = ["rank", "source", "target", "status", "best_candidate", "success", "ci_low", "ci_high", "lift",
        "best_disguised", "disguised_success", "synth", "feature", "natural", "control", "held_out"]
a, b = (pd.read_csv(f"{w}/{d}/audit.csv")[cols] for d in ("in-process", "ray"))
print("leaderboards equal:", a.equals(b))
if not a.equals(b):
    print(a.compare(b))
PY
