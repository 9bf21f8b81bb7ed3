"""Draw one iteration's timeline: a row per worker (component, rank, GPU), a bar per span of work."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "sim": "tab:green",
    "infer": "tab:blue",
    "train": "tab:red",
    "sync": "tab:purple",
    "offload": "tab:gray",
    "onload": "tab:gray",
    "send": "tab:orange",
    "wait": "gainsboro",
}


def plot_timeline(rows: dict[str, list[tuple[str, float, float]]], path: str, title: str = "") -> str:
    """rows: row label (e.g. "rollout 0 (GPU 1)") -> spans (label, start, end) in wall-clock seconds."""
    starts = [s for spans in rows.values() for _, s, _ in spans]
    if not starts:
        raise ValueError("no spans recorded: nothing to draw")
    origin = min(starts)
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(rows) + 1.5))
    for y, (row, spans) in enumerate(rows.items()):
        for label, start, end in spans:
            kind = label.split()[0]
            ax.barh(
                y,
                end - start,
                left=start - origin,
                height=0.6,
                color=COLORS.get(kind, "tab:orange"),
                edgecolor="black",
                linewidth=0.2,
            )
    ax.set_yticks(range(len(rows)), list(rows))
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the iteration started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    ax.legend(handles, list(COLORS), loc="upper right", ncol=len(COLORS), fontsize=8)
    ax.set_title(title or "one iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
