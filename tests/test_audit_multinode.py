"""The audit's Ray path on a simulated multi-node cluster on one machine
(`ray.cluster_utils.Cluster`: a head with no CPUs and three 1-CPU worker
nodes). One pair's task waits until the test removes the worker node it runs
on; the audit must still finish with every pair done exactly once and the
killed pair visibly run again on another node.

The probe itself is replaced inside the Ray workers (a worker setup hook) by a
stub that writes a small finished probe folder, so the test measures the Ray
path and not the probe's compute."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from patchlab.audits import audit

ray = pytest.importorskip("ray")

PAIRS = ["combination lock,goldfish", "combination lock,scuba diver", "goldfish,scuba diver", "snorkel,scuba diver"]
DOOMED = "0001-goldfish-to-0983-scuba_diver"  # this pair's first attempt hangs until its node is removed


def _write_finished_probe(pair_dir: Path, rate: float) -> None:
    """A minimal finished probe folder: summary.json, results.csv and the COMPLETE marker."""
    from patchlab.runio import mark_complete

    pair_dir.mkdir(parents=True, exist_ok=True)
    best = {"name": "synth-0", "kind": "synth", "rate": rate, "ci": [rate / 2, min(1.0, rate + 0.1)],
            "selection_rate": rate}
    summary = {"primary_protocol": "random", "best_candidate": best, "candidates": [dict(best)], "controls": [],
               "references": [], "confirmation": {"denominator": 16}, "timings": {"total": 0.1}}
    (pair_dir / "summary.json").write_text(json.dumps(summary))
    rows = [{"split": split, "candidate": "synth-0", "kind": "synth", "protocol": "random", "size": 0.1,
             "placement": "random", "success_rate": rate} for split in ("selection", "confirmation")]
    pd.DataFrame(rows).to_csv(pair_dir / "results.csv", index=False)
    mark_complete(pair_dir, {"command": "probe"})


def _setup_hook(ctrl: str):
    """Worker setup hook: replace run_pair in every Ray worker by a stub that logs each start
    (pair, node, pid) to ctrl/starts.log; the DOOMED pair's first start waits to be killed."""

    def hook() -> None:
        import patchlab.audits.ray_backend as backend

        def fake_run_pair(pair, settings, pair_dir, classifier=None, echo=None):
            key = pair.key()
            node = ray.get_runtime_context().get_node_id()
            log = Path(ctrl) / "starts.log"
            with open(log, "a") as fh:
                fh.write(f"{key} {node} {os.getpid()}\n")
            starts = [ln.split()[0] for ln in log.read_text().splitlines()]
            if key == DOOMED and starts.count(key) == 1:
                (Path(ctrl) / "doomed.node").write_text(node)
                deadline = time.time() + 300
                while not (Path(ctrl) / "test.done").exists() and time.time() < deadline:
                    time.sleep(0.1)  # hangs here until its node is removed
                os._exit(1)
            _write_finished_probe(Path(pair_dir), rate=0.25 + 0.125 * (pair.source % 4))
            return {"status": "ok", "seconds": 0.1}

        backend.run_pair = fake_run_pair

    return hook


def _kill_doomed_node(cluster, ctrl: Path, errors: list, killed: list) -> None:
    """Wait until the DOOMED pair runs, then remove the worker node it runs on."""
    try:
        marker = ctrl / "doomed.node"
        deadline = time.time() + 240  # workers start slowly on a loaded 2-core machine
        while not marker.exists():
            if time.time() > deadline:
                raise TimeoutError("the doomed pair never started")
            time.sleep(0.1)
        node_id = marker.read_text()
        node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
        cluster.remove_node(node, allow_graceful=False)
        killed.append(node_id)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


@pytest.fixture
def cluster(tmp_path):
    from ray.cluster_utils import Cluster

    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                      "_system_config": system})
    try:
        yield c  # worker nodes are added after the driver connects (see the test)
    finally:
        (tmp_path / "ctrl" / "test.done").parent.mkdir(exist_ok=True)
        (tmp_path / "ctrl" / "test.done").touch()
        ray.shutdown()
        c.shutdown()


def test_ray_audit_survives_a_worker_node_dying_mid_pair(cluster, tmp_path):
    import ray.cloudpickle

    ctrl = tmp_path / "ctrl"
    ctrl.mkdir(exist_ok=True)
    (tmp_path / "pairs.csv").write_text("source,target\n" + "\n".join(PAIRS) + "\n")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": _setup_hook(str(ctrl))})
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    # the driver attaches to a raylet on its own IP, which on one machine may be any node's: add the
    # workers only now, so it is the head's, and the node the test removes is never the driver's
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    errors: list = []
    killed: list = []
    killer = threading.Thread(target=_kill_doomed_node, args=(cluster, ctrl, errors, killed), daemon=True)
    killer.start()
    lines: list[str] = []
    result: dict = {}

    def run_audit() -> None:  # in a thread, so a lost pair (ray.wait forever) fails the test instead of hanging it
        try:  # default --cpus-per-pair 2: capped at a node's 1 CPU
            result["doc"] = audit(pairs_file=tmp_path / "pairs.csv", model="tiny", out=tmp_path / "audit",
                                  device="cpu", ray=cluster.address, echo=lines.append)
        except BaseException as exc:  # re-raised below
            result["error"] = exc

    runner = threading.Thread(target=run_audit, daemon=True)
    runner.start()
    runner.join(timeout=300)  # ~20 s when all is well
    starts_log = ctrl / "starts.log"
    assert not runner.is_alive(), ("the audit did not finish (a pair was lost?):\n" + "\n".join(lines)
                                   + f"\nkilled {killed}, errors {errors}\nstarts:\n"
                                   + (starts_log.read_text() if starts_log.exists() else "none"))
    if "error" in result:
        raise result["error"]
    doc = result["doc"]
    killer.join(timeout=30)
    assert not errors, errors
    assert len(killed) == 1
    assert any("each pair asks for 1 CPU(s)" in ln for ln in lines)

    # the doomed pair ran twice: first on the removed node, then on a live one; every other pair once
    starts = [ln.split() for ln in (ctrl / "starts.log").read_text().splitlines()]
    doomed = [s for s in starts if s[0] == DOOMED]
    assert len(doomed) == 2 and doomed[0][1] == killed[0] and doomed[1][1] != killed[0]
    assert sorted(s[0] for s in starts if s[0] != DOOMED) == sorted({s[0] for s in starts if s[0] != DOOMED})
    assert any("goldfish -> scuba diver: finished on run 2 of its task" in ln for ln in lines)
    # every pair done exactly once: one leaderboard row and one progress line each, none lost or failed
    assert doc["complete"] and doc["counts"] == {"pairs": 4, "ok": 4, "failed": 0, "pending": 0}
    board = pd.read_csv(tmp_path / "audit" / "audit.csv")
    assert sorted(board["source"] + "," + board["target"]) == sorted(PAIRS)
    done = [ln for ln in lines if ln.startswith("[") and ": best " in ln]
    assert len(done) == 4 and sorted(ln.split("] ")[1].split(":")[0] for ln in done) == sorted(
        p.replace(",", " -> ") for p in PAIRS)
    assert not (tmp_path / "audit" / "failures").exists() or not any((tmp_path / "audit" / "failures").iterdir())
    doomed_dir = tmp_path / "audit" / "pairs" / DOOMED
    assert (doomed_dir / "COMPLETE").is_file() and (doomed_dir / "summary.json").is_file()
