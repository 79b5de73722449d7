"""Order flow (OFI): hand-computed events, window boundaries, near-level filter, causality.

Also holds the synthetic event generators and the causality harness shared with the tape
and liquidity tests, and an opt-in throughput measurement (SPYMASTER_BENCH=1).
"""

from __future__ import annotations

import os
import time

import numpy as np
import polars as pl
import pytest

from spymaster_assets.lib.dbn_decode import FRAME_SCHEMAS
from spymaster_assets.lib.features import order_flow
from spymaster_assets.lib.features.order_flow import near_level_ofi, ofi_features, ofi_per_update

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # an arbitrary whole-second epoch
TICK = 0.25


# ---------------------------------------------------------------------------------------------
# synthetic streams and the causality harness (shared with the tape / liquidity tests)


def book_frame(ts_s, bids, asks) -> pl.DataFrame:
    """A small MBP-10 frame: bids/asks are lists (per record) of [(px, sz), ...] best first."""
    cols: dict[str, list] = {"ts_event": [T0 + int(round(s * NS)) for s in ts_s]}
    for side, book in (("bid", bids), ("ask", asks)):
        for k in range(10):
            cols[f"{side}_px_{k:02d}"] = [lv[k][0] if k < len(lv) else None for lv in book]
            cols[f"{side}_sz_{k:02d}"] = [lv[k][1] if k < len(lv) else 0 for lv in book]
    schema = {c: FRAME_SCHEMAS["mbp-10"][c] for c in cols}
    return pl.DataFrame(cols, schema=schema).with_columns(pl.col(r"^(bid|ask)_px_\d\d$").fill_null(np.nan))


