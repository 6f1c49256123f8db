"""Accuracy curves of the testbed tables: accuracy against kept visual tokens, one panel per question
group, one line per method (``scripts/testbed_table.py --task long`` writes the png)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(rows: list[dict], groups: tuple[str, ...], out: str | Path, title: str) -> Path:
    """One panel per group of ``rows`` (testbed_table rows of one checkpoint): x the mean visual
    tokens kept, y the group's accuracy; ``full`` a dashed line; rows whose every sample failed
    (a budget the method refuses) listed under the panels instead of plotted as 0%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.6), sharey=True)
    ran = [r for r in rows if r.get("all") is not None]
    refused = sorted({f"{r['method']} at {r['budget']:g}" for r in rows if r.get("all") is None})
    methods = list(dict.fromkeys(r["method"] for r in ran if r["method"] != "full"))
    full = next((r for r in ran if r["method"] == "full"), None)
    for ax, group in zip(axes, groups):
        for method in methods:
            points = sorted((r["visual_tokens"], r[group]) for r in ran if r["method"] == method)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
        if full is not None:
            ax.axhline(full[group], color="black", linestyle="--", linewidth=1, label="full")
        ax.axhline(25.0, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the decades only: no overlapping labels
        ax.set_title(group)
        ax.set_xlabel("visual tokens kept")
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    if refused:
        fig.text(0.01, 0.01, "refused (every sample failed): " + ", ".join(refused), fontsize=7)
    fig.tight_layout(rect=(0, 0.05 if refused else 0, 1, 1))
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
