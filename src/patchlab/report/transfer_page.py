"""transfer_heatmap.png and transfer.html: a run's patches re-measured on other models
(transferability as in ImageNet-Patch, Pintor et al. 2022), from the rows of transfer.csv."""
from __future__ import annotations

from typing import Any

import pandas as pd

from ..runfolder import Rate
from .figures import figure_png, label_text, plotting
from .html import esc, img, kv_table, page, rate_cell

CITATION = "ImageNet-Patch (Pintor et al. 2022)"


def heatmap_png(rows: list[dict[str, Any]], source_label: str) -> bytes:
    """Seaborn heatmap: candidates x (the run's own figure, then each target model), primary-protocol rates."""
    plt, sns = plotting()
    df = pd.DataFrame(rows)
    grid = df.pivot_table(index="candidate", columns="model", values="rate", aggfunc="first", dropna=False, sort=False)
    own = df.drop_duplicates("candidate").set_index("candidate")["source_rate"]
    grid.insert(0, f"{source_label} (run)", own)
    grid = grid.reindex(df["candidate"].drop_duplicates()).astype(float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * grid.shape[1], 0.9 + 0.38 * grid.shape[0]))
    sns.heatmap(grid * 100, annot=True, fmt=".0f", vmin=0, vmax=100, cmap="rocket_r", cbar_kws={"label": "success %"}, ax=ax)
    ax.set_yticklabels([label_text(t.get_text()) for t in ax.get_yticklabels()], rotation=0)
    ax.set_xticklabels([label_text(t.get_text()) for t in ax.get_xticklabels()], rotation=30, ha="right")
    ax.set(xlabel="", ylabel="", title=label_text(f"{rows[0]['protocol']} protocol, confirmation images"))
    return figure_png(fig)


def _cell(r: dict[str, Any], prefix: str, setting: bool) -> str:
    """rate_cell of the {prefix}rate columns of one table row (with the setting and selection figure)."""
    if r.get(f"{prefix}rate") is None:
        return rate_cell(None)
    rate = Rate(r[f"{prefix}rate"], [r[f"{prefix}ci_low"], r[f"{prefix}ci_high"]], size=r.get(f"{prefix}size"),
                placement=r.get(f"{prefix}placement"))
    sel = r.get(f"selection_{prefix}rate")
    return rate_cell(rate, setting, Rate(sel) if sel is not None else None)


def _html_table(result: dict[str, Any], thumbs: dict[str, bytes], prefix: str = "") -> str:
    """Candidates x models for the primary protocol (prefix "") or static ("static_"); the run's figure first."""
    labels = [m["model"] for m in result["models"]]
    head = ("<tr><th>patch</th><th>name</th><th>kind</th>"
            f"<th>{esc(result['source_model'])} (the run)</th>" + "".join(f"<th>{esc(m)}</th>" for m in labels) + "</tr>")
    by = {(r["candidate"], r["model"]): r for r in result["table"]}
    body = []
    for name in dict.fromkeys(r["candidate"] for r in result["table"]):
        first = by[(name, labels[0])]
        cells = _cell(first, f"source_{prefix}", False) + "".join(_cell(by[(name, m)], prefix, True) for m in labels)
        body.append(f"<tr><td>{img(thumbs.get(name), name, 'thumb')}</td><td>{esc(name)}</td>"
                    f"<td>{esc(first['kind'])}</td>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def transfer_page(result: dict[str, Any], heatmap: bytes | None, thumbs: dict[str, bytes]) -> str:
    """Self-contained transfer.html (every user string escaped, images as data URIs)."""
    src, tgt = result["source"]["name"], result["target"]["name"]
    parts = [f"<h1>Transfer: {esc(src)} &rarr; {esc(tgt)}</h1>",
             f"<p>Patches of run <code>{esc(result['run_dir'])}</code> (made on <code>{esc(result['source_model'])}</code>) "
             f"re-measured on other models, as in {esc(CITATION)}: the run's protocols, sizes and placements and the "
             f"same {esc(result['data']['kind'])} selection and confirmation images; each model's setting is chosen on "
             "selection and its rate counted on confirmation.</p>"]
    if result["data"].get("note"):
        parts.append(f'<p class="bad"><b>Images {esc(result["data"]["note"])}.</b></p>')
    parts += [f"<h2>{esc(result['primary_protocol'])} protocol on confirmation images (Wilson 95 %)</h2>",
              _html_table(result, thumbs), img(heatmap, "transfer heatmap"),
              "<h2>static protocol (one size and position, chosen on selection)</h2>",
              _html_table(result, thumbs, "static_")]
    info = {m["model"]: (m.get("error") or f"{m['input_size']} px; confirmation "
                         f"{m['confirmation']['denominator']} of {m['confirmation']['n_images']} "
                         f"counted; {m['seconds']} s") for m in result["models"]}
    parts += ["<h2>Models</h2>", kv_table(info)]
    if result["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result["notes"]) + "</ul>")
    return page(f"patchlab transfer: {src} -> {tgt}", "\n".join(parts))
