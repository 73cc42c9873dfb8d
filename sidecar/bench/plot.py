"""Latency against throughput: p50 and p99 of each target, one point per case, so a
sweep draws the curve along which latency turns up as the load nears capacity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sidecar.bench.results import Result


def plot(results: Sequence[Result], path: Path, title: str) -> bool:
    """Writes the PNG; False if matplotlib is not installed (the `bench` extra has it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5))
    targets = list(dict.fromkeys(r.target for r in results))
    for i, target in enumerate(targets):
        mine = sorted((r for r in results if r.target == target and r.p50_ms is not None), key=lambda r: r.achieved_rps)
        x = [r.achieved_rps for r in mine]
        color = f"C{i}"
        ax.plot(x, [r.p50_ms for r in mine], marker="o", color=color, label=f"{target} p50")
        ax.plot(x, [r.p99_ms for r in mine], marker="^", linestyle="--", color=color, label=f"{target} p99")
        for r in mine:
            ax.annotate(r.case.split()[0], (r.achieved_rps, r.p99_ms), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=color)
    ax.set_xlabel("achieved throughput (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 6, not 6 x 10^0
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
