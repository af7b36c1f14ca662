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


def leaderboard_table(rows: list[dict[str, Any]], with_model: bool = False) -> str:
    """Finished runs in rank order (a model column when the audit has several models)."""
    head = ("<tr><th>#</th>" + ("<th>model</th>" if with_model else "") +
            "<th>source &rarr; target</th><th>similarity</th><th>best candidate</th><th>success (confirmation)</th>"
            "<th>smallest patch</th><th>lift over best null control</th><th>best disguised</th><th>report</th></tr>")
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        link = f'<a href="{esc(quote(r["report"]))}">report</a>' if r.get("report") else ""
        sim = "–" if r.get("similarity") is None else f"{r['similarity']:.3f}"
        dis = (f"{esc(r['best_disguised'])}<br>{pct(r['disguised_success'])}"
               f"{_interval(r['disguised_ci_low'], r['disguised_ci_high'])}") if r.get("best_disguised") else "–"
        model = f"<td>{esc(r['model'])}</td>" if with_model else ""
        body.append(
            f"<tr><td class=num>{r['rank']}</td>{model}<td>{esc(r['source'])} &rarr; {esc(r['target'])}</td>"
            f"<td class=num>{sim}</td><td>{esc(r['best_candidate'])} <span class=note>({esc(r['best_kind'])})</span></td>"
            f"<td class=num>{pct(r['success'])}{_interval(r['ci_low'], r['ci_high'])}"
            f"<br><span class=note>selection {pct(r.get('selection_success'))}</span></td>{_smallest(r)}{_lift(r)}"
            f"<td>{dis}</td><td>{link}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _survival_cell(r: dict[str, Any], column: str) -> str:
    value = r.get(column)
    if value is None or value != value:
        return "<td>–</td>"
    who = r.get(f"{column}:candidate") or r.get(f"{column}:kind")
    lo, hi = (None if v is None or v != v else v for v in (r.get(f"{column}:ci_low"), r.get(f"{column}:ci_high")))
    if column.startswith("area50"):  # the bracket the area needed lies in (see patchlab.evaluation.area50)
        interval = f" <span class=note>({pct(lo or 0.0)}, {'beyond the grid' if hi is None else pct(hi)}]</span>"
    else:
        interval = _interval(lo, hi)
    return f"<td class=num>{pct(value)}{interval}<br><span class=note>{esc(who)}</span></td>"


def _title(column: str) -> str:
    """'physical', 'through jpeg:75', 'smallest area reaching 50 %' (+ ' through SPEC')."""
    what, _, spec = column.partition(":")
    if what == "area50":
        return "smallest area reaching 50 %" + (f" through {spec}" if spec else "")
    return f"through {spec}" if what == "defense" else column


def survival_columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """The survival columns the rows hold (physical, defense:SPEC, area50[:SPEC]), in their order."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return [k for k in keys if f"{k}:ci_low" in keys]


def survival_table(rows: list[dict[str, Any]], with_model: bool = False) -> str:
    """Per finished run: digital success beside the physical rate, the best rate that survives each
    defence and the smallest area reaching 50 % (bare and per defence); empty when none was measured."""
    columns = survival_columns_of(rows)
    if not columns:
        return ""
    head = ("<tr><th>#</th>" + ("<th>model</th>" if with_model else "") + "<th>source &rarr; target</th><th>digital</th>"
            + "".join(f"<th>{esc(_title(c))}</th>" for c in columns) + "</tr>")
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        model = f"<td>{esc(r['model'])}</td>" if with_model else ""
        body.append(f"<tr><td class=num>{r['rank']}</td>{model}<td>{esc(r['source'])} &rarr; {esc(r['target'])}</td>"
                    f"<td class=num>{pct(r['success'])}{_interval(r['ci_low'], r['ci_high'])}</td>"
                    + "".join(_survival_cell(r, c) for c in columns) + "</tr>")
    return ("<h2>Does the best patch survive?</h2><p class=note>Each figure on the pair's confirmation images for the "
            "candidate chosen on selection: under the physical protocol, through each defence (chosen on the defended "
            "model's selection images), and the smallest patch area on the log-spaced grid whose success reaches 50 % "
            "(in brackets the areas the one needed lies between, where the Wilson interval of the success crosses "
            "50 %).</p>"
            f"<table>{head}{''.join(body)}</table>")


def _model_cell(fig: dict[str, Any] | None, winner: bool) -> str:
    """One model's figure for a pair: success [interval] linked to its report, or its status."""
    if not fig:
        return "<td>–</td>"
    if fig["status"] != "ok" or fig.get("success") is None:
        return f"<td><span class=note>{esc(fig['status'])}</span></td>"
    rate = f"<b>{pct(fig['success'])}</b>" if winner else pct(fig["success"])
    link = f' <a href="{esc(quote(fig["report"]))}">report</a>' if fig.get("report") else ""
    return (f"<td class=num>{rate}{_interval(fig['ci_low'], fig['ci_high'])}<br><span class=note>"
            f"{esc(fig['best_candidate'])} (#{fig['rank']})</span>{link}</td>")


def most_vulnerable_table(entries: list[dict[str, Any]], models: list[str]) -> str:
    """Per pair: the model with the highest confirmation success, and every model's figure beside it."""
    head = ("<tr><th>source &rarr; target</th><th>most vulnerable model</th>"
            + "".join(f"<th>{esc(m)}</th>" for m in models) + "</tr>")
    body = []
    for e in entries:
        cells = "".join(_model_cell(e["models"].get(m), m == e["model"]) for m in models)
        body.append(f"<tr><td>{esc(e['source'])} &rarr; {esc(e['target'])}</td>"
                    f"<td><b>{esc(e['model'] or '–')}</b></td>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _not_finished(rows: list[dict[str, Any]], with_model: bool) -> list[str]:
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return []
    items = "".join(f"<li>{esc(r['model']) + ': ' if with_model else ''}{esc(r['source'])} &rarr; "
                    f"{esc(r['target'])}: <b>{esc(r['status'])}</b>"
                    f"{' — ' + esc(r['error']) if r.get('error') else ''}</li>" for r in bad)
    return ["<h2>Not finished</h2>", f"<ul>{items}</ul>"]


def audit_page(doc: dict[str, Any], figures: dict[str, bytes | None]) -> str:
    """The whole index.html."""
    cfg, counts = doc["config"], doc["counts"]
    rows = doc["leaderboard"]
    models = cfg.get("models") or [cfg.get("model")]
    several = len(models) > 1
    title = ", ".join(str(m) for m in models)
    protocol = next((r["protocol"] for r in rows if r.get("protocol")), PRIMARY_PROTOCOL)
    runs = f"(model, pair) runs of {len(models)} models" if several else "pairs"
    parts = [
        f"<h1>patchlab audit: {esc(title)}</h1>",
        f"<p>{counts['ok']} of {counts['pairs']} {runs} probed, {counts['failed']} failed, "
        f"{counts['pending']} pending. Success is targeted top-1 under the "
        f"<b>{esc(protocol)}</b> protocol, counted on each pair's CONFIRMATION images (95 % Wilson intervals) "
        "for the candidate and setting chosen on its separate SELECTION images (that figure shown beside); "
        "pairs tied there are ranked by the success with the smallest patch evaluated; lift is over the pair's "
        "best NULL control (Newcombe interval); the target-photo reference is never subtracted.</p>",
    ]
    if several and doc.get("most_vulnerable"):
        parts += ["<h2>Most vulnerable model per pair</h2>", "<p>Pairs were chosen on the first model "
                  f"({esc(models[0])}); each model's confirmation success side by side, the highest in bold.</p>",
                  most_vulnerable_table(doc["most_vulnerable"], models)]
    rank_by = cfg.get("rank_by") or "success"
    order = "" if rank_by == "success" else f"<p>Ranked by <b>{esc(rank_by)}</b> first (see below), then success.</p>"
    parts += ["<h2>Leaderboard</h2>", order, leaderboard_table(rows, several), survival_table(rows, several)]
    for key, fig_title in (("success_distribution", "Success distribution"),
                           ("vulnerability_vs_similarity", "Vulnerability vs class similarity")):
        if figures.get(key):
            parts += [f"<h2>{fig_title}</h2>", img(figures[key], fig_title)]
    parts += _not_finished(rows, several)
    parts += ["<h2>Settings</h2>", kv_table({k: v for k, v in cfg.items() if k != "pairs" and v is not None})]
    return page(f"patchlab audit: {title}", "\n".join(parts))
