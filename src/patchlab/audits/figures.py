"""The audit's two figures, drawn from the leaderboard table (seaborn, Agg)."""
from __future__ import annotations

import textwrap

import pandas as pd

from ..generators.registry import kind_labels
from ..patches.candidate import NULL_KIND, REFERENCE_KIND
from ..report.figures import figure_png, label_text, plotting

CONTROL_LABELS = {NULL_KIND: "best null control", REFERENCE_KIND: "target photo (reference)"}


def figure_labels() -> dict[str, str]:
    """Kind -> axis label: each registered generator's label, then the control and the reference,
    wrapped to short lines."""
    return {k: textwrap.fill(v, 12, break_long_words=False) for k, v in {**kind_labels(), **CONTROL_LABELS}.items()}


def success_distribution(df: pd.DataFrame) -> bytes | None:
    """Per pair, the best success of each candidate kind and of the best control (strip + box)."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return None
    labels = figure_labels()
    long = ok.melt(id_vars=["source", "target"], value_vars=list(labels), var_name="kind",
                   value_name="rate").dropna(subset=["rate"])
    if long.empty:
        return None
    plt, sns = plotting()
    long["kind"] = long["kind"].map(labels)
    order = [k for k in labels.values() if k in set(long["kind"])]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sns.boxplot(data=long, x="kind", y="rate", order=order, color="#dddddd", fliersize=0, ax=ax)
    sns.stripplot(data=long, x="kind", y="rate", order=order, hue="kind", hue_order=order, palette="tab10",
                  legend=False, size=6, jitter=0.3, alpha=0.8, ax=ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("")
    ax.set_ylabel(f"targeted success ({label_text(ok['protocol'].iloc[0])})")
    ax.set_title(f"best success per pair, {len(ok)} pairs", parse_math=False)
    return figure_png(fig)


def vulnerability_vs_similarity(df: pd.DataFrame) -> bytes | None:
    """Best attack success (with its 95 % interval) against the pair's head-direction similarity;
    points are labelled with their leaderboard rank."""
    ok = df[(df["status"] == "ok") & df["similarity"].notna() & df["success"].notna()]
    if ok.empty:
        return None
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    yerr = [(ok["success"] - ok["ci_low"]).clip(lower=0), (ok["ci_high"] - ok["success"]).clip(lower=0)]
    ax.errorbar(ok["similarity"], ok["success"], yerr=yerr, fmt="none", ecolor="#999999", elinewidth=1, capsize=2)
    several = "model" in ok and ok["model"].nunique() > 1  # a multi-model audit: one marker per model
    sns.scatterplot(data=ok, x="similarity", y="success", hue="best_kind", style="model" if several else None,
                    s=50, ax=ax)
    if len(ok) <= 30:  # leaderboard ranks (names would overlap)
        for _, r in ok.iterrows():
            ax.annotate(f"#{r['rank']}", (r["similarity"], r["success"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("class similarity (cosine of centred head directions)")
    ax.set_ylabel("best targeted success")
    ax.set_title("vulnerability vs class similarity", parse_math=False)
    if ax.get_legend():
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=8,
                        title="best kind / model" if several else "best kind")
    return figure_png(fig)
