"""Legs: how every simulated stock moves, and the planted structures made of them.

Every stock moves in legs. A leg lasts a number of sessions, adds a drift to the stock's return,
and sets the levels toward which its volatility regime and volume regime are pulled
(``market/sim/process.py``). Every stock has a clock of **free** legs (``NaturalLegs``): 8-40
sessions each with drift N(0, (0.2 sigma)^2) per session (sigma = the stock's idiosyncratic
volatility), or, for a quarter of them, swings of 4-15 sessions at 0.5-1.0 sigma either way;
volatility level (in logs) AR(1) across legs (persistence 0.8, sd 0.45), volume level
N(0, 0.45^2); now and then a calm spell of 2-5 legs lowers both. A **planted structure** is a
sequence of legs laid over that clock: each replaces the drift with one aimed at a target
(re-aimed from where the stock really is whenever the free clock changes leg, so noise is
never smoothed away and errors do not pile up) and adds its planned levels to the free
clock's volatility and volume levels. An advance moves at 0.2-0.5 sigma per session, a
contraction's decline or recovery at 0.5-0.9 sigma, so their lengths follow from the size of
the move:

* ``ADV``  prior advance of +A (15-45 sigma, within 30-120%); volume level +0.15.
* ``DEC``  a contraction's decline of depth D_k (the first 5-11 sigma, within 8-35%, i.e.
  deeper for volatile stocks); ``REC`` the recovery back near the base high (95-99% of the
  advance's top; the last one to 96-99% of the last contraction's start, the pivot).
  Volatility level 0.5 x log(D_k / D_1) (floored at 0.5 x log 0.2): the contraction of
  volatility that names the pattern. Volume level from +0.1 in the first contraction to
  log(dry-up) from the second-to-last on.
* ``POST`` after the base: 80 sessions with drift ``post_drift(z)`` (see ``quality``) added to
  the free legs', volatility level +0.05 and volume level 0; whether and when the stock breaks
  out is left to the noise.
* ``BRK``  (partial bases) a breakdown below the first contraction's low; the stock is free after.

Kinds: ``vcp`` (2-6 contractions, each 40-70% as deep as the one before, the last 2.5-6%,
volume drying up to 30-70% of normal), and look-alikes that are no VCP: ``range`` (a
consolidation of 3-6 swings of any order, with volatility and volume contracting as in a VCP,
after any or no advance), ``widening`` (each contraction 1.25-1.7x deeper, no dry-up),
``no_dryup`` (VCP depths, volume rising to 105-150%) and ``partial`` (one contraction, a half
recovery, then a breakdown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ADV, DEC, REC, POST, BRK = 1, 2, 3, 4, 5
KINDS = ("vcp", "range", "widening", "no_dryup", "partial")
KIND_P = (0.55, 0.25, 0.08, 0.07, 0.05)
LAST_DEPTH = (0.025, 0.06)  # planned depth of a VCP's last contraction
RATIO = (0.40, 0.70)  # typical depth ratio of successive contractions
POST_LEN = 80  # covers the trade: 10 sessions of entry window + 60 of holding
STRUCTURE_GAP = 20  # at least this many free sessions between two structures on one stock

# The odds of a good breakout: z = QUALITY_BASE + sum(weight x clipped standardized observable)
# + N(0, QUALITY_NOISE); the post-base drift is POST_DRIFT_MAX x tanh(z / 1.5) per session.
QUALITY_BASE = 0.0
QUALITY_WEIGHTS = {
    # name: (weight, centre, scale); standardized = (value - centre) / scale
    "last_depth": (-0.55, 0.08, 0.03),  # a tighter last contraction is better
    "contraction_ratio": (-0.35, 0.65, 0.15),  # faster tightening is better
    "dryup": (-0.45, 0.75, 0.20),  # less volume in the last contraction is better
    "prior_advance": (0.30, 0.60, 0.25),  # a stronger run into the base is better
    "rs_pct": (0.35, 0.70, 0.15),  # percentile of the 252-session return
    "market_regime": (0.30, 0.0, 1.0),  # market 63-session return in sd units
}
QUALITY_CLIP = 2.5
QUALITY_NOISE = 0.5
POST_DRIFT_MAX = 0.008
POST_VOL_LEVEL = 0.05
VOL_CONTRACTION = 0.5  # a contraction's volatility level: this x log(D_k / D_1), >= this x log 0.2
NATURAL_LEG = (8, 40)
NATURAL_DRIFT_SD = 0.20  # x sigma
NATURAL_VOL_SD, NATURAL_VOLUME_SD = 0.45, 0.45
NATURAL_VOL_PERSIST = 0.8  # a free leg's volatility level keeps this much of the previous one
ADVANCE_SPEED = (0.20, 0.50)  # |drift| of a planted advance, x sigma
CONTRACTION_SPEED = (0.50, 0.90)  # |drift| of a planted decline or recovery, x sigma
SWING_SPEED = (0.50, 1.00)  # |drift| of a free swing leg, x sigma
SWING_SHARE = 0.25  # free legs that are swings: 4-15 sessions at SWING_SPEED, either way
SWING_LEG = (4, 15)
CALM_SPELL_P = 0.03  # chance that a free leg starts a calm spell
CALM_SPELL_LEGS = (2, 5)
CALM_SPELL_VOL = (0.5, 1.6)  # total fall of the volatility level (log)
CALM_SPELL_VOLUME = (0.3, 0.9)  # volume level at the end of the spell


@dataclass
class Leg:
    kind: int
    start: int
    length: int
    param: float  # ADV: gain; DEC/BRK: depth; REC: fraction of the reference high
    v_target: float
    w_target: float
    ref: str = ""  # REC: "top" (the advance's top) or "pivot" (the last contraction's start)

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class Structure:
    stock: int
    kind: str
    t0: int
    legs: list[Leg]
    advance: float
    depths: list[float]
    dryup: float
    noise: float  # the quality's irreducible part, drawn up front for determinism
    # Filled in while simulating:
    realized: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.legs[-1].end

    @property
    def contraction_legs(self) -> list[tuple[Leg, Leg]]:
        decs = [leg for leg in self.legs if leg.kind == DEC]
        recs = [leg for leg in self.legs if leg.kind == REC]
        return list(zip(decs, recs, strict=False))

    @property
    def ready(self) -> int | None:
        """Last session of the base (the last recovery's last session); None for partials."""
        post = [leg for leg in self.legs if leg.kind == POST]
        return post[0].start - 1 if post else None


def _depths(rng: np.random.Generator, kind: str, sigma: float) -> list[float]:
    if kind == "widening":
        n = int(rng.integers(2, 5))
        d = [_clip(sigma * float(rng.uniform(3, 6)), 0.05, 0.15)]
        for _ in range(n - 1):
            d.append(min(d[-1] * float(rng.uniform(1.25, 1.7)), 0.45))
        return d
    first = _clip(sigma * float(rng.uniform(5, 11)), 0.08, 0.35)
    if kind == "partial":
        return [first]
    if kind == "range":  # swings of any order: a consolidation, not a tightening
        return [first * float(rng.uniform(0.4, 1.1)) for _ in range(int(rng.integers(3, 7)))]
    # A VCP tightens to a last contraction of LAST_DEPTH whatever the stock's volatility: as
    # many contractions as that takes at a typical ratio, then ratios that get there exactly.
    last = min(float(rng.uniform(*LAST_DEPTH)), first * 0.6)
    typical = float(rng.uniform(*RATIO))
    n = int(_clip(1 + round(np.log(last / first) / np.log(typical)), 2, 6))
    ratio = (last / first) ** (1 / (n - 1))
    d = [first]
    for _ in range(n - 1):
        d.append(d[-1] * ratio * float(rng.uniform(0.9, 1.1)))
    return d


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x  # np.clip is slow on scalars


def _length(rng: np.random.Generator, log_move: float, sigma: float, lo: int, hi: int,
            speed_range: tuple[float, float] | None = None) -> int:
    speed_range = speed_range or CONTRACTION_SPEED
    speed = sigma * float(rng.uniform(*speed_range))
    return int(_clip(round(abs(log_move) / speed), lo, hi))


def plan_structure(
    rng: np.random.Generator, stock: int, kind: str, t0: int, sigma: float
) -> Structure:
    # Volatile stocks run further, so a structure lasts about as long whatever the volatility.
    advance = _clip(sigma * float(rng.uniform(15, 45)), 0.30, 1.20)
    if kind == "range":  # a range needs no run into it
        advance = float(rng.uniform(-0.10, 0.35))
    adv_len = _length(rng, np.log1p(abs(advance)), sigma, 25, 120, ADVANCE_SPEED)
    depths = _depths(rng, kind, sigma)
    # Volatility contracts through the base in the planned proportions; a range calms the
    # same way although its swings do not tighten.
    calm = (depths if kind != "range"
            else [depths[0] * float(rng.uniform(0.4, 0.7)) ** j for j in range(len(depths))])
    if kind == "no_dryup":
        dryup = float(rng.uniform(1.05, 1.5))
    elif kind == "widening":
        dryup = float(rng.uniform(0.8, 1.3))
    else:
        dryup = float(rng.uniform(0.30, 0.70))
    legs = [Leg(ADV, t0, adv_len, advance, 0.0, 0.15)]
    t = t0 + adv_len
    n = len(depths)
    def vol_level(j: int) -> float:
        return VOL_CONTRACTION * float(np.log(_clip(calm[min(j, n - 1)] / calm[0], 0.2, 1.0)))

    def volume_level(j: int) -> float:
        frac = (min(j, n - 1) / max(n - 1, 1)) ** 2
        return 0.1 + (float(np.log(dryup)) - 0.1) * frac

    for k, depth in enumerate(depths):
        # Declines and recoveries move at CONTRACTION_SPEED: a shallower one is shorter.
        down = _length(rng, np.log1p(-depth), sigma, 3, 60)
        up = _length(rng, np.log1p(-depth), sigma, 3, 60)
        # Volume dries up through the base, most of it in the last contraction; like volatility,
        # the recovery already moves to the next contraction's level (the regimes lag).
        w_t, w_next = volume_level(k), volume_level(k + 1)
        legs.append(Leg(DEC, t, down, depth, vol_level(k), w_t))
        t += down
        if kind == "partial":
            legs.append(Leg(REC, t, up, float(rng.uniform(0.5, 0.8)), vol_level(k), w_t,
                            ref="half"))
            t += up
            brk = float(rng.uniform(0.05, 0.12))
            legs.append(Leg(BRK, t, _length(rng, np.log1p(-brk), sigma, 3, 30), brk, 0.0, 0.2))
            break
        last = k == n - 1
        frac_hi = float(rng.uniform(0.96, 0.99) if last else rng.uniform(0.93, 0.98))
        if kind == "range":
            frac_hi = float(rng.uniform(0.88, 1.0))
        legs.append(Leg(REC, t, up, frac_hi, vol_level(k + 1), w_next,
                        ref="pivot" if last else "top"))
        t += up
    if kind != "partial":
        legs.append(Leg(POST, t, POST_LEN, 0.0, POST_VOL_LEVEL, 0.0))
    return Structure(stock, kind, t0, legs, advance, depths, dryup,
                     float(rng.normal(0, QUALITY_NOISE)))


def quality(obs: dict[str, float], noise: float) -> float:
    """The latent quality z of a base from its realized observables (documented above)."""
    z = QUALITY_BASE + noise
    for name, (weight, centre, scale) in QUALITY_WEIGHTS.items():
        value = obs.get(name, np.nan)
        std = 0.0 if not np.isfinite(value) else (value - centre) / scale
        z += weight * float(np.clip(std, -QUALITY_CLIP, QUALITY_CLIP))
    return z


def post_drift(z: float) -> float:
    return POST_DRIFT_MAX * float(np.tanh(z / 1.5))


def plan_market(
    rng: np.random.Generator, listing: np.ndarray, delisting: np.ndarray, sigma: np.ndarray,
    n_sessions: int, per_stock: float,
) -> list[Structure]:
    """Structures for every stock, as a renewal process in time: free spells of exponential
    length, then a structure, and so on. It starts well before the data, so after its first
    few hundred sessions the share of stocks inside a structure is the same on every date (a
    date carries no hint of what is planted). A structure needs 60 sessions of history before
    it and never crosses a delisting; about `per_stock` of them land in the data per stock."""
    out: list[Structure] = []
    kinds = np.array(KINDS)
    typical_len = 300
    mean_gap = max(n_sessions / per_stock - typical_len, 50.0)
    for i in range(len(listing)):
        hi = int(delisting[i])
        # Begin well before the data, so that a stock's first structure is not tied to date 0.
        t = -2 * typical_len
        while True:
            t += STRUCTURE_GAP + int(rng.exponential(mean_gap))
            if t >= min(hi, n_sessions) - 40:
                break
            kind = str(rng.choice(kinds, p=KIND_P))
            s = plan_structure(rng, i, kind, t, float(sigma[i]))
            if hi < n_sessions and s.end > hi:  # never plant across a delisting
                break
            if t >= int(listing[i]) + 60:
                out.append(s)
            t = s.end
    return out


def natural_legs(
    rng: np.random.Generator, sigma: np.ndarray, v_prev: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random legs for free stocks: (length, drift, volatility level, volume level). Levels are
    volatility level is AR(1) across legs, so calm and busy spells last several legs, as in a
    planted base; the volume level is drawn afresh."""
    m = len(sigma)
    keep, fresh = NATURAL_VOL_PERSIST, np.sqrt(1 - NATURAL_VOL_PERSIST**2)
    swing = rng.random(m) < SWING_SHARE
    length = np.where(swing, rng.integers(SWING_LEG[0], SWING_LEG[1] + 1, size=m),
                      rng.integers(NATURAL_LEG[0], NATURAL_LEG[1] + 1, size=m))
    drift = np.where(swing, rng.choice([-1.0, 1.0], size=m) * rng.uniform(*SWING_SPEED, size=m),
                     rng.normal(0, NATURAL_DRIFT_SD, size=m)) * sigma
    return (
        length,
        drift,
        keep * v_prev + fresh * rng.normal(0, NATURAL_VOL_SD, size=m),
        rng.normal(0, NATURAL_VOLUME_SD, size=m),
    )


class NaturalLegs:
    """Every stock's own clock of free legs. It keeps running underneath a planted structure,
    whose legs replace its drift and add their levels to its volatility and volume levels, so
    a planted base varies exactly as much as a free stock, plus its planned shape.

    Free stocks also go through **calm spells**: over 2-5 legs their volatility level falls by
    0.5-1.6 (in logs) and their volume level to 30-90% of normal, then both jump back. Markets
    have such quiet months; they make a base's contraction of volatility and volume ordinary
    on its own, so only the price structure around it marks a VCP."""

    FIELDS = ("sigma", "end", "drift", "v", "w", "spell_left", "spell_v", "spell_w",
              "step_v", "step_w")

    def __init__(self, rng: np.random.Generator, sigma: np.ndarray):
        m = len(sigma)
        self.sigma = sigma
        self.end = np.zeros(m, dtype=np.int64)
        self.drift, self.v, self.w = np.zeros(m), np.zeros(m), np.zeros(m)
        self.spell_left = np.zeros(m, dtype=np.int64)
        self.spell_v, self.spell_w = np.zeros(m), np.zeros(m)  # the spell's offsets so far
        self.step_v, self.step_w = np.zeros(m), np.zeros(m)
        self._base_v = np.zeros(m)  # the AR level without the spell
        self.tick(0, rng)
        # Start mid-leg, so the free legs of different stocks do not change in step.
        self.end = rng.integers(1, self.end + 1)

    def tick(self, t: int, rng: np.random.Generator) -> np.ndarray:
        """Start new legs where the old ones ended; returns those rows."""
        idx = np.flatnonzero(self.end <= t)
        if len(idx):
            length, drift, v, w = natural_legs(rng, self.sigma[idx], self._base_v[idx])
            self.end[idx] = t + length
            self.drift[idx], self._base_v[idx] = drift, v
            self._advance_spells(idx, rng)
            self.v[idx] = v + self.spell_v[idx]
            self.w[idx] = w + self.spell_w[idx]
        return idx

    def _advance_spells(self, idx: np.ndarray, rng: np.random.Generator) -> None:
        going = idx[self.spell_left[idx] > 0]
        self.spell_v[going] += self.step_v[going]
        self.spell_w[going] += self.step_w[going]
        self.spell_left[going] -= 1
        over = idx[(self.spell_left[idx] == 0) & (self.spell_v[idx] != 0)]
        self.spell_v[over] = 0.0  # the calm ends at once: volatility and volume come back
        self.spell_w[over] = 0.0
        idle = idx[(self.spell_left[idx] == 0) & ~np.isin(idx, over)]
        new = idle[rng.random(len(idle)) < CALM_SPELL_P]
        if len(new):
            legs = rng.integers(CALM_SPELL_LEGS[0], CALM_SPELL_LEGS[1] + 1, size=len(new))
            self.step_v[new] = -rng.uniform(*CALM_SPELL_VOL, size=len(new)) / legs
            self.step_w[new] = np.log(rng.uniform(*CALM_SPELL_VOLUME, size=len(new))) / legs
            self.spell_v[new] = self.step_v[new]
            self.spell_w[new] = self.step_w[new]
            self.spell_left[new] = legs - 1

    def take(self, idx: np.ndarray, t0: int = 0) -> NaturalLegs:
        """These rows' clocks, with time re-based so that session t0 becomes 0."""
        out = object.__new__(NaturalLegs)
        for name in (*self.FIELDS, "_base_v"):
            setattr(out, name, np.array(getattr(self, name)[idx]))
        out.end = out.end - t0
        return out

    @staticmethod
    def concat(parts: list[NaturalLegs], rep: np.ndarray) -> NaturalLegs:
        out = object.__new__(NaturalLegs)
        for name in (*NaturalLegs.FIELDS, "_base_v"):
            setattr(out, name, np.concatenate([getattr(p, name) for p in parts])[rep])
        return out
