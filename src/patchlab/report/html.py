"""Self-contained report.html and reports/index.html.

Every image is a base64 data URI, there is no script, and a Content-Security-
Policy forbids loading anything else, so the page opens offline. Every string
that comes from a user or a file (class, candidate and file names, provenance)
goes through `esc`."""
from __future__ import annotations

import base64
import html
from typing import Any
from urllib.parse import quote

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:middle}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
img.fig{max-width:100%} img.thumb{width:64px;height:64px;image-rendering:pixelated}
.note{color:#666;font-size:.85em} .bad{color:#a00} .ok{color:#070} details{margin:.5em 0}
code{background:#f4f4f4;padding:0 .2em}
"""


def esc(value: Any) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes | None, alt: str, cls: str = "fig") -> str:
    return f'<img class="{cls}" alt="{esc(alt)}" src="{data_uri(png)}">' if png else ""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def rate_cell(r: dict | None, with_setting: bool = False) -> str:
    if not r:
        return "<td>–</td>"
    ci = r.get("ci") or [None, None]
    text = f"{pct(r['rate'])} <span class=note>[{pct(ci[0])}, {pct(ci[1])}]</span>"
    if with_setting and r.get("size") is not None:
        size = 100 * r["size"]
        text += f"<br><span class=note>{size:g} % {esc(r.get('placement', ''))}</span>"
    return f'<td class="num">{text}</td>'


def lift_cell(lift: dict | None) -> str:
    if not lift:
        return "<td>–</td>"
    lo, hi = lift["ci"]
    cls = "ok" if lo > 0 else ""
    sign = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    return (f'<td class="num {cls}">{sign(lift["value"])} pts <span class=note>[{sign(lo)}, {sign(hi)}]'
            f"<br>vs {esc(lift.get('control'))}</span></td>")


def candidate_table(entries: list[dict], thumbs: dict[str, bytes], protocols: list[str]) -> str:
    head = "<tr><th>patch</th><th>name</th><th>kind</th><th>alone reads as</th>"
    head += "".join(f"<th>{esc(p)}</th>" for p in protocols) + "<th>lift over best control</th></tr>"
    rows = []
    for e in entries:
        ra = e.get("reads_as") or {}
        donor = f"<br><span class=note>donor: {esc(e['donor'])}</span>" if e.get("donor") else ""
        cells = "".join(rate_cell(e.get(p), with_setting=p != "dynamic") for p in protocols)
        rows.append(
            f"<tr><td>{img(thumbs.get(e['name']), e['name'], 'thumb')}</td><td>{esc(e['name'])}{donor}</td>"
            f"<td>{esc(e['kind'])}</td><td>{esc(ra.get('name'))} <span class=note>{pct(ra.get('prob'))}</span></td>"
            f"{cells}{lift_cell(e.get('lift_over_best_control'))}</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def kv_table(d: dict) -> str:
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in d.items()) + "</table>"


def run_page(summary: dict, figures: dict[str, bytes | None], thumbs: dict[str, bytes]) -> str:
    src, tgt = summary["source"]["name"], summary["target"]["name"]
    data = summary.get("data", {})
    counts = data.get("counts", {})
    protocols = summary.get("protocols", [])
    primary = summary.get("primary_protocol")
    best, disguised = summary.get("best_candidate"), summary.get("best_disguised_candidate")
    parts = [f"<h1>{esc(src)} &rarr; {esc(tgt)}</h1>"]
    status = '<span class="ok">complete</span>' if summary.get("complete") else '<span class="bad">incomplete</span>'
    parts.append(
        f"<p>Model <code>{esc(summary.get('model'))}</code>; {esc(data.get('kind'))} data "
        f"({esc(data.get('how'))}); {esc(counts.get('held_out'))} held-out images, "
        f"{esc(counts.get('denominator'))} classified "
        + (f"as {esc(src)}" if summary["source"].get("index") is not None else f"as anything but {esc(tgt)}")
        + " when clean (the denominator); "
        f"seed {esc(summary.get('seed'))}; {status}.</p>"
    )
    if best:
        parts.append(
            f"<p><b>Best candidate</b> ({esc(primary)} protocol): {esc(best['name'])} at {pct(best.get('rate'))}"
            + (f"; <b>best disguised</b> (alone reads as {esc(disguised.get('reads_as'))}"
               + (f", donor {esc(disguised.get('donor'))}" if disguised.get("donor") else "")
               + f"): {esc(disguised['name'])} at {pct(disguised.get('rate'))}" if disguised else "")
            + ".</p>"
        )
    parts.append("<h2>Candidates</h2>" + candidate_table(summary.get("candidates", []), thumbs, protocols))
    parts.append("<h2>Controls</h2>" + candidate_table(summary.get("controls", []), thumbs, protocols))
    parts.append(
        '<p class="note">Rates: targeted success (top-1 = target) over the denominator with Wilson 95 % intervals. '
        "Static: one size and position for all images (best shown); dynamic: best position x size per image; random: "
        "mean over random placements and rotations (best size shown). Lift: Newcombe 95 % interval for the "
        "difference from the best control under the same protocol.</p>"
    )
    captions = {
        "success_vs_area": "Success against patch area (bands: Wilson 95 %)",
        "placement_heatmap": "Static success by size and position",
        "patch_gallery": "Patches and what the model calls each alone",
        "examples": "Before / after examples with the model's top-3",
    }
    for key, cap in captions.items():
        if figures.get(key):
            parts.append(f"<h2>{esc(cap)}</h2>{img(figures[key], cap)}")
    files = data.get("files") or []
    skipped = data.get("skipped") or []
    ctrl_files = data.get("control_files") or []
    parts.append(
        f"<h2>Data</h2><details><summary>{len(files)} held-out image file(s)</summary><ul>"
        + "".join(f"<li>{esc(f)}</li>" for f in files) + "</ul></details>"
        + (f"<details><summary>{len(ctrl_files)} image file(s) for the crop controls</summary><ul>"
           + "".join(f"<li>{esc(f)}</li>" for f in ctrl_files) + "</ul></details>" if ctrl_files else "")
        + (f"<details><summary>{len(skipped)} skipped file(s)</summary><ul>"
           + "".join(f"<li>{esc(s)}</li>" for s in skipped) + "</ul></details>" if skipped else "")
    )
    if summary.get("donors"):
        parts.append("<h2>Donors</h2><ul>" + "".join(f"<li>{esc(d)}</li>" for d in summary["donors"]) + "</ul>")
    parts.append("<h2>Timings</h2>" + kv_table(summary.get("timings", {})))
    parts.append("<h2>Versions</h2>" + kv_table(summary.get("versions", {})))
    return page(f"patchlab: {src} -> {tgt}", "\n".join(parts))


def index_page(rows: list[dict]) -> str:
    head = "<tr><th>run</th><th>source &rarr; target</th><th>model</th><th>best candidate</th><th>rate</th><th>status</th></tr>"
    body = []
    for r in rows:
        href = quote(r["dir"]) + "/report.html"
        status = '<span class="ok">complete</span>' if r["complete"] else '<span class="bad">incomplete</span>'
        body.append(
            f'<tr><td><a href="{esc(href)}">{esc(r["dir"])}</a></td><td>{esc(r["source"])} &rarr; {esc(r["target"])}</td>'
            f"<td>{esc(r['model'])}</td><td>{esc(r['best'])}</td><td class=num>{pct(r['rate'])}</td><td>{status}</td></tr>"
        )
    return page("patchlab reports", f"<h1>patchlab reports</h1><table>{head}{''.join(body)}</table>")
