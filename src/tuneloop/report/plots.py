"""Plots for the report: plain numbers in, one inline SVG string out.

matplotlib draws on a bare ``Figure`` (no pyplot: no GUI backend and no global figure state,
so a web server can draw from several threads) and writes SVG with its text kept as text
(small, searchable, crisp at any zoom). The SVG is made fit to sit inside an HTML page: no XML
prologue, no metadata, no namespace URLs, every element id prefixed with the plot's key (many
plots share one page), and a width that follows the page. matplotlib is imported inside the
functions: importing this module costs nothing.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Okabe-Ito: told apart with every common colour-vision deficiency
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999")
GOOD, BAD, NEUTRAL = "#009E73", "#D55E00", "#777777"
_RC: Any = {  # matplotlib's stubs want literal keys
    "svg.fonttype": "none",  # text as <text>, not paths
    "svg.hashsalt": "tuneloop",  # the same numbers give the same SVG
    "text.parse_math": False,  # labels are data: "$5 or $10" is text, not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
_LOCK = threading.Lock()  # rc_context swaps matplotlib's global settings while a plot draws


@dataclass(frozen=True)
class Estimate:
    """A value and its 95% interval; None where undefined."""

    value: float | None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Estimate:
        """From ``{"value", "low", "high"}`` (an ``Interval.to_dict()``)."""
        if not data:
            return cls(None)
        return cls(_num(data.get("value")), _num(data.get("low")), _num(data.get("high")))


@dataclass(frozen=True)
class Confusion:
    """One confusion matrix: rows are gold labels, columns predictions."""

    name: str
    rows: Sequence[str]
    columns: Sequence[str]
    counts: Sequence[Sequence[int]]


@dataclass(frozen=True)
class BarPanel:
    """One panel of horizontal bars: a value per category."""

    title: str
    xlabel: str
    values: Mapping[str, float | None]
    fmt: str = "{:g}"


@dataclass(frozen=True)
class LinePanel:
    """One panel of lines over a shared x (None: no point there)."""

    title: str
    ylabel: str
    series: Mapping[str, Sequence[float | None]]
    log: bool = False
    notes: Sequence[str] = field(default_factory=tuple)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@contextmanager
def _drawing() -> Iterator[None]:
    import matplotlib

    with _LOCK, matplotlib.rc_context(_RC):
        yield


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


_ROOT = re.compile(r"<svg\b[^>]*>")


def _svg(fig: Any, key: str, title: str) -> str:
    """The figure as an ``<svg>`` element for an HTML page."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-") or "plot"
    text = re.sub(r'\bid="([^"]+)"', rf'id="{slug}-\1"', text)
    text = text.replace('xlink:href="#', f'href="#{slug}-').replace("url(#", f"url(#{slug}-")
    text = text.replace("xlink:href=", "href=")
    root = _ROOT.search(text)
    assert root is not None
    box = re.search(r'viewBox="([^"]+)"', root.group(0))
    width = float(box.group(1).split()[2]) if box else 600.0
    tag = (
        f'<svg viewBox="{box.group(1) if box else "0 0 600 400"}" class="plot-svg" role="img" '
        f'aria-label="{_attr(title)}" style="max-width: {width * 4 / 3:.0f}px">'
    )
    return text[: root.start()] + tag + text[root.end() :].rstrip()


