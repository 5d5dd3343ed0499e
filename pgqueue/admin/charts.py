"""The overview's charts as inline SVG (no script, no CDN, works offline): jobs finished per interval on a
labelled scale, and under it the failure rate on its own scale, so one dead job among ten thousand
successes still shows. Hovering a bar shows its numbers."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.utils.html import escape

WIDTH = 600  # the viewBox; the SVG scales to its box
LEFT = 46  # room for the y labels, left of the bars
TOP = 8  # room for the top label above the highest gridline
PLOT = 104  # height of the finished-jobs bars
STRIP = 30  # height of the failure-rate strip
GAP = 16
OK, DEAD, RETRIED = "#10b981", "#dc2626", "#f59e0b"


@dataclass(frozen=True)
class Bar:
    """One interval's outcomes (pgqueue_stat): jobs that succeeded or went dead, attempts that failed and
    will be retried."""

    start: dt.datetime  # in the admin's time zone
    succeeded: int
    dead: int
    retried: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.dead

    @property
    def attempts(self) -> int:
        return self.succeeded + self.dead + self.retried

    @property
    def failure_rate(self) -> float:
        """Failed attempts (dead or to be retried) among those that ended."""
        return (self.dead + self.retried) / self.attempts if self.attempts else 0.0


def percent(rate: float) -> str:
    """A share for a label: "0 %", "0.01 %", "2.5 %", "40 %"."""
    p = rate * 100
    if p >= 10 or p == 0:
        return f"{p:.0f} %"
    if p >= 1:
        return f"{p:.1f}".removesuffix(".0") + " %"
    return f"{p:.2g} %"


def compact(n: float) -> str:
    """A count for an axis label: "800", "2.5k", "40k", "1.2M"."""
    for size, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            value = n / size
            return f"{value:.1f}".removesuffix(".0") + unit if value < 10 else f"{value:.0f}{unit}"
    return f"{n:g}"


def nice_top(value: float, *, counts: bool) -> float:
    """The axis maximum: the smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value`
    (whole numbers for counts)."""
    if value <= 0:
        return 1.0 if counts else 0.01
    power = 10 ** math.floor(math.log10(value))
    top = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value)
    return float(max(1, math.ceil(top))) if counts else top


def summary(bars: list[Bar]) -> dict[str, int | str]:
    """The totals a chart's heading states in words."""
    succeeded, dead, retried = (sum(getattr(b, k) for b in bars) for k in ("succeeded", "dead", "retried"))
    attempts = succeeded + dead + retried
    return {"succeeded": succeeded, "dead": dead, "retried": retried,
            "dead_rate": percent(dead / (succeeded + dead)) if succeeded + dead else "-",
            "failure_rate": percent((dead + retried) / attempts) if attempts else "-"}


def svg_chart(bars: list[Bar], *, step: dt.timedelta, label: str) -> str:
    """Stacked bars of the jobs finished per interval (dead at the base, in red), a y axis with
    gridlines, time labels under the bars (hours and minutes; a date where a day starts when the step is
    an hour or more), and a strip of the failure rate per interval. `label` names the chart for screen
    readers ("Jobs finished per minute, last hour")."""
    n = max(len(bars), 1)
    slot = (WIDTH - LEFT - 4) / n
    top = nice_top(max([b.finished for b in bars] + [0]), counts=True)
    rate_top = nice_top(max([b.failure_rate for b in bars] + [0]), counts=False)
    base = TOP + PLOT  # the bars stand on it
    strip_y = base + GAP
    axis_y = strip_y + STRIP
    height = axis_y + (30 if step >= dt.timedelta(hours=1) else 18)
    total = summary(bars)
    description = (f"{label}: {total['succeeded']:,} succeeded, {total['dead']:,} dead, "
                   f"{total['retried']:,} attempts retried; failure rate {total['failure_rate']}")
    parts = [f'<svg class="pgqueue-chart" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
             f'aria-label="{escape(description)}"><title>{escape(description)}</title>']

    # gridlines and labels: finished jobs (0, half, top) and the failure rate (0, top)
    for value in (0.0, top / 2, top):
        y = base - value / top * PLOT
        parts.append(f'<line class="pgqueue-grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>')
        if value == 0 or value == int(value):
            parts.append(f'<text x="{LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end">{compact(value)}</text>')
    for value in (0.0, rate_top):
        y = axis_y - value / rate_top * STRIP
        parts.append(f'<line class="pgqueue-grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>')
    parts.append(f'<text x="{LEFT - 6}" y="{strip_y + 7:.1f}" text-anchor="end">{percent(rate_top)}</text>'
                 f'<text x="{LEFT - 6}" y="{axis_y:.1f}" text-anchor="end" class="pgqueue-chart-quiet">failed</text>')

    for i, bar in enumerate(bars):
        x = LEFT + i * slot + 0.5
        w = max(slot - 1, 1)
        ok_h = bar.succeeded / top * PLOT
        dead_h = bar.dead / top * PLOT
        if bar.dead:
            dead_h = max(dead_h, 2.0)  # one dead job among thousands still shows
        end = bar.start + step
        when = (f"{bar.start:%H:%M}–{end:%H:%M}" if step < dt.timedelta(hours=1)
                else f"{bar.start:%a %d %b %H:%M}–{end:%H:%M}")
        title = (f"{when}: {bar.succeeded:,} succeeded, {bar.dead:,} dead, {bar.retried:,} attempts retried"
                 + (f"; {percent(bar.failure_rate)} of attempts failed" if bar.attempts else ""))
        parts.append(f'<g><title>{escape(title)}</title>'
                     f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{axis_y}" fill="transparent"/>')
        # the failure strip: dead at the base, then retried attempts, each at least 2 units when not zero
        dead_r = max(bar.dead / bar.attempts / rate_top * STRIP, 2.0) if bar.dead else 0.0
        retried_r = max(bar.retried / bar.attempts / rate_top * STRIP, 2.0) if bar.retried else 0.0
        for y, h, colour in ((base - dead_h - ok_h, ok_h, OK), (base - dead_h, dead_h, DEAD),
                             (axis_y - dead_r - retried_r, retried_r, RETRIED), (axis_y - dead_r, dead_r, DEAD)):
            if h > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{colour}"/>')
        parts.append("</g>")

    if not any(b.attempts for b in bars):
        parts.append(f'<text x="{(LEFT + WIDTH) / 2:.0f}" y="{TOP + PLOT / 2:.0f}" text-anchor="middle">'
                     'No job finished in this period.</text>')
    parts.append(_time_labels(bars, step, slot, axis_y))
    parts.append("</svg>")
    return "".join(parts)


def _time_labels(bars: list[Bar], step: dt.timedelta, slot: float, axis_y: float) -> str:
    """Ticks under the bars: every 10 minutes for a per-minute chart, every 3 hours for an hourly one,
    and for an hourly one the date under its first bar and where a new day starts."""
    hourly = step >= dt.timedelta(hours=1)
    parts = []
    for i, bar in enumerate(bars):
        x = LEFT + (i + 0.5) * slot
        if (bar.start.hour % 3 == 0) if hourly else (bar.start.minute % 10 == 0):
            # a label near the right edge ends there rather than being cut
            at, anchor = (WIDTH, "end") if x + 14 > WIDTH else (x, "middle")
            parts.append(f'<line class="pgqueue-axis" x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y}" y2="{axis_y + 3}"/>'
                         f'<text x="{at:.1f}" y="{axis_y + 13}" text-anchor="{anchor}">{bar.start:%H:%M}</text>')
    if hourly and bars:
        starts = [i for i, bar in enumerate(bars) if bar.start.hour == 0 and i]
        dated = [i for i in starts if i > 2]  # a day starting at bar 1 or 2 takes the first bar's place
        dated.insert(0, starts[0] if starts and starts[0] <= 2 else 0)
        parts += [f'<text x="{LEFT + i * slot:.1f}" y="{axis_y + 26}" class="pgqueue-chart-date">'
                  f'{bars[i].start:%a %d %b}</text>' for i in dated]
    return "".join(parts)
