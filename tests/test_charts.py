"""Setup charts (inference/charts.py) on constructed bases whose setup dict is measured from the
bars drawn: what is drawn where, the window shown, the marks, and rendering from threads."""

from __future__ import annotations

import io
import threading
from datetime import date

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from features.indicators import sma
from inference import charts
from inference.charts import chart_figure, render_setup_chart, render_thumbnail
from tests.setups import synthetic_vcp

TITLE = "RAUTGO  Rautgo Industries (simulated)"


@pytest.fixture(scope="module")
def base():
    return synthetic_vcp(seed=0)


def _figure(bars, setup, why_not=None, simulated=True, size=charts.FULL):
    d, o, h, lo, c, v = bars.arrays()
    return chart_figure(d, o, h, lo, c, v, setup=setup, why_not=why_not, title=TITLE,
                        simulated=simulated, size=size)


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))
            if t.get_text()]


def test_png_of_the_requested_size(base):
    bars, setup = base
    png = render_setup_chart(*bars.arrays(), setup, None, TITLE, True)
    assert png.startswith(b"\x89PNG")
    assert mpimg.imread(io.BytesIO(png)).shape[:2] == (600, 1000)
    thumb = render_thumbnail(*bars.arrays(), setup, None, TITLE, True)
    assert mpimg.imread(io.BytesIO(thumb)).shape[:2] == (charts.THUMBNAIL.height_px,
                                                         charts.THUMBNAIL.width_px)
    assert len(thumb) < len(png)


def test_each_contraction_shaded_from_its_high_to_its_low_and_labelled(base):
    bars, setup = base
    fig = _figure(bars, setup)
    ax = fig.axes[0]
    shown = bars.dates[charts._first_shown(bars.dates, setup):]
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == len(setup["contractions"]) == 3
    for box, c in zip(boxes, setup["contractions"], strict=True):
        x0 = int(np.searchsorted(shown, np.datetime64(c["high_date"])))
        x1 = int(np.searchsorted(shown, np.datetime64(c["low_date"])))
        assert box.get_x() == pytest.approx(x0 - 0.5)
        assert box.get_x() + box.get_width() == pytest.approx(x1 + 0.5)
        assert box.get_y() == pytest.approx(c["low"])
        assert box.get_y() + box.get_height() == pytest.approx(c["high"])
    texts = _texts(fig)
    for k, c in enumerate(setup["contractions"], start=1):
        assert any(t.startswith(f"T{k} {c['depth']:.0%}") for t in texts), texts
    assert f"pivot {setup['pivot']:,.2f}" in texts
    assert f"stop {setup['stop']:,.2f}" in texts
    assert any(setup["footprint"] in t and TITLE in t for t in texts)
    assert "breakout" in texts
    assert "SIMULATED DATA" in texts


def test_pivot_and_stop_lines_at_their_prices(base):
    bars, setup = base
    ax = _figure(bars, setup).axes[0]
    flat = {round(float(line.get_ydata()[0]), 6) for line in ax.lines
            if len(line.get_ydata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]}
    assert round(setup["pivot"], 6) in flat and round(setup["stop"], 6) in flat


def test_averages_come_from_the_whole_history_and_window_frames_the_base(base):
    bars, setup = base
    first = charts._first_shown(bars.dates, setup)
    base_start = int(np.searchsorted(bars.dates, np.datetime64(setup["base_start"])))
    assert first == base_start - charts.LEAD_SESSIONS
    ax = _figure(bars, setup).axes[0]
    by_label = {line.get_label(): line for line in ax.lines}
    for w in (50, 150, 200):
        expected = sma(bars.close[None, :], w)[0][first:]
        drawn = np.asarray(by_label[f"SMA {w}"].get_ydata())
        assert np.isfinite(drawn).all()  # defined from the first session shown
        np.testing.assert_allclose(drawn, expected)


def test_at_most_a_year_shown_however_old_the_base():
    bars, setup = synthetic_vcp(seed=1)
    old = {**setup, "base_start": date(2025, 1, 1),
           "contractions": [{**setup["contractions"][0], "high_date": date(2025, 1, 1)},
                            *setup["contractions"][1:]]}
    assert len(bars.dates) - charts._first_shown(bars.dates, old) == charts.MAX_SESSIONS


def test_no_setup_is_the_same_chart_with_the_why_not_caption(base):
    bars, setup = base
    why = "last contraction 14% deep, more than 12% allowed"
    fig = _figure(bars, None, why_not=why, simulated=False)
    texts = _texts(fig)
    assert f"No setup: {why}" in texts
    assert not any(t.startswith("T1") or t.startswith("pivot") for t in texts)
    assert "SIMULATED DATA" not in texts and "breakout" not in texts
    assert [line.get_label() for line in fig.axes[0].lines][:3] == ["SMA 50", "SMA 150",
                                                                   "SMA 200"]
    assert len(bars.dates) - charts._first_shown(bars.dates, None) == charts.NO_SETUP_SESSIONS


def test_no_breakout_mark_before_the_breakout_and_extended_said():
    bars, setup = synthetic_vcp(seed=2, breakout=False)
    texts = _texts(_figure(bars, {**setup, "extended": True}))
    assert "breakout" not in texts
    assert any(t.startswith("extended") for t in texts)


def test_sessions_without_trades_and_bad_input():
    bars, setup = synthetic_vcp(seed=3)
    for a in (bars.open, bars.high, bars.low, bars.close):
        a[-30:-25] = np.nan
    bars.volume[-30:-25] = np.nan
    png = render_setup_chart(*bars.arrays(), setup, None, TITLE, False)
    assert png.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="same non-zero length"):
        render_setup_chart(bars.dates[:-1], bars.open, bars.high, bars.low, bars.close,
                           bars.volume, setup, None, TITLE, False)


def test_threads_render_what_one_thread_renders_and_leave_no_figures():
    import matplotlib.pyplot as plt

    cases = [synthetic_vcp(seed=s) for s in range(4)]
    figures_before = plt.get_fignums()
    serial = [render_thumbnail(*b.arrays(), s, None, TITLE, True) for b, s in cases]
    out: dict[int, bytes] = {}

    def work(i: int) -> None:
        b, s = cases[i]
        out[i] = render_thumbnail(*b.arrays(), s, None, TITLE, True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [out[i] for i in range(4)] == serial
    assert plt.get_fignums() == figures_before
