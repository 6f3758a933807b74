"""A deterministic market: prices are a pure function of (seed, symbol, minute).

Each symbol's log-price follows a Brownian motion with drift (GBM) on a one-minute grid. The Brownian
path is built top-down as a dyadic Brownian bridge over 2**26 minutes from 2000-01-01 (about 127 years):
the value at any minute needs only the ~26 midpoints above it, and every midpoint's normal draw comes
from a hash of (seed, symbol, interval). So the price at a time does not depend on which other prices
were asked for before, or in which order: the same seed and times give the same prices in every run.
Nothing here reads the wall clock.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from statistics import NormalDist

from services.broker.models import Bar, Quote, utc
from services.broker.simulator.calendar import trading_days
from services.clock.calendar import NEW_YORK

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
LEVELS = 26
HORIZON_MINUTES = 2**LEVELS
# Bridge intervals at least this wide are remembered (at most NODE_CACHE_SIZE of them at once).
NODE_CACHE_FROM = 256
NODE_CACHE_SIZE = 200_000
# Prices are anchored here, so around today each symbol trades near its initial price.
REFERENCE = datetime(2025, 1, 1, tzinfo=UTC)
MINUTES_PER_YEAR = 365.25 * 24 * 60
CENT = Decimal("0.01")

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "BRK.B", "JPM", "V",
    "JNJ", "WMT", "PG", "XOM", "UNH", "HD", "MA", "KO", "PEP", "COST",
    "DIS", "NFLX", "INTC", "AMD", "CSCO", "ORCL", "CRM", "ADBE", "NKE", "MCD",
    "BA", "IBM", "GS", "CAT", "T", "VZ", "SPY", "QQQ", "IWM", "DIA",
)  # fmt: skip

TIMEFRAME_MINUTES: dict[str, int] = {"1Min": 1, "5Min": 5, "15Min": 15, "1Hour": 60, "1Day": 1440}
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z.]{0,9}$")
_NORMAL = NormalDist()


def hash_unit(*parts: object) -> float:
    """A uniform number in (0, 1) from a hash of ``parts``."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def _normal(*parts: object) -> float:
    return _NORMAL.inv_cdf(hash_unit(*parts))


def minute_index(moment: datetime) -> int:
    """Whole minutes since EPOCH (floor); the price is constant within a minute."""
    seconds = (utc(moment) - EPOCH).total_seconds()
    index = math.floor(seconds / 60)
    if not 0 <= index < HORIZON_MINUTES:
        raise ValueError(f"{moment.isoformat()} is outside the simulated range")
    return index


def minute_start(index: int) -> datetime:
    return EPOCH + timedelta(minutes=index)


@dataclass(frozen=True, slots=True)
class SymbolParams:
    reference_price: float  # mid price at REFERENCE
    drift: float  # annual
    volatility: float  # annual
    spread_bps: float  # full bid/ask spread in basis points


