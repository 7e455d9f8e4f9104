"""``shmlog plot``: loss, learning rate and timing curves of a run, as a PNG.

The input is a JSON-lines scalars file, one object per logged step such as
``{"step": 50, "epoch": 1, "loss": 0.7, "lr": 0.02, "time": 0.31}``: the
``scalars.jsonl`` shmlog's log writer exports beside the log file, or the
``vis_data/scalars.json`` of MMEngine's local visualisation backend.
Metrics are grouped by what they measure, because their scales differ by
orders of magnitude (a loss of 2, a learning rate of 1e-4, an iteration time
of 0.3 s): one subplot per group, all against the step.

matplotlib is an optional dependency (the ``plot`` extra): it is imported
only when a figure is drawn, and drawn through the Agg canvas directly, so
neither a display nor pyplot's global backend choice is involved.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..errors import PlotError

__all__ = [
    "GROUPS",
    "Scalars",
    "default_output",
    "find_scalars",
    "group_of",
    "load_scalars",
    "plot",
    "render_png",
]

PathLike = Union[str, "os.PathLike[str]"]

INSTALL_HINT = "pip install 'shmlog[plot]' (or pip install matplotlib)"
# Subplots, top to bottom, with their titles.
GROUPS = (("loss", "loss"), ("lr", "learning rate"), ("time", "time (s)"), ("other", "other"))
# Keys that place a record (x axis, epoch marks) rather than measure something;
# ``mode`` (train/val/test) is read separately.
POSITION_KEYS = frozenset({"step", "epoch", "iter"})
_TOKENS = re.compile(r"[/._\-\s]+")


@dataclass
class Scalars:
    """Series read from one scalars file."""

    source: Path
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    epochs: list[tuple[int, int]] = field(default_factory=list)  # (step, epoch) per record
    skipped: int = 0  # lines that were not a JSON object with a numeric step


def group_of(name: str) -> str:
    """'loss', 'lr', 'time' or 'other' for a metric name such as 'train/loss_cls'."""
    lowered = name.lower()
    if "loss" in lowered:
        return "loss"
    tokens = [t for t in _TOKENS.split(lowered) if t]
    if "lr" in tokens or "learning" in tokens or lowered.endswith("lr"):
        return "lr"
    if "time" in tokens:
        return "time"
    return "other"


def find_scalars(path: PathLike) -> Path:
    """``path`` itself, or the newest ``*.jsonl`` / ``scalars.json*`` below it."""
    root = Path(path)
    if root.is_file():
        return root
    if not root.is_dir():
        raise PlotError(f"{root}: no such file or directory")
    found: list[Path] = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".jsonl") or name.startswith("scalars.json"):
                found.append(Path(directory) / name)
    if not found:
        raise PlotError(f"no scalars file in {root} (looked for *.jsonl and scalars.json*)")
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)))


_NON_FINITE = frozenset({"nan", "inf", "-inf", "infinity", "-infinity"})


def _number(value: Any) -> float | None:
    """A metric value as a float; None for what is not a number.

    Non-finite values arrive as strings ("nan", "inf") from writers that keep
    their JSON strict; they become gaps in the curve.
    """
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def load_scalars(path: PathLike) -> Scalars:
    """Every numeric metric of a JSON-lines file, sorted by step.

    Rows with a ``mode`` other than ``train`` (the ``val`` and ``test`` rows of
    shmlog's ``scalars.jsonl`` export) name their metrics ``<mode>/<name>``,
    so a validation loss is its own curve next to the training loss.  Lines
    that do not parse (a run still writing its last line, say) are counted in
    ``skipped`` rather than fatal.
    """
    source = Path(path)
    result = Scalars(source)
    rows: list[tuple[int, int, dict[str, Any]]] = []
    with open(source, encoding="utf-8", errors="replace") as f:
        for index, line in enumerate(f):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                result.skipped += 1
                continue
            step = _number(record.get("step")) if isinstance(record, dict) else None
            if step is None or not math.isfinite(step):
                result.skipped += 1
                continue
            rows.append((int(step), index, record))
    rows.sort(key=lambda row: (row[0], row[1]))  # resumed runs may repeat steps
    for step, _index, record in rows:
        epoch = _number(record.get("epoch"))
        if epoch is not None and math.isfinite(epoch):
            result.epochs.append((step, int(epoch)))
        mode = record.get("mode")
        prefix = f"{mode}/" if isinstance(mode, str) and mode not in ("", "train") else ""
        for name, raw in record.items():
            value = _number(raw)
            if name in POSITION_KEYS or name == "mode" or value is None:
                continue
            steps, values = result.series.setdefault(prefix + name, ([], []))
            steps.append(step)
            values.append(value if math.isfinite(value) else math.nan)
    return result


def _epoch_ends(epochs: Iterable[tuple[int, int]]) -> list[int]:
    """The last logged step of every epoch that another one follows."""
    ends: list[int] = []
    last: tuple[int, int] | None = None
    for step, epoch in epochs:
        if last is not None and epoch != last[1]:
            ends.append(last[0])
        last = (step, epoch)
    return ends


def render_png(scalars: Scalars, out: PathLike, title: str | None = None) -> Path:
    """Draw one subplot per non-empty group into the PNG ``out``."""
    if not scalars.series:
        raise PlotError(
            f"{scalars.source}: no numeric metrics (expected JSON lines such as "
            f'{{"step": 10, "loss": 0.5}}; {scalars.skipped} lines skipped)'
        )
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(f"shmlog plot needs matplotlib: {INSTALL_HINT}") from None
    grouped: dict[str, list[str]] = {}
    for name in sorted(scalars.series):
        grouped.setdefault(group_of(name), []).append(name)
    panels = [(group, label) for group, label in GROUPS if group in grouped]
    figure = Figure(figsize=(10, 2.8 * len(panels) + 0.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    epoch_ends = _epoch_ends(scalars.epochs)
    for ax, (group, label) in zip(axes, panels):
        names = grouped[group]
        positive = True
        for name in names:
            steps, values = scalars.series[name]
            style = {"marker": "o", "markersize": 3} if len(steps) < 30 else {}
            ax.plot(steps, values, label=name, linewidth=1.2, **style)
            finite = [v for v in values if math.isfinite(v)]
            positive = positive and bool(finite) and min(finite) > 0
        if group == "loss" and positive and _spread(scalars, names) >= 100:
            ax.set_yscale("log")
            label += " (log scale)"
        if group == "lr" and ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if 0 < len(epoch_ends) <= 100:
            for step in epoch_ends:
                ax.axvline(step, color="0.85", linewidth=0.8, zorder=0)
        ax.set_title(label, loc="left", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best", ncol=1 if len(names) <= 6 else 2)
    axes[-1].set_xlabel("step" + ("  (grey lines: ends of epochs)" if epoch_ends else ""))
    figure.suptitle(title or str(scalars.source), fontsize=11)
    target = Path(out)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True)
    figure.savefig(target, format="png")
    return target


def _spread(scalars: Scalars, names: list[str]) -> float:
    finite = [v for n in names for v in scalars.series[n][1] if math.isfinite(v)]
    return max(finite) / min(finite) if finite and min(finite) > 0 else 1.0


def default_output(source: PathLike) -> Path:
    """Where the PNG goes by default: next to the scalars file, with its stem."""
    source = Path(source)
    stem = source.name.split(".")[0] or source.stem  # scalars.json.1 -> scalars
    return source.with_name(stem + ".png")


def plot(path: PathLike, out: PathLike | None = None, title: str | None = None) -> Path:
    """Find the scalars under ``path``, plot them, return the PNG's path."""
    source = find_scalars(path)
    return render_png(load_scalars(source), default_output(source) if out is None else out, title)
