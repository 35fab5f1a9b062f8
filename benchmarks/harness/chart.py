"""Draw results/<stem>.png from results/<stem>.json (run with the peers' venv: matplotlib).

python -m benchmarks.harness.chart benchmarks/results/latest.json benchmarks/results/latest.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = [
    ("drain_high", "drain, 2 x high (tasks/s)", True),
    ("drain_3x1", "drain, 3 x 1 (tasks/s)", True),
    ("enqueue", "enqueue, one at a time (tasks/s)", True),
    ("latency_p99", "enqueue->start p99 at 200/s (ms, log)", False),
    ("lateness_p99", "scheduled lateness p99 (ms, log)", False),
    ("memory_queued", "Redis bytes per queued task", False),
]


def main(source: Path, target: Path) -> None:
    doc = json.loads(source.read_text())
    rows = {(r["system"], r["metric"]): r for r in doc["rows"]}
    systems = list(dict.fromkeys(r["system"] for r in doc["rows"]))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (metric, title, higher) in zip(axes.flat, PANELS, strict=True):
        names = [s for s in systems if (s, metric) in rows and rows[(s, metric)]["median"]]
        values = [rows[(s, metric)]["median"] for s in names]
        lows = [v - rows[(s, metric)]["min"] for s, v in zip(names, values, strict=True)]
        highs = [rows[(s, metric)]["max"] - v for s, v in zip(names, values, strict=True)]
        palette = {"ours": "#d62728", "ours-patched": "#ff9896"}
        colours = [palette.get(s, "#7f7f7f") for s in names]
        ax.bar(names, values, color=colours, yerr=[lows, highs], capsize=3)
        ax.set_title(title + ("  (higher is better)" if higher else "  (lower is better)"),
                     fontsize=10)  # fmt: skip
        if metric in ("lateness_p99", "latency_p99"):
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=35, labelsize=8)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}" if v >= 10 else f"{v:.1f}", (i, v), ha="center",
                        va="bottom", fontsize=7)  # fmt: skip
    machine = doc["machine"]
    fig.suptitle(
        f"Task queues on one machine ({machine['cores']} cores, Redis {machine['redis']}), "
        f"{doc['date']}: medians of {doc['repetitions']}, bars min-max",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
