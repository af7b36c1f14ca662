"""Run an audit's pairs as Ray tasks (Moritz et al. 2018, "Ray: a distributed
framework for emerging AI applications"); ray is the optional `patchlab[ray]` extra.

Each (model, pair) is one task. The task probes into a temporary folder on its worker
and sends the finished run directory back as an archive, so workers need no
disk shared with the driver; a half-finished pair folder (from an interrupted
in-process run) is sent along so its finished stages are reused. A task whose
worker process or node dies is run again by Ray on a live node (up to
MAX_RETRIES times, from the same archive; the audit says so); a task that still
fails, or is cancelled, sends nothing back: that pair is recorded as failed and
starts again on the next run of the audit. A task asks for one GPU when the
cluster has GPUs, and at most the CPUs of the cluster's largest node.
"""
from __future__ import annotations

import importlib.util
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..errors import UserError, first_line
from .pair_run import Job, pack_dir, recover, run_pair, unpack_dir
from .pairs import Pair

log = logging.getLogger("patchlab")
MAX_RETRIES = 2  # re-runs of a task whose worker or node died (Ray's max_retries; not for a failed probe)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """UserError unless ray is installed and something answers on ADDRESS's host:port
    ('auto' is not dialled). Ray itself retries an unreachable address for minutes."""
    if importlib.util.find_spec("ray") is None:
        raise UserError("--ray needs the ray package: pip install 'patchlab[ray]'")
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address}: expected auto or HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def connect(address: str) -> dict[str, float]:
    """Join the Ray cluster at `address` ('auto': the running cluster, else a new
    local one). Returns the cluster's resources."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs the ray package: pip install 'patchlab[ray]'") from None
    if not ray.is_initialized():
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address == "auto":
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                log.info("no running Ray cluster found; starting a local one")
                ray.init(include_dashboard=False, **quiet)
        else:
            check_reachable(address)
            try:
                ray.init(address=address, **quiet)
            except Exception as exc:  # ray raises several types for a bad address
                raise UserError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    return dict(ray.cluster_resources())


def _attempt() -> int | None:
    """Which run of the current Ray task this is (0: the first), None when Ray does not say."""
    try:
        import ray

        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except Exception:  # a private API: only used to report re-runs
        return None


def _task(pair_row: dict[str, Any], settings: dict[str, Any], partial: bytes | None, threads: int) -> dict[str, Any]:
    """Body of a Ray task: probe one pair in a scratch folder, return its outcome and archive."""
    torch.set_num_threads(threads)
    pair = Pair(**pair_row)
    with tempfile.TemporaryDirectory(prefix="patchlab-audit-") as tmp:
        pair_dir = Path(tmp) / pair.key()
        if partial:
            unpack_dir(partial, pair_dir)
        outcome = run_pair(pair, settings, pair_dir)
        outcome["files"] = pack_dir(pair_dir)
    outcome["attempt"] = _attempt()
    return outcome


def _largest_node(resource: str) -> float:
    """The most of `resource` one live node has (a task must fit on one node)."""
    import ray

    return max((n["Resources"].get(resource, 0) for n in ray.nodes() if n.get("Alive")), default=0)


def _get(ref: Any) -> dict[str, Any]:
    """A finished task's outcome; a task Ray gave up on (after its re-runs) becomes a failed outcome."""
    import ray

    try:
        return ray.get(ref)
    except Exception as exc:  # the worker died or the task could not run
        first = first_line(exc)
        return {"status": "failed", "error": f"Ray task failed: {first}", "traceback": str(exc), "seconds": None}


def run_pairs(jobs: list[Job], settings: dict[str, Any], audit_dir: Path, address: str,
              cpus_per_pair: int, echo: Callable[[str], None]) -> Iterator[tuple[Job, dict[str, Any]]]:
    """Submit every (model, pair) job as a task; yield (job, outcome) as tasks finish."""
    import ray

    resources = connect(address)
    gpus = 1 if _largest_node("GPU") >= 1 else 0
    cpus = max(1, min(cpus_per_pair, int(_largest_node("CPU"))))
    echo(f"Ray cluster: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
         f"each pair asks for {cpus} CPU(s) and {gpus} GPU(s)")
    remote = ray.remote(_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=MAX_RETRIES)
    refs = {}
    for job in jobs:
        recover(audit_dir / job.rel())
        ref = remote.remote(job.pair.as_row(), dict(settings, model=job.model), pack_dir(audit_dir / job.rel()), cpus)
        refs[ref] = job
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            job, outcome = refs[done[0]], _get(done[0])
            attempt = outcome.pop("attempt", None)
            if attempt:
                echo(f"  {job.name()}: finished on run {attempt + 1} of its task (a worker or node running it died)")
            yield job, outcome
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
