"""The run log: one JSON object per line (train steps and evaluations), and plots of its curves.

The log is appended to, so a resumed run continues the same file; plotting reads it back and
keeps the last record per (kind, step), which drops the steps a crashed run repeated.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

LOG_FILE = "log.jsonl"


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = Path(run_dir) / LOG_FILE
        self.enabled = enabled

    def write(self, kind: str, step: int, **values) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    """Records of a log file, the last one per (kind, step), in step order."""
    latest: dict[tuple[str, int], dict] = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            latest[(record.get("kind", "train"), record.get("step", 0))] = record
    return sorted(latest.values(), key=lambda r: (r["step"], r["kind"]))


def _series(records: list[dict], kind: str) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} for the numeric fields of one kind of record."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        if record["kind"] != kind:
            continue
        for key, value in record.items():
            if key in ("kind", "step", "time") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            steps, values = out.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(value)
    return out


def _panels(records: list[dict]) -> list[tuple[str, dict[str, tuple[list[int], list[float]]]]]:
    train, evals = _series(records, "train"), _series(records, "eval")
    panels = [
        ("loss", {k: v for k, v in train.items() if k == "loss"}),
        ("learning rate", {k: v for k, v in train.items() if k == "lr"}),
        ("logit scale exp(t)", {k: v for k, v in train.items() if k == "temperature_scale"}),
        ("samples/s", {k: v for k, v in train.items() if k == "samples_per_s"}),
        ("zero-shot accuracy (held out)", {k: v for k, v in evals.items() if k.startswith("zeroshot/")}),
        ("retrieval recall (held out)", {k: v for k, v in evals.items() if k.startswith("retrieval/")}),
    ]
    return [(title, series) for title, series in panels if series]


def plot_log(run_dir: Path) -> tuple[Path, Path]:
    """Write curves.png (matplotlib) and curves.html (plotly, self-contained) into the run folder."""
    run_dir = Path(run_dir)
    panels = _panels(read_log(run_dir / LOG_FILE))
    png, html = run_dir / "curves.png", run_dir / "curves.html"
    columns = 2
    rows = max(1, math.ceil(len(panels) / columns))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, columns, figsize=(11, 3.2 * rows), squeeze=False)
    for ax, (title, series) in zip(axes.flat, panels):
        for name, (steps, values) in series.items():
            ax.plot(steps, values, label=name.split("/", 1)[-1], marker="o" if len(steps) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)

    from plotly.subplots import make_subplots

    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[title for title, _ in panels])
    for index, (_, series) in enumerate(panels):
        for name, (steps, values) in series.items():
            figure.add_scatter(x=steps, y=values, name=name, row=index // columns + 1, col=index % columns + 1)
    figure.update_layout(height=320 * rows, title_text=f"training curves: {run_dir.name}")
    figure.write_html(html, include_plotlyjs=True, full_html=True)
    return png, html