def _attr(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _short(text: str, limit: int = 48) -> str:
    """A tick label that leaves room for the plot (the tables show it in full)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _err(est: Estimate) -> tuple[float, float]:
    """Whisker lengths below and above the value (0 where the interval is unknown)."""
    if est.value is None or est.low is None or est.high is None:
        return 0.0, 0.0
    return max(0.0, est.value - est.low), max(0.0, est.high - est.value)


def _limit(values: Sequence[Estimate]) -> tuple[float, float]:
    """0..1 for shares, else 0..a little above the largest upper bound."""
    tops = [x for e in values for x in (e.value, e.high) if x is not None]
    lows = [x for e in values for x in (e.value, e.low) if x is not None]
    top = max(tops, default=1.0)
    bottom = min(0.0, min(lows, default=0.0))
    if bottom >= 0.0 and top <= 1.0:
        return 0.0, 1.0
    return bottom, top * 1.12 if top > 0 else 1.0


def confusion_matrices(panels: Sequence[Confusion], *, title: str, key: str) -> str:
    """Confusion matrices side by side: cells shaded by their share of the gold row (recall
    on the diagonal: dark is most), labelled with the count and that share."""
    with _drawing():
        size = max(len(p.columns) for p in panels)
        cell = 0.55 if size <= 6 else 0.4
        side = max(2.4, 0.9 + cell * size)
        fig = _figure(side * len(panels) + 0.4, side + 0.55)
        fig.suptitle(title, fontweight="bold")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, panel in zip(axes, panels, strict=True):
            counts = [[int(c) for c in row] for row in panel.counts]
            shares = [[c / max(1, sum(row)) for c in row] for row in counts]
            ax.pcolormesh(  # vector cells (imshow would embed a bitmap)
                [j - 0.5 for j in range(len(panel.columns) + 1)],
                [i - 0.5 for i in range(len(panel.rows) + 1)],
                shares,
                cmap="Blues",
                vmin=0.0,
                vmax=1.0,
                edgecolors="white",
                linewidth=1.0,
            )
            ax.set_ylim(len(panel.rows) - 0.5, -0.5)
            for i, row in enumerate(counts):
                for j, count in enumerate(row):
                    share = shares[i][j]
                    ax.text(
                        j,
                        i,
                        f"{count}\n{share:.0%}",
                        ha="center",
                        va="center",
                        fontsize=8 if size <= 6 else 6,
                        color="white" if share > 0.55 else "#222222",
                    )
            columns = [_short(c, 24) for c in panel.columns]
            ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
            ax.set_yticks(range(len(panel.rows)), [_short(r, 24) for r in panel.rows])
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(f"{panel.name} (n={sum(map(sum, counts))})", fontsize=9)
            ax.spines[:].set_visible(False)
        return _svg(fig, key, title)


def interval_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[Estimate]],
    *,
    title: str,
    xlabel: str,
    key: str,
    xlim: tuple[float, float] | None = None,
) -> str:
    """Horizontal bars with 95% interval whiskers: one row per category (top to bottom), one
    bar per series in each row; the value is written beside each bar."""
    with _drawing():
        names = list(series)
        k = len(names)
        height = 0.8 / k
        fig = _figure(7.0, 0.9 + 0.22 * len(categories) * max(k, 1.4) + (0.3 if k > 1 else 0))
        ax = fig.subplots()
        everything = [e for name in names for e in series[name]]
        lo, hi = xlim or _limit(everything)
        span = hi - lo
        for j, name in enumerate(names):
            ys = [i - 0.4 + height * (j + 0.5) for i in range(len(categories))]
            values = list(series[name])
            widths = [lo if e.value is None else e.value for e in values]
            errs = [_err(e) for e in values]
            ax.barh(
                ys,
                [w - lo for w in widths],
                left=lo,
                height=height * 0.9,
                color=COLORS[j % len(COLORS)],
                label=_short(name, 40),
                xerr=([e[0] for e in errs], [e[1] for e in errs]),
                error_kw={"ecolor": "#333333", "capsize": 2.5, "elinewidth": 1},
            )
            for y, est in zip(ys, values, strict=True):
                end = max(x for x in (est.value, est.high, lo) if x is not None)
                ax.text(
                    end + span * 0.012, y, _fmt(est.value), va="center", fontsize=7.5, color="#333"
                )
        ax.set_yticks(range(len(categories)), [_short(c) for c in categories])
        ax.set_ylim(len(categories) - 0.5, -0.5)
        ax.set_xlim(lo, hi + span * 0.08)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
        ax.set_axisbelow(True)
        if k > 1:
            fig.legend(loc="outside lower center", ncols=min(k, 4), fontsize=8)
        return _svg(fig, key, title)


def comparison(
    categories: Sequence[str],
    series: Mapping[str, Sequence[Estimate]],
    diffs: Sequence[tuple[str, Estimate]],
    *,
    title: str,
    ylabel: str,
    diff_label: str,
    key: str,
) -> str:
    """Left: each system's score per metric with its interval. Right: the paired differences
    with their intervals around zero (green: better, orange: worse, grey: no significant
    difference at 95%)."""
    with _drawing():
        fig = _figure(8.0, 3.2)
        fig.suptitle(title, fontweight="bold")
        left, right = fig.subplots(1, 2, width_ratios=[3, 2])
        names = list(series)
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(categories))]
            values = list(series[name])
            errs = [_err(e) for e in values]
            left.bar(
                xs,
                [0.0 if e.value is None else e.value for e in values],
                width=width * 0.9,
                color=COLORS[j % len(COLORS)],
                label=_short(name, 40),
                yerr=([e[0] for e in errs], [e[1] for e in errs]),
                error_kw={"ecolor": "#333333", "capsize": 3, "elinewidth": 1},
            )
            for x, est in zip(xs, values, strict=True):
                top = est.high if est.high is not None else (est.value or 0.0)
                left.text(x, top + 0.02, _fmt(est.value), ha="center", fontsize=7.5)
        everything = [e for name in names for e in series[name]]
        lo, hi = _limit(everything)
        left.set_ylim(lo, hi * 1.12)
        left.set_xticks(range(len(categories)), [_short(c, 24) for c in categories])
        left.set_ylabel(ylabel)
        left.set_title("scores (95% intervals)", fontsize=9)
        fig.legend(loc="outside lower center", ncols=min(4, len(names)), fontsize=8)
        left.grid(axis="y", color="#e5e5e5", linewidth=0.8)
        left.set_axisbelow(True)
        for i, (_, est) in enumerate(diffs):
            color = NEUTRAL
            if est.low is not None and est.low > 0:
                color = GOOD
            elif est.high is not None and est.high < 0:
                color = BAD
            err = _err(est)
            right.errorbar(
                [0.0 if est.value is None else est.value],
                [i],
                xerr=([err[0]], [err[1]]),
                fmt="o",
                color=color,
                capsize=4,
                markersize=6,
            )
        right.axvline(0.0, color="#333333", linewidth=0.8, linestyle="--")
        right.set_yticks(
            range(len(diffs)),
            [
                f"{_short(name, 36)}\n{_fmt(e.value, 3)} [{_fmt(e.low, 3)}, {_fmt(e.high, 3)}]"
                for name, e in diffs
            ],
        )
        right.set_ylim(len(diffs) - 0.5, -0.5)
        bound = max([abs(x) for _, e in diffs for x in (e.low, e.high, e.value) if x] or [0.05])
        right.set_xlim(-bound * 1.3, bound * 1.3)
        right.set_xlabel(diff_label)
        right.set_title("paired difference (95% interval)", fontsize=9)
        return _svg(fig, key, title)


def lines(
    x: Sequence[float], panels: Sequence[LinePanel], *, title: str, xlabel: str, key: str
) -> str:
    """Line charts side by side over the same x (e.g. training steps)."""
    with _drawing():
        fig = _figure(4.2 * len(panels) + 0.6 if len(panels) > 1 else 7.0, 3.0)
        fig.suptitle(title, fontweight="bold")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, panel in zip(axes, panels, strict=True):
            for j, (name, ys) in enumerate(panel.series.items()):
                points = [(a, b) for a, b in zip(x, ys, strict=True) if b is not None]
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=COLORS[j % len(COLORS)],
                    marker="o" if len(points) <= 40 else None,
                    markersize=3,
                    linewidth=1.5,
                    label=_short(name, 40),
                )
            if panel.log:
                ax.set_yscale("log")
            if len(panel.series) > 1:
                ax.legend(fontsize=8)
            if not any(v is not None for ys in panel.series.values() for v in ys):
                ax.text(0.5, 0.5, "nothing recorded", ha="center", transform=ax.transAxes)
            for i, note in enumerate(panel.notes):
                ax.text(
                    0.98,
                    0.95 - i * 0.08,
                    note,
                    ha="right",
                    va="top",
                    transform=ax.transAxes,
                    fontsize=7.5,
                    color="#333333",
                )
            ax.set_title(panel.title, fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.grid(color="#e5e5e5", linewidth=0.8)
        return _svg(fig, key, title)


def bar_panels(panels: Sequence[BarPanel], *, title: str, key: str) -> str:
    """Horizontal bars side by side, a value written beside each bar (counts, seconds...)."""
    with _drawing():
        rows = max(len(p.values) for p in panels)
        fig = _figure(
            max(7.0, 3.3 * len(panels)), 1.1 + 0.28 * max(rows, 2) + (0.25 if title else 0)
        )
        fig.suptitle(title, fontweight="bold")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for j, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
            names = list(panel.values)
            values = [panel.values[n] for n in names]
            shown = [0.0 if v is None else v for v in values]
            ax.barh(range(len(names)), shown, color=COLORS[j % len(COLORS)], height=0.65)
            top = max(shown, default=0.0) or 1.0
            for i, value in enumerate(values):
                text = "n/a" if value is None else panel.fmt.format(value)
                ax.text(
                    (value or 0.0) + top * 0.02, i, text, va="center", fontsize=7.5, color="#333"
                )
            ax.set_yticks(range(len(names)), [_short(n) for n in names])
            ax.set_ylim(len(names) - 0.5, -0.5)
            ax.set_xlim(0.0, top * 1.25)
            ax.set_xlabel(panel.xlabel)
            ax.set_title(panel.title, fontsize=9)
            ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
            ax.set_axisbelow(True)
        return _svg(fig, key, title)
