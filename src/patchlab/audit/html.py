"""index.html of an audit: settings, figures, the leaderboard with links to each
pair's report.html, and failed pairs with their errors (offline, no script)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..protocols import PRIMARY_PROTOCOL

from ..report.html import esc, img, kv_table, page, pct


def _interval(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f" <span class=note>[{pct(lo)}, {pct(hi)}]</span>"


def _lift(r: dict[str, Any]) -> str:
    if r.get("lift") is None:
        return "<td>–</td>"
    cls = "ok" if (r.get("lift_ci_low") or 0) > 0 else ""
    return (f'<td class="num {cls}">{100 * r["lift"]:+.1f} pts <span class=note>[{100 * r["lift_ci_low"]:+.1f}, '
            f'{100 * r["lift_ci_high"]:+.1f}]<br>vs {esc(r.get("best_control"))}</span></td>')


def _smallest(r: dict[str, Any]) -> str:
    if r.get("min_area") is None:
        return "<td>–</td>"
    return (f"<td class=num>{pct(r['min_area_success'])} <span class=note>at {100 * r['min_area']:g} % area"
            f"<br>{esc(r['min_area_candidate'])}</span></td>")


def leaderboard_table(rows: list[dict[str, Any]]) -> str:
    head = ("<tr><th>#</th><th>source &rarr; target</th><th>similarity</th><th>best candidate</th>"
            "<th>success (confirmation)</th><th>smallest patch</th><th>lift over best null control</th><th>best disguised</th><th>report</th></tr>")
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        link = f'<a href="{esc(quote(r["report"]))}">report</a>' if r.get("report") else ""
        sim = "–" if r.get("similarity") is None else f"{r['similarity']:.3f}"
        dis = (f"{esc(r['best_disguised'])}<br>{pct(r['disguised_success'])}"
               f"{_interval(r['disguised_ci_low'], r['disguised_ci_high'])}") if r.get("best_disguised") else "–"
        body.append(
            f"<tr><td class=num>{r['rank']}</td><td>{esc(r['source'])} &rarr; {esc(r['target'])}</td>"
            f"<td class=num>{sim}</td><td>{esc(r['best_candidate'])} <span class=note>({esc(r['best_kind'])})</span></td>"
            f"<td class=num>{pct(r['success'])}{_interval(r['ci_low'], r['ci_high'])}"
            f"<br><span class=note>selection {pct(r.get('selection_success'))}</span></td>{_smallest(r)}{_lift(r)}"
            f"<td>{dis}</td><td>{link}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def audit_page(doc: dict[str, Any], figures: dict[str, bytes | None]) -> str:
    cfg, counts = doc["config"], doc["counts"]
    rows = doc["leaderboard"]
    protocol = next((r["protocol"] for r in rows if r.get("protocol")), PRIMARY_PROTOCOL)
    parts = [
        f"<h1>patchlab audit: {esc(cfg.get('model'))}</h1>",
        f"<p>{counts['ok']} of {counts['pairs']} pairs probed, {counts['failed']} failed, "
        f"{counts['pending']} pending. Success is targeted top-1 under the "
        f"<b>{esc(protocol)}</b> protocol, counted on each pair's CONFIRMATION images (95 % Wilson intervals) "
        "for the candidate and setting chosen on its separate SELECTION images (that figure shown beside); "
        "pairs tied there are ranked by the success with the smallest patch evaluated; lift is over the pair's "
        "best NULL control (Newcombe interval); the target-photo reference is never subtracted.</p>",
        "<h2>Leaderboard</h2>", leaderboard_table(rows),
    ]
    for key, title in (("success_distribution", "Success distribution"),
                       ("vulnerability_vs_similarity", "Vulnerability vs class similarity")):
        if figures.get(key):
            parts += [f"<h2>{title}</h2>", img(figures[key], title)]
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        items = "".join(f"<li>{esc(r['source'])} &rarr; {esc(r['target'])}: <b>{esc(r['status'])}</b>"
                        f"{' — ' + esc(r['error']) if r.get('error') else ''}</li>" for r in bad)
        parts += ["<h2>Not finished</h2>", f"<ul>{items}</ul>"]
    parts += ["<h2>Settings</h2>", kv_table({k: v for k, v in cfg.items() if k != "pairs"})]
    return page(f"patchlab audit: {cfg.get('model')}", "\n".join(parts))
