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

from ..runfolder import DataInfo, Entry, Headline, Lift, Rate, Summary

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:middle}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
img.fig{max-width:100%} img.thumb{width:64px;height:64px;image-rendering:pixelated} img.photo{width:160px;height:160px}
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


def rate_cell(r: Rate | None, with_setting: bool = False, selection: Rate | None = None) -> str:
    """Confirmation rate with its interval, the setting chosen on selection, and the selection figure."""
    if r is None:
        return "<td>–</td>"
    text = f"{pct(r.rate)} <span class=note>[{pct(r.ci[0])}, {pct(r.ci[1])}]</span>"
    if with_setting and r.size is not None:
        size = 100 * r.size
        text += f"<br><span class=note>{size:g} % {esc(r.placement or '')}</span>"
    if selection is not None:
        text += f"<br><span class=note>selection {pct(selection.rate)}</span>"
    return f'<td class="num">{text}</td>'


def lift_cell(lift: Lift | None) -> str:
    if lift is None:
        return "<td>–</td>"
    lo, hi = lift.ci
    cls = "ok" if lo > 0 else ""
    sign = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    return (f'<td class="num {cls}">{sign(lift.value)} pts <span class=note>[{sign(lo)}, {sign(hi)}]'
            f"<br>vs {esc(lift.control)}</span></td>")


