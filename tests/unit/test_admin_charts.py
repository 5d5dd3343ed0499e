"""The overview's SVG charts: a labelled scale, time labels, a failure strip on which one dead job among
ten thousand successes still shows, and the numbers of each bar on hover."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from pgqueue.admin.charts import DEAD, Bar, compact, nice_top, percent, svg_chart

MINUTE, HOUR = dt.timedelta(minutes=1), dt.timedelta(hours=1)


def minutes(counts: list[tuple[int, int, int]]) -> list[Bar]:
    start = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)
    return [Bar(start=start + i * MINUTE, succeeded=ok, dead=dead, retried=again)
            for i, (ok, dead, again) in enumerate(counts)]


def texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def red_heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(rf'height="([\d.]+)" fill="{DEAD}"', svg)]


@pytest.mark.parametrize(("value", "counts", "top"), [
    (0, True, 1), (1, True, 1), (3, True, 5), (7, True, 10), (2400, True, 2500), (12_001, True, 20_000),
    (0.00004, False, 0.00005), (0.003, False, 0.005), (0.4, False, 0.5),
])
def test_the_scale_ends_on_a_round_number(value: float, counts: bool, top: float) -> None:
    assert nice_top(value, counts=counts) == pytest.approx(top)


def test_labels_read_as_numbers_and_shares() -> None:
    assert [compact(n) for n in (0, 800, 2500, 40_000, 1_200_000)] == ["0", "800", "2.5k", "40k", "1.2M"]
    assert [percent(r) for r in (0, 0.0001, 0.025, 0.4, 1)] == ["0 %", "0.01 %", "2.5 %", "40 %", "100 %"]


def test_one_dead_job_among_ten_thousand_shows_on_both_scales() -> None:
    svg = svg_chart(minutes([(10_000, 1, 0)] + [(9_000, 0, 0)] * 59), step=MINUTE, label="last hour")
    heights = red_heights(svg)
    assert len(heights) == 2 and min(heights) >= 2  # the bar's base and the failure strip
    assert "18:00–18:01: 10,000 succeeded, 1 dead, 0 attempts retried; 0.01 % of attempts failed" in svg
    assert "last hour: 541,000 succeeded, 1 dead" in svg  # the chart's own title, for screen readers


def test_the_y_axis_labels_its_gridlines_left_of_the_bars() -> None:
    svg = svg_chart(minutes([(2_300, 0, 4)] * 60), step=MINUTE, label="x")
    labels = texts(svg)
    assert {"0", "1.2k", "2.5k"} <= set(labels)  # 0, half and top of a 2,500 scale
    assert "0.2 %" in labels  # the failure strip's own top: 4 of 2,304 attempts failed
    for x in re.findall(r'<text x="([\d.]+)"[^>]*text-anchor="end"[^>]*>[^<:]*<', svg):
        assert float(x) < 46  # y labels sit in the margin, never on a bar


def test_time_labels_every_ten_minutes_or_three_hours_with_dates() -> None:
    hour = svg_chart(minutes([(1, 0, 0)] * 60), step=MINUTE, label="x")
    assert [t for t in texts(hour) if ":" in t] == ["18:00", "18:10", "18:20", "18:30", "18:40", "18:50"]
    start = dt.datetime(2026, 12, 3, 20, 0, tzinfo=dt.UTC)
    day = svg_chart([Bar(start=start + i * HOUR, succeeded=5, dead=0) for i in range(24)], step=HOUR, label="x")
    assert [t for t in texts(day) if ":" in t] == ["21:00", "00:00", "03:00", "06:00", "09:00", "12:00", "15:00",
                                                  "18:00"]
    assert "Thu 03 Dec" in texts(day) and "Fri 04 Dec" in texts(day)  # the first bar's day, and where a day starts


def test_a_time_label_at_the_right_edge_ends_there() -> None:
    start = dt.datetime(2026, 12, 4, 17, 1, tzinfo=dt.UTC)  # the last bar is 18:00
    svg = svg_chart([Bar(start=start + i * MINUTE, succeeded=1, dead=0) for i in range(60)], step=MINUTE, label="x")
    assert re.search(r'<text x="600.0" y="\d+" text-anchor="end">18:00</text>', svg)


def test_an_empty_period_says_so() -> None:
    svg = svg_chart(minutes([(0, 0, 0)] * 60), step=MINUTE, label="x")
    assert "No job finished in this period." in texts(svg) and not red_heights(svg)
