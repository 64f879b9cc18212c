"""Indian delivery costs of one trade, worked by hand from the documented rates."""

from __future__ import annotations

import pytest

from training_artifacts.costs import CostModel


def test_a_hand_worked_round_trip_on_nse():
    costs = CostModel()
    # Buy Rs 1,00,000: brokerage min(0.1%, Rs 20) = 20; exchange 0.00297% = 2.97; SEBI 0.10;
    # GST 18% of (20 + 2.97 + 0.10) = 4.1526; STT 0.1% = 100; stamp 0.015% = 15;
    # slippage 0.15% = 150.
    buy = 20 + 2.97 + 0.10 + 4.1526 + 100 + 15 + 150
    # Sell Rs 1,20,000: brokerage 20; exchange 3.564; SEBI 0.12; GST 18% of 23.684 = 4.26312;
    # STT 120; no stamp duty; DP charge 13 + 18% GST = 15.34; slippage 180.
    sell = 20 + 3.564 + 0.12 + 4.26312 + 120 + 15.34 + 180
    assert costs.side(100_000, buy=True) == pytest.approx(buy, abs=1e-9)
    assert costs.side(120_000, buy=False) == pytest.approx(sell, abs=1e-9)
    assert costs.round_trip(100_000, 120_000) == pytest.approx(635.50972, abs=1e-6)
    # A +20% trade nets about 19.36% of the buy value after costs.
    assert (120_000 - 100_000 - costs.round_trip(100_000, 120_000)) / 100_000 == pytest.approx(
        0.19364, abs=1e-5)


def test_small_orders_pay_percentage_brokerage_and_bse_its_own_exchange_rate():
    costs = CostModel(slippage=0.0)
    # Rs 10,000: brokerage 0.1% = 10 (under the Rs 20 cap); BSE exchange 0.00375% = 0.375.
    fees = 10 + 0.375 + 0.01
    expected = fees * 1.18 + 10 + 1.5  # GST on fees, STT 10, stamp 1.5
    assert costs.side(10_000, buy=True, exchange="BSE") == pytest.approx(expected, abs=1e-9)
