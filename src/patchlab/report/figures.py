"""Seaborn figures of a run, made from results.csv + summary.json + saved PNGs
(so `rebuild_report` can remake them). Agg backend: no display needed."""
from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..patches.candidate import is_generated
from ..protocols import ALL_PROTOCOLS
from ..runfolder import Entry

PROTOCOL_TITLES = {
    "static": "static (best position at each size)",
    "dynamic": "dynamic (best position per image)",
    "random": "random placements + rotation",
    "physical": "physical (print + camera, random placements)",
}


def plotting() -> tuple[ModuleType, ModuleType]:
    """(matplotlib.pyplot on the Agg backend, seaborn), imported when a figure is drawn: together
    they take seconds to import, which every command would pay at start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def label_text(text: Any) -> str:
    """Plain text for matplotlib labels that cannot switch off mathtext ($ escaped)."""
    return str(text).replace("$", r"\$")


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (110 dpi, tight); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plotting()[0].close(fig)
    return buf.getvalue()


def _palette(names: list[str], kinds: dict[str, str]) -> dict[str, Any]:
    sns = plotting()[1]
    attacks = [n for n in names if is_generated(kinds.get(n))]
    ctrls = [n for n in names if not is_generated(kinds.get(n))]
    cols = dict(zip(attacks, sns.color_palette("tab10", max(1, len(attacks)))))
    cols.update(zip(ctrls, sns.color_palette("Greys", len(ctrls) + 2)[2:]))
    return cols


def confirmation_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows counted on confirmation images (what every figure shows)."""
    return results[results["split"] == "confirmation"] if "split" in results else results


def curve_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per protocol, candidate and size: the confirmation rows the success-vs-area plot
    shows (static: at the position chosen on selection for that size)."""
    res = confirmation_rows(results)
    res = res[res["size"].notna()].copy()
    static = res[res["protocol"] == "static"]
    if len(static):
        sel = results[(results["split"] == "selection") & (results["protocol"] == "static")] if "split" in results else static
        best = sel.loc[sel.groupby(["candidate", "size"], sort=False)["success_rate"].idxmax(), ["candidate", "size", "placement"]]
        static = static.merge(best, on=["candidate", "size", "placement"])
        res = pd.concat([res[res["protocol"] != "static"], static])
    res["area_pct"] = res["size"] * 100
    return res


def success_vs_area(results: pd.DataFrame) -> bytes:
    """Success rate against patch area with Wilson 95 % bands, one panel per protocol."""
    plt, sns = plotting()
    data = curve_table(results)
    results = confirmation_rows(results)
    protos = [p for p in ALL_PROTOCOLS if p in set(data["protocol"])]
    kinds = dict(zip(results["candidate"], results["kind"]))
    names = list(dict.fromkeys(results["candidate"]))
    pal = _palette(names, kinds)
    fig, axes = plt.subplots(1, max(1, len(protos)), figsize=(5.2 * max(1, len(protos)), 4.2), squeeze=False, sharey=True)
    for ax, proto in zip(axes[0], protos):
        d = data[data["protocol"] == proto].assign(patch=lambda f: f["candidate"].map(label_text))
        sns.lineplot(
            data=d, x="area_pct", y="success_rate", hue="patch", style="kind", markers=True, ax=ax,
            palette={label_text(n): c for n, c in pal.items()}, hue_order=[label_text(n) for n in names],
        )
        for name, g in d.groupby("candidate", sort=False):
            g = g.sort_values("area_pct")
            ax.fill_between(g["area_pct"], g["ci_low"], g["ci_high"], color=pal[name], alpha=0.15, linewidth=0)
        ax.set_title(PROTOCOL_TITLES[proto], parse_math=False)
        ax.set_xlabel("patch area (% of image)")
        ax.set_ylabel("targeted success (top-1 = target)")
        ax.set_ylim(-0.02, 1.02)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
    if protos and axes[0][len(protos) - 1].get_legend():
        sns.move_legend(axes[0][len(protos) - 1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    return figure_png(fig)


def placement_heatmap(results: pd.DataFrame, order: list[str], limit: int = 6) -> bytes | None:
    """Static success rate on confirmation by size x position, one panel per candidate (best first)."""
    plt, sns = plotting()
    results = confirmation_rows(results)
    static = results[results["protocol"] == "static"]
    if not len(static):
        return None
    names = [n for n in order if n in set(static["candidate"])][:limit]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        g = static[static["candidate"] == name]
        table = g.pivot_table(index="size", columns="placement", values="success_rate", sort=False)
        table.index = [f"{s * 100:g}%" for s in table.index]
        sns.heatmap(table, vmin=0, vmax=1, cmap="rocket_r", annot=True, fmt=".2f", cbar=False, ax=ax,
                    annot_kws={"fontsize": 7})
        ax.set_title(str(name), parse_math=False, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("area")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0)
    return figure_png(fig)


def _load(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None


def patch_gallery(entries: list[Entry], run_dir: Path) -> bytes | None:
    """Every candidate and control patch with what the model calls it alone."""
    plt = plotting()[0]
    shown = [(e, _load(run_dir / e.patch_file)) for e in entries if e.patch_file]
    shown = [(e, im) for e, im in shown if im is not None]
    if not shown:
        return None
    cols = min(6, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (e, im) in zip(axes.flat, shown):
        ax.imshow(im)
        ax.set_title(f"{e.name}\n[{e.kind}] reads as\n{e.reads_as.name or '?'} {e.reads_as.prob or 0:.2f}",
                     parse_math=False, fontsize=7)
    return figure_png(fig)


def before_after(examples: list[dict[str, Any]], run_dir: Path) -> bytes | None:
    """Clean and patched example images with the model's top-3 on each."""
    plt = plotting()[0]
    pairs = [(e, _load(run_dir / e["before_file"]), _load(run_dir / e["after_file"])) for e in examples]
    pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
    if not pairs:
        return None
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.0 * len(pairs), 6.4), squeeze=False)
    for j, (e, before, after) in enumerate(pairs):
        for i, (im, tops, what) in enumerate(((before, e["top3_before"], "clean"), (after, e["top3_after"], "patched"))):
            ax = axes[i][j]
            ax.imshow(im)
            ax.axis("off")
            lines = "\n".join(f"{t['name'][:22]} {t['prob']:.2f}" for t in tops)
            ax.set_title(f"{what}\n{lines}", parse_math=False, fontsize=7)
    return figure_png(fig)