class MarketSimulator:
    def __init__(self, seed: int, symbols: Iterable[str] | None = DEFAULT_SYMBOLS) -> None:
        self.seed = seed
        self._bar_cache: dict[tuple[str, int, int], Bar] = {}
        self._mid_cache: dict[tuple[str, int], float] = {}
        self._w_ref_cache: dict[str, float] = {}
        self._node_cache: dict[tuple[str, int, int], float] = {}
        self._params: dict[str, SymbolParams] = {}
        # None means: any well-formed ticker exists.
        self._symbols = frozenset(symbols) if symbols is not None else None
        self._reference_minute = minute_index(REFERENCE)

    def knows(self, symbol: str) -> bool:
        if self._symbols is not None:
            return symbol in self._symbols
        return bool(_SYMBOL_RE.match(symbol))

    def params(self, symbol: str) -> SymbolParams:
        cached = self._params.get(symbol)
        if cached is None:
            cached = self._params[symbol] = self._compute_params(symbol)
        return cached

    # Caches live on the instance (not functools.lru_cache on methods, whose class-wide cache would keep
    # every simulator and its bars alive for the life of the process).
    def _compute_params(self, symbol: str) -> SymbolParams:
        price = math.exp(math.log(20) + hash_unit(self.seed, symbol, "price") * (math.log(500) - math.log(20)))
        return SymbolParams(
            reference_price=price,
            drift=-0.05 + 0.20 * hash_unit(self.seed, symbol, "drift"),
            volatility=0.15 + 0.45 * hash_unit(self.seed, symbol, "vol"),
            spread_bps=1.0 + 9.0 * hash_unit(self.seed, symbol, "spread"),
        )

    # -- the Brownian path ---------------------------------------------------------------------------
    def _root(self, symbol: str) -> float:
        return math.sqrt(HORIZON_MINUTES) * _normal(self.seed, symbol, 0, HORIZON_MINUTES)

    def _midpoint(self, symbol: str, a: int, b: int, wa: float, wb: float) -> float:
        # Brownian bridge: W((a+b)/2) given W(a), W(b) is normal with mean (wa+wb)/2, variance (b-a)/4.
        if b - a < NODE_CACHE_FROM:
            return (wa + wb) / 2 + math.sqrt((b - a) / 4) * _normal(self.seed, symbol, a, b)
        # The wide intervals near the root are on the path to every minute: each is drawn once (the same
        # float every time, as the draw depends only on the interval).
        key = (symbol, a, b)
        cached = self._node_cache.get(key)
        if cached is None:
            if len(self._node_cache) > NODE_CACHE_SIZE:
                self._node_cache.clear()
            cached = self._node_cache[key] = (wa + wb) / 2 + math.sqrt((b - a) / 4) * _normal(self.seed, symbol, a, b)
        return cached

    def _brownian_range(self, symbol: str, lo: int, hi: int) -> list[float]:
        """W(n) for lo <= n <= hi, expanding only the bridge intervals that intersect [lo, hi]."""
        out: list[float] = [0.0] * (hi - lo + 1)

        def fill(a: int, b: int, wa: float, wb: float) -> None:
            if lo <= a <= hi:
                out[a - lo] = wa
            if lo <= b <= hi:
                out[b - lo] = wb
            if b - a <= 1 or b < lo or a > hi:
                return
            m = (a + b) // 2
            wm = self._midpoint(symbol, a, b, wa, wb)
            fill(a, m, wa, wm)
            fill(m, b, wm, wb)

        fill(0, HORIZON_MINUTES, 0.0, self._root(symbol))
        return out

    def _mid_at(self, symbol: str, minute: int) -> float:
        key = (symbol, minute)
        cached = self._mid_cache.get(key)
        if cached is None:
            if len(self._mid_cache) > 65_536:
                self._mid_cache.clear()
            cached = self._mid_cache[key] = self._mids(symbol, minute, minute)[0]
        return cached

    def _mids(self, symbol: str, lo: int, hi: int) -> list[float]:
        p = self.params(symbol)
        sigma = p.volatility / math.sqrt(MINUTES_PER_YEAR)
        mu = (p.drift - p.volatility**2 / 2) / MINUTES_PER_YEAR
        ref = self._reference_minute
        w_ref = self._w_ref(symbol)
        path = self._brownian_range(symbol, lo, hi)
        return [p.reference_price * math.exp(mu * (lo + i - ref) + sigma * (w - w_ref)) for i, w in enumerate(path)]

    def _w_ref(self, symbol: str) -> float:
        cached = self._w_ref_cache.get(symbol)
        if cached is None:
            ref = self._reference_minute
            cached = self._w_ref_cache[symbol] = self._brownian_range(symbol, ref, ref)[0]
        return cached

    # -- public prices ---------------------------------------------------------------------------------
    def price(self, symbol: str, moment: datetime) -> Decimal:
        """Mid price (to the cent) during the minute containing ``moment``."""
        return _cents(self._mid_at(symbol, minute_index(moment)))

    def quote(self, symbol: str, moment: datetime) -> Quote:
        minute = minute_index(moment)
        mid = self._mid_at(symbol, minute)
        half_spread = max(CENT, _cents(mid * self.params(symbol).spread_bps / 2 / 10_000))
        mid_cents = _cents(mid)
        return Quote(
            symbol=symbol,
            bid_price=max(CENT, mid_cents - half_spread),
            ask_price=mid_cents + half_spread,
            bid_size=Decimal(1 + int(10 * hash_unit(self.seed, symbol, minute, "bs"))),
            ask_size=Decimal(1 + int(10 * hash_unit(self.seed, symbol, minute, "as"))),
            timestamp=minute_start(minute),
        )

    def bar(self, symbol: str, start: datetime, timeframe: str = "1Min") -> Bar:
        """The bar starting at ``start`` (aligned down to the timeframe). A 1Day bar spans the regular
        session 09:30-16:00 New York of that date and is stamped at New York midnight, like Alpaca's."""
        if timeframe == "1Day":
            day = utc(start).astimezone(NEW_YORK).date()
            stamp = datetime.combine(day, time(0), NEW_YORK).astimezone(UTC)
            first = minute_index(datetime.combine(day, time(9, 30), NEW_YORK))
            last = first + 389
        else:
            width = TIMEFRAME_MINUTES[timeframe]
            first = minute_index(start) // width * width
            last = first + width - 1
            stamp = minute_start(first)
        return self._bar(symbol, first, last, stamp)

    def _bar(self, symbol: str, first: int, last: int, stamp: datetime, mids: list[float] | None = None) -> Bar:
        # A bar is a pure function of (seed, symbol, minutes): strategies ask for overlapping windows at
        # every tick, so each bar is computed once.
        key = (symbol, first, last)
        cached = self._bar_cache.get(key)
        if cached is None:
            cached = self._bar_cache[key] = self._compute_bar(
                symbol, first, stamp, mids or self._mids(symbol, first, last)
            )
            if len(self._bar_cache) > 262_144:
                self._bar_cache.clear()
        return cached

    def _compute_bar(self, symbol: str, first: int, stamp: datetime, mids: list[float]) -> Bar:
        volumes = [100 * (1 + int(50 * hash_unit(self.seed, symbol, first + i, "v"))) for i in range(len(mids))]
        total = sum(volumes)
        vwap = sum(m * v for m, v in zip(mids, volumes, strict=True)) / total
        return Bar(
            symbol=symbol,
            timestamp=stamp,
            open=_cents(mids[0]),
            high=_cents(max(mids)),
            low=_cents(min(mids)),
            close=_cents(mids[-1]),
            volume=Decimal(total),
            trade_count=len(mids) * 3,
            vwap=_cents(vwap),
        )

    def bars(self, symbol: str, start: datetime, end: datetime, timeframe: str = "1Min") -> list[Bar]:
        """Bars whose start lies in [start, end). Daily bars on trading days only."""
        out: list[Bar] = []
        if timeframe == "1Day":
            first_day = utc(start).astimezone(NEW_YORK).date()
            last_day = utc(end).astimezone(NEW_YORK).date()
            for session in trading_days(first_day, last_day):
                candidate = self.bar(symbol, datetime.combine(session.date, time(12), NEW_YORK), "1Day")
                if utc(start) <= candidate.timestamp < utc(end):
                    out.append(candidate)
            return out
        width = TIMEFRAME_MINUTES[timeframe]
        first = -(-minute_index(start) // width) * width  # first aligned bar start >= start
        stop = minute_index(end)
        starts = [b for b in range(first, stop, width) if minute_start(b) < utc(end)]
        missing = [b for b in starts if (symbol, b, b + width - 1) not in self._bar_cache]
        # Many missing bars: expand the Brownian path once over the whole window, not once per bar.
        window = self._mids(symbol, missing[0], missing[-1] + width - 1) if len(missing) > 4 else None
        for bar_start in starts:
            mids = None
            if window is not None and bar_start >= missing[0]:
                offset = bar_start - missing[0]
                mids = window[offset : offset + width]
            out.append(self._bar(symbol, bar_start, bar_start + width - 1, minute_start(bar_start), mids))
        return out

    def latest_bar(self, symbol: str, moment: datetime) -> Bar:
        """The last complete one-minute bar before ``moment``."""
        return self.bar(symbol, minute_start(minute_index(moment) - 1), "1Min")


def bar_is_closed(bar: Bar, timeframe: str, now: datetime) -> bool:
    """Whether ``bar`` is complete at ``now`` (a daily bar, stamped at New York midnight, closes ~16:00)."""
    width = timedelta(hours=16) if timeframe == "1Day" else timedelta(minutes=TIMEFRAME_MINUTES[timeframe])
    return bar.timestamp + width <= utc(now)


def _cents(value: float | Decimal) -> Decimal:
    return Decimal(repr(value) if isinstance(value, float) else value).quantize(CENT, ROUND_HALF_EVEN)