def synthetic_book(n: int, seed: int = 0, duration_s: float = 3600.0, depth: int = 10, full: bool = False) -> pl.DataFrame:
    """A random-walk MBP-10 stream: n records over duration_s, ms stamps (ties happen)."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, int(duration_s * 1000), n)) * 1_000_000
    steps = rng.choice([-1, 0, 1], size=n, p=[0.03, 0.94, 0.03])
    bb = 4500.0 + TICK * np.cumsum(steps)
    ba = bb + TICK * (1 + (rng.random(n) < 0.1))
    k = np.arange(depth)
    cols: dict[str, np.ndarray] = {"ts_event": ts}
    for side, top, sgn in (("bid", bb, -1), ("ask", ba, 1)):
        px = top[:, None] + sgn * TICK * k[None, :]
        sz = rng.integers(1, 60, size=(n, depth)).astype(np.uint32)
        ct = rng.integers(1, 10, size=(n, depth)).astype(np.uint32)
        empty = rng.random((n, depth)) < 0.01  # sparse empty levels (NaN price, zero size)
        empty[:, 0] = rng.random(n) < 0.002  # occasionally an empty top of book
        px[empty] = np.nan
        sz[empty] = 0
        for j in range(depth):
            cols[f"{side}_px_{j:02d}"] = px[:, j]
            cols[f"{side}_sz_{j:02d}"] = sz[:, j]
            if full:
                cols[f"{side}_ct_{j:02d}"] = ct[:, j]
    if full:  # every bronze column, for a realistic-width frame in the throughput run
        cols |= {
            "ts_recv": ts + 1000,
            "instrument_id": np.full(n, 42, np.uint32),
            "action": None,
            "side": None,
            "aggressor": np.zeros(n, np.int8),
            "price": bb,
            "size": np.ones(n, np.uint32),
            "flags": np.zeros(n, np.uint8),
            "sequence": np.arange(n, dtype=np.uint32),
            "depth": np.zeros(n, np.uint8),
        }
        cols["action"] = pl.Series(rng.choice(["A", "C", "M", "T"], n))
        cols["side"] = pl.Series(rng.choice(["A", "B", "N"], n))
    return pl.DataFrame(cols)


def synthetic_trades(n: int, seed: int = 0, duration_s: float = 3600.0, burst_frac: float = 0.05) -> pl.DataFrame:
    """Random trades with ms stamps (ties), random-walk prices and mixed aggressors.

    A fraction of prints are expanded into bursts of 2–5 same-aggressor prints a few ms
    apart walking the price in the aggressor's direction (so sweeps occur).
    """
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, int(duration_s * 1000), n)) * 1_000_000
    px = 4500.0 + TICK * np.cumsum(rng.choice([-1, 0, 1], size=n, p=[0.2, 0.6, 0.2]))
    agg = rng.choice([-1, 0, 1], size=n, p=[0.45, 0.1, 0.45]).astype(np.int64)
    reps = np.where(rng.random(n) < burst_frac, rng.integers(2, 6, n), 1)
    src = np.repeat(np.arange(n), reps)
    j = np.arange(len(src)) - np.repeat(np.cumsum(reps) - reps, reps)  # position inside the burst
    ts = ts[src] + j * rng.integers(0, 40, len(src)) * 1_000_000
    agg = agg[src]
    px = px[src] + TICK * j * np.where(agg == 0, 1, agg)
    order = np.argsort(ts, kind="stable")
    ts, px, agg = ts[order], px[order], agg[order].astype(np.int8)
    m = len(ts)
    side = np.where(agg > 0, "B", np.where(agg < 0, "A", "N"))
    return pl.DataFrame(
        {
            "ts_event": ts,
            "ts_recv": ts + 1000,
            "instrument_id": np.full(m, 42, np.uint32),
            "action": ["T"] * m,
            "side": side,
            "aggressor": agg,
            "price": px,
            "size": rng.integers(1, 30, m).astype(np.uint32),
            "flags": np.zeros(m, np.uint8),
            "sequence": np.arange(m, dtype=np.uint32),
        }
    )


def grid(duration_s: float = 3600.0, step_s: int = 30) -> np.ndarray:
    return T0 + np.arange(step_s, int(duration_s) + step_s, step_s, dtype=np.int64) * NS


def synthetic_queries(times: np.ndarray, seed: int = 0, book: pl.DataFrame | None = None) -> pl.DataFrame:
    """Three static levels (both directions over time), one drifting 'dynamic' level and,
    when a book is given, two levels 1 pt above (UP) / below (DOWN) the mid as of t, so
    that some level is always inside the book."""
    rng = np.random.default_rng(seed)
    near = None
    if book is not None:
        mid = (book["bid_px_00"].fill_nan(None).fill_null(strategy="forward") + book["ask_px_00"]).to_numpy() / 2
        idx = np.searchsorted(book["ts_event"].to_numpy(), times, side="right") - 1
        near = np.where(idx >= 0, TICK * np.round(mid[np.maximum(idx, 0)] / TICK), np.nan)
    rows = []
    for i, t in enumerate(times):
        for kind, px in (("PM_HIGH", 4502.0), ("PM_LOW", 4497.5), ("OR_HIGH", 4500.25)):
            rows.append((int(t), kind, px, int(rng.choice([-1, 1]))))
        rows.append((int(t), "EMA_20", 4499.0 + TICK * (i // 4), int(rng.choice([-1, 1]))))
        if near is not None and not np.isnan(near[i]):
            rows.append((int(t), "NEAR_ABOVE", float(near[i]) + 1.0, 1))
            rows.append((int(t), "NEAR_BELOW", float(near[i]) - 1.0, -1))
    return pl.DataFrame(
        rows,
        schema={"t_ns": pl.Int64, "level_kind": pl.Utf8, "level_price": pl.Float64, "dir_sign": pl.Int8},
        orient="row",
    )


def corrupt_after(frame: pl.DataFrame, cut_ns: int, seed: int, n_insert: int = 20) -> pl.DataFrame:
    """Replace every event stamped after cut_ns by garbage, and insert `n_insert` extra
    garbage events in the first ms after cut_ns (stamps stay sorted and > cut_ns)."""
    ts = frame["ts_event"].to_numpy()
    head_n = int(np.searchsorted(ts, cut_ns, side="right"))
    assert (ts[head_n:] > cut_ns).all()
    rng = np.random.default_rng(seed)
    extra = frame.slice(0, 1).select(pl.all().gather([0] * n_insert))
    tail = pl.concat([extra, frame.slice(head_n)])
    m = tail.height
    stamps = np.concatenate(
        [cut_ns + 1 + rng.integers(0, 1_000_000, n_insert), rng.integers(cut_ns + 1, cut_ns + 3600 * NS, m - n_insert)]
    )
    new = {"ts_event": np.sort(stamps)}
    for name, dtype in frame.schema.items():
        if name == "ts_event":
            continue
        if dtype == pl.Float64:  # plausible prices, so garbage lands in the level bands
            lo, hi = frame[name].fill_nan(None).min(), frame[name].fill_nan(None).max()
            lo, hi = (4490.0, 4510.0) if lo is None else (lo - 2.0, hi + 2.0)
            junk = TICK * np.round(rng.uniform(lo, hi, m) / TICK)
            junk[rng.random(m) < 0.2] = np.nan
        elif dtype == pl.Int8:
            junk = rng.integers(-1, 2, m)
        elif dtype.is_integer():
            junk = rng.integers(0, 250, m)
        else:
            continue
        new[name] = junk
    tail = tail.with_columns([pl.Series(k, v).cast(frame.schema[k]) for k, v in new.items()])
    return pl.concat([frame.slice(0, head_n), tail])


def assert_rows_equal_upto(full: pl.DataFrame, other: pl.DataFrame, cut_ns: int) -> None:
    a = full.filter(pl.col("t_ns") <= cut_ns)
    b = other.filter(pl.col("t_ns") <= cut_ns)
    assert a.height > 0
    assert a.equals(b), f"rows at t ≤ {cut_ns} changed when events after it were replaced"


def drop_before(frame: pl.DataFrame, start_ns: int) -> pl.DataFrame:
    return frame.filter(pl.col("ts_event") >= start_ns)


CUTS = [T0 + s * NS for s in (600, 1230, 1800, 2400, 3000)]


# ---------------------------------------------------------------------------------------------
# OFI events by hand


def _hand_book() -> pl.DataFrame:
    return book_frame(
        [1, 2, 3, 4, 5, 6],
        bids=[[(100.0, 10)], [(100.0, 12)], [(100.25, 5)], [(100.0, 9)], [(100.0, 9)], []],
        asks=[[(100.25, 8)], [(100.25, 8)], [(100.5, 7)], [(100.25, 4)], [(100.25, 1)], [(100.25, 1)]],
    )


def test_ofi_per_update_by_hand():
    ev = ofi_per_update(_hand_book())
    # n0: first record of the buffer → 0
    # n1: bid same px 10→12: +12 −10 = +2; ask unchanged: −8 +8 = 0             → +2
    # n2: bid up to 100.25x5: +5; ask up 100.25→100.5: only ≥ holds: +8          → +13
    # n3: bid down to 100.00x9: −5 (old queue); ask down to 100.25x4: −4         → −9
    # n4: bid unchanged: 0; ask same px 4→1: −1 +4 = +3                          → +3
    # n5: best bid vanishes (empty side = −∞, size 0): −9; ask unchanged: 0      → −9
    assert ev["ofi"].to_list() == [0, 2, 13, -9, 3, -9]
    assert ev.schema == {"ts_event": pl.Int64, "ofi": pl.Int64}
    assert ev["ts_event"].to_list() == [T0 + s * NS for s in range(1, 7)]


def test_ofi_first_update_contributes_zero_in_any_buffer():
    book = _hand_book()
    assert ofi_per_update(book.slice(2))["ofi"].to_list() == [0, -9, 3, -9]


def test_ofi_empty_ask_reappearing():
    book = book_frame([1, 2, 3], bids=[[(100.0, 5)]] * 3, asks=[[(100.25, 6)], [], [(100.5, 2)]])
    # ask vanishes: +∞ ≥ 100.25 → +6 (old ask queue gone = buying pressure);
    # ask reappears at 100.5: 100.5 ≤ +∞ → −2
    assert ofi_per_update(book)["ofi"].to_list() == [0, 6, -2]


def test_ofi_stamps_are_running_max():
    book = _hand_book().with_columns(pl.Series("ts_event", [T0 + s * NS for s in (1, 3, 2, 4, 5, 6)]))
    assert ofi_per_update(book)["ts_event"].to_list() == [T0 + s * NS for s in (1, 3, 3, 4, 5, 6)]


def test_window_boundaries_exclusive_start_inclusive_end():
    ev = pl.DataFrame({"ts_event": [T0 + s * NS for s in (0, 10, 20, 30, 40)], "ofi": [0, 1, 10, 100, 1000]})
    out = ofi_features(ev, [T0 + 40 * NS, T0 + 41 * NS], windows_s=(30,), accel_window_s=10)
    # at t = 40: (10, 40] → excludes ts 10 exactly, includes ts 40 exactly → 10+100+1000
    # at t = 41: (11, 41] → same events
    assert out["ofi_30s"].to_list() == [1110.0, 1110.0]
    # accel at 40: (30,40] − (20,30] = 1000 − 100; at 41: (31,41] − (21,31] = 1000 − 100
    assert out["ofi_accel_10s"].to_list() == [900.0, 900.0]


def test_ofi_null_until_the_buffer_covers_the_window():
    ev = pl.DataFrame({"ts_event": [T0 + s * NS for s in (5, 6, 7)], "ofi": [0, 3, 4]})
    out = ofi_features(ev, [T0 + s * NS for s in (4, 34, 35, 36, 65)], windows_s=(30,), accel_window_s=30)
    # window (t − 30, t] needs a record at or before t − 30 (first record at 5 s);
    # at 36 s the window (6, 36] has lost the 6 s event
    assert out["ofi_30s"].to_list() == [None, None, 7.0, 4.0, 0.0]
    assert out["ofi_accel_30s"].to_list() == [None, None, None, None, -7.0]
    empty = ofi_features(ev.clear(), [T0], windows_s=(30,))
    assert empty["ofi_30s"].to_list() == [None]


def test_default_columns_match_registry():
    ev = ofi_per_update(_hand_book())
    cols = ofi_features(ev, [T0]).columns[1:]
    q = pl.DataFrame({"t_ns": [T0], "level_kind": ["X"], "level_price": [100.0], "dir_sign": [1]})
    cols += near_level_ofi(_hand_book(), ev, q).columns[4:]
    assert cols == [f.name for f in order_flow.FEATURES]
    assert all(f.family == "order_flow" and f.tier == "T2" for f in order_flow.FEATURES)


# ---------------------------------------------------------------------------------------------
# near-level OFI


def test_near_level_ofi_filters_by_mid_and_signs_toward_level():
    book = _hand_book()  # mids: 100.125, 100.125, 100.375, 100.125, 100.125, none (empty bid)
    ev = ofi_per_update(book)  # e: 0, 2, 13, −9, 3, −9
    q = pl.DataFrame(
        {
            "t_ns": [T0 + 6 * NS] * 5 + [T0 + 4 * NS],
            "level_kind": list("ABCDEF"),
            "level_price": [102.0, 102.375, 98.125, 102.4, None, 100.0],
            "dir_sign": [1, 1, -1, 1, 1, -1],
        },
        schema_overrides={"dir_sign": pl.Int8},
    )
    out = near_level_ofi(book, ev, q, band_pt=2.0, window_s=5)
    # A: band [100, 104] catches all mids; window (1 s, 6 s] → 2+13−9+3 (+ no mid at 6 s) = 9
    # B: band [100.375, 104.375] catches only the 100.375 mid (e = 13), edge inclusive
    # C: DOWN level at 98.125, band [96.125, 100.125] → 2 − 9 + 3 = −4, toward = +4
    # D: band [100.4, ...] catches nothing → a genuine 0
    # E: null level → null;  F: t = 4 s needs the book at −1 s → null
    assert out["ofi_near_level_5s"].to_list() == [9.0, 13.0, 4.0, 0.0, None, None]
    assert out.columns[:4] == ["t_ns", "level_kind", "level_price", "dir_sign"]


def test_near_level_ofi_equals_brute_force_on_random_stream():
    book = synthetic_book(3000, seed=3)
    ev = ofi_per_update(book)
    q = synthetic_queries(grid()[::7], seed=3, book=book)
    out = near_level_ofi(book, ev, q, band_pt=1.0, window_s=60)["ofi_near_level_60s"].to_numpy()
    ts = ev["ts_event"].to_numpy()
    e = ev["ofi"].to_numpy()
    mid = (book["bid_px_00"].to_numpy() + book["ask_px_00"].to_numpy()) / 2
    for i, (t, _, lvl, s) in enumerate(q.iter_rows()):
        m = (ts > t - 60 * NS) & (ts <= t) & (mid >= lvl - 1.0) & (mid <= lvl + 1.0)
        expect = s * e[m].sum() if ts[0] <= t - 60 * NS else np.nan
        np.testing.assert_equal(out[i], expect)


def test_ofi_features_equal_brute_force():
    book = synthetic_book(3000, seed=4)
    ev = ofi_per_update(book)
    t = grid()
    out = ofi_features(ev, t)
    ts, e = ev["ts_event"].to_numpy(), ev["ofi"].to_numpy()
    for w in (30, 60, 120, 300):
        expect = [e[(ts > x - w * NS) & (ts <= x)].sum() if ts[0] <= x - w * NS else None for x in t]
        assert out[f"ofi_{w}s"].to_list() == [None if v is None else float(v) for v in expect]


# ---------------------------------------------------------------------------------------------
# causality and trailing buffer


def _all_order_flow(book: pl.DataFrame, queries: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    ev = ofi_per_update(book)
    times = np.unique(queries["t_ns"].to_numpy())
    return ofi_features(ev, times), near_level_ofi(book, ev, queries)


@pytest.mark.parametrize("seed", [0, 1])
def test_causality_future_garbage_never_changes_past_rows(seed):
    book = synthetic_book(4000, seed=seed)
    queries = synthetic_queries(grid(), seed=seed, book=book)
    market, level = _all_order_flow(book, queries)
    assert market["ofi_300s"].drop_nulls().len() > 100
    for j, cut in enumerate(CUTS):
        m2, l2 = _all_order_flow(corrupt_after(book, cut, seed=100 + j), queries)
        assert_rows_equal_upto(market, m2, cut)
        assert_rows_equal_upto(level, l2, cut)


def test_trailing_buffer_reproduces_rows():
    book = synthetic_book(4000, seed=5)
    queries = synthetic_queries(grid(), seed=5, book=book)
    market, level = _all_order_flow(book, queries)
    max_window_s, margin_s = 300, 30
    for t in CUTS:
        buf = drop_before(book, t - (max_window_s + margin_s) * NS)
        qt = queries.filter(pl.col("t_ns") == t)
        m2, l2 = _all_order_flow(buf, qt)
        assert market.filter(pl.col("t_ns") == t).equals(m2)
        assert level.filter(pl.col("t_ns") == t).equals(l2)


# ---------------------------------------------------------------------------------------------
# throughput (opt-in: SPYMASTER_BENCH=1 uv run pytest -s -k throughput)


@pytest.mark.skipif(os.environ.get("SPYMASTER_BENCH") != "1", reason="throughput run is opt-in")
def test_throughput_5m_book_updates():
    from spymaster_assets.lib.features.liquidity import liquidity_features
    from spymaster_assets.lib.features.tape import tape_features, tape_level_features

    n = 5_000_000
    dur = 6 * 3600.0
    t_gen = time.perf_counter()
    book = synthetic_book(n, seed=11, duration_s=dur, full=True)
    trades = synthetic_trades(1_000_000, seed=11, duration_s=dur)
    t_gen = time.perf_counter() - t_gen
    times = T0 + np.arange(2 * 3600 + 30, 5 * 3600 + 30, 30, dtype=np.int64) * NS  # 361 grid times
    queries = synthetic_queries(times, seed=11, book=book)
    report = [f"generated {n:,} book updates ({book.estimated_size() / 1e9:.2f} GB) + 1M trades in {t_gen:.1f} s"]

    def timed(label, fn):
        t = time.perf_counter()
        out = fn()
        report.append(f"{label}: {time.perf_counter() - t:.2f} s")
        return out

    ev = timed("ofi_per_update (5M updates)", lambda: ofi_per_update(book))
    timed("ofi_features (361 grid times)", lambda: ofi_features(ev, times))
    timed(f"near_level_ofi ({queries.height} queries)", lambda: near_level_ofi(book, ev, queries))
    timed(f"liquidity_features ({queries.height} queries)", lambda: liquidity_features(book, queries))
    timed("tape_features (1M trades, 361 grid times)", lambda: tape_features(trades, times))
    timed(f"tape_level_features (1M trades, {queries.height} queries)", lambda: tape_level_features(trades, queries))
    print("\n" + "\n".join(report))


def test_empty_inputs():
    book = pl.DataFrame(schema=FRAME_SCHEMAS["mbp-10"])
    ev = ofi_per_update(book)
    assert ev.height == 0
    assert ofi_features(ev, [T0]).row(0)[1:] == (None,) * 5
    q = pl.DataFrame({"t_ns": [T0], "level_kind": ["X"], "level_price": [1.0], "dir_sign": [1]})
    assert near_level_ofi(book, ev, q)["ofi_near_level_60s"].to_list() == [None]
    assert near_level_ofi(book, ev, q.clear()).height == 0
    assert ofi_features(ev, np.zeros(0, np.int64)).height == 0