def candidate_table(entries: list[Entry], thumbs: dict[str, bytes], protocols: list[str]) -> str:
    head = "<tr><th>patch</th><th>name</th><th>kind</th><th>alone reads as</th>"
    head += "".join(f"<th>{esc(p)}</th>" for p in protocols) + "<th>lift over best null control</th></tr>"
    rows = []
    for e in entries:
        donor = f"<br><span class=note>donor: {esc(e.donor)}</span>" if e.donor is not None else ""
        cells = "".join(rate_cell(e.rate(p), p != "dynamic", e.selection.get(p)) for p in protocols)
        rows.append(
            f"<tr><td>{img(thumbs.get(e.name), e.name, 'thumb')}</td><td>{esc(e.name)}{donor}</td>"
            f"<td>{esc(e.kind)}</td><td>{esc(e.reads_as.name)} <span class=note>{pct(e.reads_as.prob)}</span></td>"
            f"{cells}{lift_cell(e.lift)}</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _share_cell(d: dict[str, Any] | None) -> str:
    return rate_cell(Rate.from_dict(d)) if d else "<td>–</td>"


def survives_html(summary: Summary, thumbs: dict[str, bytes]) -> str:
    """"Does the patch survive?": per entry its digital (primary), physical and defended rates side by
    side with its non-printability, then each defence's cost on the clean source images."""
    rows, defenses = summary.survives, summary.defenses
    physical = any(r.get("physical") is not None for r in rows)
    if not rows or not (defenses or physical):
        return ""
    specs = [d["defense"] for d in defenses]
    head = (f"<tr><th>patch</th><th>name</th><th>kind</th><th>digital ({esc(summary.primary_protocol)})</th>"
            + ("<th>physical</th>" if physical else "") + "".join(f"<th>through {esc(d)}</th>" for d in specs)
            + "<th>non-printability</th></tr>")
    body = []
    for r in rows:
        nps = r.get("non_printability")
        body.append(f"<tr><td>{img(thumbs.get(r['name']), r['name'], 'thumb')}</td><td>{esc(r['name'])}</td>"
                    f"<td>{esc(r['kind'])}</td>{_share_cell(r.get('digital'))}"
                    + (_share_cell(r.get("physical")) if physical else "")
                    + "".join(_share_cell((r.get("defended") or {}).get(d)) for d in specs)
                    + f'<td class="num">{"–" if nps is None else f"{nps:.2e}"}</td></tr>')
    parts = ["<h2>Does the patch survive?</h2>", f"<table>{head}{''.join(body)}</table>"]
    if defenses:
        cost_head = ("<tr><th>defence</th><th>clean accuracy</th><th>certified</th><th>certified and correct</th>"
                     "<th>images counted for its rates</th><th>seconds</th></tr>")
        cost_rows = "".join(
            f"<tr><td>{esc(d['defense'])}</td>{_share_cell(d.get('clean_accuracy'))}{_share_cell(d.get('certified'))}"
            f"{_share_cell(d.get('certified_and_correct'))}<td class=num>{esc(d.get('denominator'))}</td>"
            f"<td class=num>{esc(d.get('seconds'))}</td></tr>" for d in defenses)
        means = esc(defenses[0].get("accuracy_means", ""))
        parts.append(f"<h3>What each defence costs</h3><table>{cost_head}{cost_rows}</table>"
                     f"<p class=note>On every selection and confirmation image; clean accuracy: {means}.</p>")
    parts.append(
        '<p class="note">Each rate is counted on the confirmation images at the setting chosen on selection (Wilson 95 % '
        "intervals). Physical: random placements through a simulated print and photograph (printer gamut and contrast, "
        "perspective, scale, rotation, lighting, blur, sensor noise, JPEG; ranges in the config). Through a defence: the "
        "same trials classified by the defended model, on the images it still calls the source when clean; PatchCleanser "
        "(Xiang et al. 2022) certifies an image against any patch up to its area. Non-printability: Sharif et al. 2016's "
        "score against a printable palette (0: printable colours only).</p>")
    return "".join(parts)


def _area_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "<td>–</td>"
    lo, hi = row.get("ci") or [None, None]
    grid = row.get("grid") or []
    if row.get("area") is None:
        top = max((r["size"] for r in grid), default=None)
        text = "not reached" + (f" by {100 * top:g} %" if top is not None else "")
    else:
        text = (f"{100 * row['area']:g} % <span class=note>({0 if lo is None else 100 * lo:g}, "
                f"{'beyond the grid' if hi is None else f'{100 * hi:g} %'}]</span>")
    return f'<td class="num">{text}<br><span class=note>{esc(row.get("candidate"))}</span></td>'


def area50_html(summary: Summary) -> str:
    """The smallest patch area reaching 50 % targeted success, per candidate kind (rows) and model
    (columns: bare, then each defence), each with its interval and the candidate chosen on selection."""
    rows = summary.area50
    if not rows:
        return ""
    specs = list(dict.fromkeys(r["defense"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    cell = {(r["kind"], r["defense"]): r for r in rows}
    head = "<tr><th>kind</th>" + "".join(
        f"<th>{'bare model' if d == 'none' else 'through ' + esc(d)}</th>" for d in specs) + "</tr>"
    body = "".join(f"<tr><td>{esc(k)}</td>" + "".join(_area_cell(cell.get((k, d))) for d in specs) + "</tr>" for k in kinds)
    grid = ", ".join(f"{100 * r['size']:g}" for r in rows[0].get("grid") or [])
    return ("<h2>Smallest patch area reaching 50 %</h2>"
            f"<table>{head}{body}</table><p class=note>Per kind, the candidate chosen on selection under the "
            f"{esc(rows[0].get('protocol'))} protocol, counted on the confirmation images at each area of the grid "
            f"({grid} % of the image): the smallest area whose success reaches 50 %; in brackets the areas the one needed "
            "lies between: above the last area surely short of 50 % (Wilson 95 % interval below it), up to the first "
            "surely above it. It keeps separating patches after their success saturates at the report's sizes.</p>")


def kv_table(d: dict) -> str:
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in d.items()) + "</table>"


def _headline_html(summary: Summary) -> str:
    best, disguised, ref = summary.best_candidate, summary.best_disguised_candidate, summary.reference

    def one(b: Headline) -> str:
        lo, hi = b.ci
        return (f"{esc(b.name)} at <b>{pct(b.rate)}</b> [{pct(lo)}, {pct(hi)}] on confirmation "
                f"<span class=note>(chosen on selection, where it scored {pct(b.selection_rate)})</span>")

    parts = []
    if best:
        parts.append(f"<p><b>Best candidate</b> ({esc(summary.primary_protocol)} protocol): {one(best)}.</p>")
    if disguised:
        donor = f", donor {esc(disguised.donor)}" if disguised.donor is not None else ""
        parts.append(f"<p><b>Best disguised</b> (alone reads as {esc(disguised.reads_as)}{donor}): {one(disguised)}.</p>")
    if ref:
        parts.append(f"<p class=note>Reference: a real target photo pasted the same way gets {pct(ref.rate)} "
                     "(a positive reference, not subtracted from any lift).</p>")
    return "".join(parts)


def _photo_cell(prov: dict) -> str:
    """One source photo's file, label and the model's top-1."""
    top1 = prov.get("photo_top1") or {}
    return (f"<code>{esc(prov.get('file'))}</code><br>labelled {esc(prov.get('photo_label_name') or 'unlabelled')}; "
            f"the model: {esc(top1.get('name'))} {pct(top1.get('prob'))}")


def sources_html(entries: list[Entry], thumbs: dict[str, bytes], views: dict[str, bytes]) -> str:
    """Each natural candidate next to the photo it was cut from (crop box drawn), the photo's file
    name and class, and what the crop alone reads as."""
    rows = []
    for e in entries:
        if e.name not in views:
            continue
        prov = e.provenance  # written by the generator that made the candidate
        photos = "<br>".join(_photo_cell(part) for part in prov.get("parts") or [prov])  # a collage: both photos
        rows.append(
            f"<tr><td>{img(views[e.name], 'source photo of ' + e.name, 'photo')}</td>"
            f"<td>{img(thumbs.get(e.name), e.name, 'thumb')}</td><td>{esc(e.name)}<br>"
            f"<span class=note>{esc(prov.get('method'))}</span></td><td>{photos}</td>"
            f"<td>{esc(e.reads_as.name)} {pct(e.reads_as.prob)}</td></tr>")
    if not rows:
        return ""
    head = "<tr><th>source photo (crop box in red)</th><th>patch</th><th>candidate</th><th>photo</th><th>crop alone reads as</th></tr>"
    return f"<h2>Natural candidates and their photos</h2><table>{head}{''.join(rows)}</table>"


def _notes_html(notes: dict) -> str:
    rows = {name: n.get("skipped") or n.get("source") for name, n in notes.items() if n.get("skipped") or n.get("source")}
    return ("<h2>Generators</h2>" + kv_table(rows)) if rows else ""


def run_page(summary: Summary, figures: dict[str, bytes | None], thumbs: dict[str, bytes],
             views: dict[str, bytes] | None = None) -> str:
    src, tgt = summary.source.name, summary.target.name
    data = summary.data
    counts = data.counts
    protocols = summary.protocols
    parts = [f"<h1>{esc(src)} &rarr; {esc(tgt)}</h1>"]
    status = '<span class="ok">complete</span>' if summary.complete else '<span class="bad">incomplete</span>'
    who = f"as {esc(src)}" if summary.source.index is not None else f"as anything but {esc(tgt)}"
    if data.counted:  # evaluate: which splits were counted, and why
        images = (f"{esc(data.counted.get('text'))} ({esc(counts.get('confirmation_denominator'))} of them "
                  f"classified {who} when clean; {esc(counts.get('selection_denominator'))} of the "
                  f"{esc(counts.get('selection'))} selection images)")
    else:
        images = (f"{esc(counts.get('train'))} train, {esc(counts.get('selection'))} selection "
                  f"({esc(counts.get('selection_denominator'))} counted), {esc(counts.get('confirmation'))} confirmation "
                  f"({esc(counts.get('confirmation_denominator'))} counted: classified {who} when clean)")
    sure = summary.confirmation.confidence_text()
    sure_html = (f" How sure the model is of the counted confirmation images when clean: {esc(sure)} "
                 "(rates on sources it is sure of are harder to reach).") if sure else ""
    parts.append(f"<p>Model <code>{esc(summary.model)}</code>; {esc(data.kind)} images ({esc(data.how)}): "
                 f"{images}; seed {esc(summary.seed)}; {status}.{sure_html}</p>")
    parts.append(_headline_html(summary))
    parts.append("<h2>Candidates</h2>" + candidate_table(summary.candidates, thumbs, protocols))
    parts.append("<h2>Null controls and reference</h2>"
                 + candidate_table(summary.controls + summary.references, thumbs, protocols))
    parts.append(
        '<p class="note">Rates: targeted success (top-1 = target) on the CONFIRMATION images, Wilson 95 % intervals. '
        "Each candidate's size and placement, and the best candidate, were chosen on separate SELECTION images "
        "(their figure is shown beside, labelled); no confirmation image took part in any choice. "
        "Static: one size and position for all images; dynamic: best position x size per image; random: "
        "mean over random placements and rotations. Lift: Newcombe 95 % interval for the difference from the best "
        "NULL control (noise, gray, source photo, library photos; chosen on selection) under the same protocol. "
        "The target-photo reference is shown, never subtracted.</p>"
    )
    parts.append(survives_html(summary, thumbs))
    parts.append(area50_html(summary))
    parts.append(sources_html(summary.candidates, thumbs, views or {}))
    parts.append(_notes_html(summary.generator_notes))
    captions = {
        "success_vs_area": "Success against patch area (bands: Wilson 95 %)",
        "placement_heatmap": "Static success by size and position",
        "patch_gallery": "Patches and what the model calls each alone",
        "examples": "Before / after examples with the model's top-3",
    }
    for key, cap in captions.items():
        if figures.get(key):
            parts.append(f"<h2>{esc(cap)}</h2>{img(figures[key], cap)}")
    parts.append("<h2>Data</h2>" + _files_html(data))
    if summary.donors:
        parts.append("<h2>Donors</h2><ol>" + "".join(f"<li>{esc(_donor_name(d))}</li>" for d in summary.donors) + "</ol>")
    parts.append("<h2>Timings</h2>" + kv_table(summary.timings))
    parts.append("<h2>Versions</h2>" + kv_table(summary.versions))
    return page(f"patchlab: {src} -> {tgt}", "\n".join(parts))


def _donor_name(d: Any) -> str:
    return str(d.get("name") or d.get("class") or d.get("index")) if isinstance(d, dict) else str(d)


def _files_html(data: DataInfo) -> str:
    groups = list(data.files.items()) + [("target reference", data.target_files), ("skipped", data.skipped)]
    return "".join(f"<details><summary>{len(items)} {esc(name)} file(s)</summary><ul>"
                   + "".join(f"<li>{esc(f)}</li>" for f in items) + "</ul></details>" for name, items in groups if items)


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
