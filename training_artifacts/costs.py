"""Indian equity delivery costs of a round trip (buy, then sell on a later day).

Defaults (rates as of 2024-2026; sources in market/sim/REFERENCES.md, topic 2):

* STT 0.1% of the buy value and 0.1% of the sell value (delivery; Zerodha's statutory-charges
  page; the 2026 Budget changed only F&O rates).
* Exchange transaction charge 0.00297% per side on NSE, from 1 Oct 2024 (NSE circular after
  SEBI/HO/MRD/TPD-1/P/CIR/2024/92); 0.00375% on BSE for A/B and most groups. BSE X/XT/Z
  group stocks pay 0.1% (`bse_xz_group`), which matters for illiquid small caps.
* SEBI turnover fee Rs 10 per crore (0.0001%) per side.
* Stamp duty 0.015% of the buy value (uniform since 1 Jul 2020).
* GST 18% on brokerage + exchange charge + SEBI fee.
* Brokerage: Rs 20 or 0.1% per order, whichever is lower (the typical discount broker;
  Zerodha charges 0 for delivery, Angel One min(20, 0.1%) since 1 Nov 2024).
* DP charge Rs 13 + GST per sell (Zerodha; Angel One Rs 20 + GST).
* Slippage 0.15% per side: an assumption, not a sourced figure (liquid mid caps 0.05-0.2%,
  small caps 0.2-0.5%; the universe's liquidity floor keeps trades in the first range).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CostModel:
    stt: float = 0.001
    exchange_nse: float = 0.0000297
    exchange_bse: float = 0.0000375
    sebi: float = 0.000001
    stamp_duty_buy: float = 0.00015
    gst: float = 0.18
    brokerage_rate: float = 0.001
    brokerage_cap: float = 20.0  # rupees per order
    dp_charge: float = 13.0  # rupees per sell, before GST
    slippage: float = 0.0015  # of the traded value, per side

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def side(self, value: float, buy: bool, exchange: str = "NSE") -> float:
        """Costs in rupees of one order of `value` rupees (slippage included)."""
        brokerage = min(self.brokerage_rate * value, self.brokerage_cap)
        exch = value * (self.exchange_nse if exchange == "NSE" else self.exchange_bse)
        sebi = value * self.sebi
        cost = brokerage + exch + sebi + self.gst * (brokerage + exch + sebi)
        cost += self.stt * value + self.slippage * value
        if buy:
            cost += self.stamp_duty_buy * value
        else:
            cost += self.dp_charge * (1 + self.gst)
        return cost

    def round_trip(self, buy_value: float, sell_value: float, exchange: str = "NSE") -> float:
        """Costs in rupees of buying `buy_value` and later selling for `sell_value`."""
        return self.side(buy_value, True, exchange) + self.side(sell_value, False, exchange)
