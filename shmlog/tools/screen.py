"""The text of one ``shmlog top`` frame: a title, the progress, a row per key and writer.

Rendering turns a :class:`shmlog.format.sample.Sample` into plain lines; how
they reach the terminal (curses, ANSI, plain frames) is ``shmlog.tools.top``'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..format.progress import format_eta, shown_epoch
from .watch import Sample


@dataclass
class Frame:
    """Lines of one screen; the first ``fixed`` stay put when the rest scrolls."""

    lines: list[str]
    fixed: int


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.5g}"


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1f}" if rate < 1e5 else f"{rate:.3g}"


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _format_count(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _epoch(info: dict[str, Any], mode: str) -> Any:
    """The epoch as the log lines show it (``shown_epoch``), or the value as it is."""
    epoch, total = info["epoch"], info.get("max_epochs")
    training = total is not None or info.get("max_iters") is not None
    try:
        return shown_epoch(mode, int(epoch), training, None if total is None else int(total))
    except (TypeError, ValueError):
        return epoch  # not a count: shown as it is


def progress_line(info: dict[str, Any], epoch_mode: str = "train") -> str:
    """``iter I/N  epoch E/M  eta T``; the epoch as the log line shows it (the
    running one during training, 1-based), ``epoch_mode`` the mode it counts in."""
    parts = []
    for name, total in (("iter", "max_iters"), ("epoch", "max_epochs")):
        value = info.get(name)
        if name == "epoch" and name in info:
            value = _epoch(info, epoch_mode)
        if name in info and total in info:
            parts.append(f"{name} {_format_count(value)}/{_format_count(info[total])}")
        elif name in info:
            parts.append(f"{name} {_format_count(value)}")
        elif total in info:
            parts.append(f"{total} {_format_count(info[total])}")
    if "eta" in info:
        parts.append(f"eta {format_eta(info['eta'])}")
    return "  ".join(parts)


# The fewest characters of a session name a shortened title keeps.
_NAME_MIN = 12
_ELLIPSIS = "..."


def shorten(text: str, room: int) -> str:
    """``text`` in ``room`` characters: its end kept after an ellipsis when it is longer.

    The end of a session name tells runs apart (a default name ends in the
    launch's port and restart count under torchrun, in a random id
    otherwise), so the start is what goes.
    """
    if len(text) <= room:
        return text
    if room <= len(_ELLIPSIS):
        return text[len(text) - max(0, room):] if room > 0 else ""
    return _ELLIPSIS + text[len(text) - (room - len(_ELLIPSIS)):]


def title_line(session: str, rest: str, width: int | None = None) -> str:
    """``shmlog top  session NAME  <rest>`` in ``width`` columns (None: no limit).

    Too wide, the name is shortened (its end kept, at least 12 characters),
    then the ``shmlog top`` prefix goes, then ``session``, the name down to
    8 characters; the figures in ``rest`` stay whole.  Only a terminal too
    narrow for the figures themselves gets a line cut at ``width``.
    """
    for lead, least in (("shmlog top  session ", _NAME_MIN), ("session ", _NAME_MIN), ("", 8)):
        line = f"{lead}{session}  {rest}"
        if width is None or len(line) <= width:
            return line
        room = width - len(lead) - 2 - len(rest)
        if room >= min(least, len(session)):
            return f"{lead}{shorten(session, room)}  {rest}"
    return f"{shorten(session, 8)}  {rest}"[:width]


def render(sample: Sample, show_writers: bool = True, width: int | None = None) -> Frame:
    """The lines of one frame: title, progress, then one row per key (and writer).

    ``width``: the columns the title must fit in (None: no limit).
    """
    hubs = sorted({k.hub for k in sample.keys} | set(sample.progress))
    many_hubs = len(hubs) > 1
    clock = time.strftime("%H:%M:%S", time.localtime(sample.wall))
    exited = sample.writers_total - sample.writers_alive - len(sample.exit_pending)
    writers = f"writers {sample.writers_alive}" + (f" (+{exited} exited)" if exited else "")
    rest = f"members {sample.members}  {writers}  keys {len(sample.keys)}  {clock}"
    lines = [title_line(sample.session, rest, width)]
    for hub in sorted(sample.progress):
        text = progress_line(sample.progress[hub], sample.epoch_modes.get(hub, "train"))
        if text:
            lines.append(f"[{hub}] {text}" if many_hubs else text)
    lines.append("")

    header = ["HUB"] if many_hubs else []
    header += ["KEY", "CURRENT", f"MEAN({sample.window})", "RATE/s", "UPDATES", "LAST"]
    rows: list[list[str]] = []
    for stat in sample.keys:
        age = None if stat.last_ns is None else (sample.taken_ns - stat.last_ns) / 1e9
        row = [stat.hub] if many_hubs else []
        row += [stat.key, format_value(stat.current), format_value(stat.mean),
                format_rate(stat.rate), str(stat.updates), format_age(age)]
        rows.append(row)
        if not show_writers:
            continue
        for w in stat.writers:
            age = None if w.last_ns is None else (sample.taken_ns - w.last_ns) / 1e9
            exited = not w.alive and w.label not in sample.exit_pending
            label = "  " + w.label + (" (exited)" if exited else "")
            row = [""] if many_hubs else []
            row += [label, format_value(w.current), format_value(w.mean),
                    format_rate(w.rate), str(w.updates), format_age(age)]
            rows.append(row)
    if not rows:
        lines.append("no scalars logged yet")
        return Frame(lines, len(lines))
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    text_columns = 2 if many_hubs else 1  # left-aligned; the numbers are right-aligned

    def line(cells: list[str]) -> str:
        out = [c.ljust(w) if i < text_columns else c.rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    lines.append(line(header))
    fixed = len(lines)
    lines.extend(line(r) for r in rows)
    return Frame(lines, fixed)
