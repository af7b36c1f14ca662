"""Audits: many class pairs probed in one run (on one model or several), ranked by attack success.

pairs.py chooses the pairs, pair_run.py probes one (model, pair), ray_backend.py spreads
them over a Ray cluster, leaderboard.py / figures.py / html.py write the report,
run.py ties them together (`audit`)."""
from .pairs import Pair, confusion_pairs, head_pairs, read_pairs_file
from .run import audit

__all__ = ["Pair", "audit", "confusion_pairs", "head_pairs", "read_pairs_file"]
