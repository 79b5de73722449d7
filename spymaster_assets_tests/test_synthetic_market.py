"""The embedded synthetic ES market: genuine DBN files, a consistent book, the roll, options,
and a planted break model whose ground truth the simulator reports (tiny scale, < 60 s)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import databento as db
import databento_dbn as dbn
import numpy as np
import polars as pl
import pytest
import zstandard as zstd

from spymaster_assets.lib.calendar import et_to_ns, session_window, trading_sessions
from spymaster_assets.sources.base import FUTURES, OPTIONS, SourceError
from spymaster_assets.sources.synthetic import SyntheticSource
from spymaster_assets.synthetic import SyntheticConfig, generate_session, oracle_auc, read_ground_truth, session_paths
from spymaster_assets.synthetic.contracts import session_contracts, third_friday
from spymaster_assets.synthetic.dbn_writer import DbnWriter, empty_records, metadata_bytes
from spymaster_assets.lib.metrics import roc_auc
from spymaster_assets.synthetic.ground_truth import PRECURSORS, ground_truth_frame
from spymaster_assets.synthetic.options import build_chain, draw_option_flow
from spymaster_assets.synthetic.path import simulate_session
from spymaster_assets.synthetic.regime import session_regime

TINY = SyntheticConfig(seed=7, scale="tiny")
# Ten sessions around the December 2024 roll (roll date Thu 2024-12-12, ESZ4 expires 2024-12-20).
SESSIONS = trading_sessions(dt.date(2024, 12, 5), dt.date(2024, 12, 18))
DAY = dt.date(2024, 12, 10)
OUTRIGHT = re.compile(r"^ES[HMUZ]\d$")


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_market")
    for session in SESSIONS:
        generate_session(session, root, TINY)
    return root


def records(path: Path) -> np.ndarray:
    return db.DBNStore.from_file(path).to_ndarray()


def symbols_by_id(path: Path) -> dict[int, str]:
    return {int(iv[0]["symbol"]): raw for raw, iv in db.DBNStore.from_file(path).mappings.items()}


def sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# --- files and formats -------------------------------------------------------------------------


def test_same_seed_and_config_give_byte_identical_sessions(market, tmp_path):
    generate_session(DAY, tmp_path, TINY)
    again = sha256_tree(tmp_path)
    original = {k: v for k, v in sha256_tree(market).items() if DAY.isoformat() in k}
    assert again == original and len(again) == 10  # 8 DBN files, manifest, ground truth


def test_generation_is_idempotent_and_a_new_seed_changes_the_market(market, tmp_path):
    manifest_path = market / "GLBX.MDP3" / DAY.isoformat() / "manifest.json"
    before = manifest_path.stat().st_mtime_ns
    assert generate_session(DAY, market, TINY)["config"] == TINY.to_dict()
    assert manifest_path.stat().st_mtime_ns == before  # skipped: same config
    other = generate_session(DAY, tmp_path, SyntheticConfig(seed=8, scale="tiny"))
    mine = generate_session(DAY, market, TINY)
    assert {f["sha256"] for f in other["files"]}.isdisjoint({f["sha256"] for f in mine["files"] if f["schema"] != "definition"})


def test_every_file_decodes_with_its_schema_and_metadata(market):
    window = session_window(DAY)
    manifest = generate_session(DAY, market, TINY)
    for (venue, schema), path in session_paths(market, DAY).items():
        store = db.DBNStore.from_file(path)
        meta = store.metadata
        assert (store.schema, meta.dataset, meta.version) == (schema, "GLBX.MDP3", 3)
        assert (meta.start, meta.end) == (window.globex_open_ns, window.close_ns)
        assert meta.stype_in == dbn.SType.PARENT and meta.stype_out == dbn.SType.INSTRUMENT_ID
        assert meta.symbols == (["ES.FUT"] if venue == FUTURES else ["ES.OPT"])
        rec = store.to_ndarray()
        assert len(rec) > 0
        assert set(np.unique(rec["instrument_id"]).tolist()) <= set(symbols_by_id(path))
        ts_event = rec["ts_event"].astype(np.int64)
        assert ts_event.max() < window.close_ns
        if schema != "definition":  # definitions are stamped when the exchange published them
            assert ts_event.min() >= window.globex_open_ns
        if "ts_recv" in rec.dtype.names:
            ts_recv = rec["ts_recv"].astype(np.int64)
            assert np.all(np.diff(ts_recv) >= 0), (venue, schema)
            assert np.all(ts_event <= ts_recv) and ts_recv.min() >= window.globex_open_ns and ts_recv.max() < window.close_ns
        for iid in np.unique(rec["instrument_id"]):
            assert np.all(np.diff(ts_event[rec["instrument_id"] == iid]) >= 0)
        # the raw decoder agrees on the record count
        decoder = dbn.DBNDecoder()
        decoder.write(zstd.ZstdDecompressor().stream_reader(open(path, "rb")).read())
        assert len(decoder.decode()) == len(rec) + 1  # + the metadata
        entry = next(f for f in manifest["files"] if f["venue"] == venue and f["schema"] == schema)
        assert entry["records"] == len(rec) and entry["bytes"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("schema", ["trades", "mbp-10", "mbp-1", "ohlcv-1m"])
def test_record_layouts_round_trip(tmp_path, schema):
    rng = np.random.default_rng(3)
    rec = empty_records(schema, 257)
    for name in rec.dtype.names:
        if name in ("length", "rtype", "publisher_id") or name.startswith("_"):
            continue
        kind = rec.dtype[name]
        if kind.kind == "S":
            rec[name] = rng.choice([b"A", b"B", b"C"], len(rec))
        elif name.startswith("ts_"):
            rec[name] = np.sort(rng.integers(1_700_000_000 * 10**9, 1_700_000_100 * 10**9, len(rec)))
        else:
            rec[name] = rng.integers(0, min(np.iinfo(kind).max, 10**12), len(rec)).astype(kind)
    if "ts_recv" in rec.dtype.names:
        rec["ts_recv"] = rec["ts_event"] + 1000
    path = tmp_path / f"x.{schema}.dbn.zst"
    with DbnWriter(path, schema, metadata_bytes(schema, 1_700_000_000 * 10**9, 1_700_000_200 * 10**9, "ES.FUT", {"ESZ4": 42})) as w:
        w.write(rec)
    back = records(path)
    assert back.dtype.names == rec.dtype.names
    for name in rec.dtype.names:
        assert np.array_equal(back[name], rec[name]), name
    if schema == "mbp-10":  # the library's own message objects see the same levels
        decoder = dbn.DBNDecoder()
        decoder.write(zstd.ZstdDecompressor().stream_reader(open(path, "rb")).read())
        msg = decoder.decode()[5]
        assert msg.levels[3].bid_sz == rec["bid_sz_03"][4] and msg.levels[9].ask_px == rec["ask_px_09"][4]


# --- futures book and tape ----------------------------------------------------------------------


def test_book_is_never_crossed_and_trades_print_at_the_touch_with_databento_sides(market):
    paths = session_paths(market, DAY)
    book = records(paths[(FUTURES, "mbp-10")])
    assert np.all(book["bid_px_00"] < book["ask_px_00"])
    for level in range(10):
        assert np.all(book[f"bid_sz_{level:02d}"] > 0) and np.all(book[f"ask_sz_{level:02d}"] > 0)
        if level:
            assert np.all(book[f"bid_px_{level:02d}"] < book[f"bid_px_{level - 1:02d}"])
            assert np.all(book[f"ask_px_{level:02d}"] > book[f"ask_px_{level - 1:02d}"])
    assert set(np.unique(book["action"]).tolist()) == {b"A", b"C", b"M", b"T"}
    prints = book[book["action"] == b"T"]
    buyer = prints["side"] == b"B"  # Databento: 'B' = buyer-initiated aggressor, lifts the ask
    assert set(np.unique(prints["side"]).tolist()) == {b"A", b"B"}
    assert np.array_equal(prints["price"][buyer], prints["ask_px_00"][buyer])
    assert np.array_equal(prints["price"][~buyer], prints["bid_px_00"][~buyer])
    trades = records(paths[(FUTURES, "trades")])
    for name in ("ts_event", "ts_recv", "instrument_id", "price", "size", "side", "sequence"):
        assert np.array_equal(trades[name], prints[name]), name
    ticks = book["price"] % 250_000_000
    assert np.all(ticks[np.isin(book["instrument_id"], _outright_ids(paths))] == 0)  # outrights on the 0.25 grid


def _outright_ids(paths) -> list[int]:
    return [i for i, s in symbols_by_id(paths[(FUTURES, "mbp-10")]).items() if OUTRIGHT.match(s)]


def test_each_book_record_changes_only_its_own_level(market):
    """A record's snapshot is the previous one plus its event (a 'T' shows the book before the fill)."""
    book = records(session_paths(market, DAY)[(FUTURES, "mbp-10")])
    for iid in np.unique(book["instrument_id"]):
        rows = book[book["instrument_id"] == iid][:4000]
        levels = [{int(r[f"{s}_px_{k:02d}"]): int(r[f"{s}_sz_{k:02d}"]) for k in range(10)} for r in rows for s in ("bid", "ask")]
        for i in range(1, len(rows)):
            event_side = 0 if rows["side"][i] == b"B" else 1
            for s in (0, 1):
                before, after = levels[2 * (i - 1) + s], levels[2 * i + s]
                changed = {p for p in set(before) & set(after) if before[p] != after[p]}
                if rows["action"][i] == b"T":
                    assert not changed
                else:
                    assert changed <= ({int(rows["price"][i])} if s == event_side else set())


def test_ohlcv_bars_are_the_minutes_of_the_trades(market):
    paths = session_paths(market, DAY)
    trades = pl.from_numpy(records(paths[(FUTURES, "trades")])[["ts_event", "instrument_id", "price", "size"]])
    expected = (
        trades.with_columns((pl.col("ts_event").cast(pl.Int64) // 60_000_000_000 * 60_000_000_000).alias("minute"))
        .group_by("instrument_id", "minute", maintain_order=True)
        .agg(pl.col("price").first().alias("open"), pl.col("price").max().alias("high"), pl.col("price").min().alias("low"),
             pl.col("price").last().alias("close"), pl.col("size").sum().cast(pl.UInt64).alias("volume"))
        .sort("minute", "instrument_id")
    )
    bars = pl.from_numpy(records(paths[(FUTURES, "ohlcv-1m")])[["ts_event", "instrument_id", "open", "high", "low", "close", "volume"]])
    bars = bars.with_columns(pl.col("ts_event").cast(pl.Int64).alias("minute")).drop("ts_event").select(expected.columns)
    assert bars.equals(expected)
    assert bars.filter(pl.col("instrument_id") == _front(market, DAY)[0]).height >= 1300  # a bar every minute of the window


def _front(root: Path, day: dt.date) -> tuple[int, str, float]:
    """(instrument id, symbol, dominance) of the outright with the most RTH volume."""
    window = session_window(day)
    paths = session_paths(root, day)
    trades = records(paths[(FUTURES, "trades")])
    rth = (trades["ts_event"] >= window.rth_open_ns) & (trades["ts_event"] < window.close_ns)
    names = symbols_by_id(paths[(FUTURES, "trades")])
    volume = {names[i]: int(trades["size"][rth & (trades["instrument_id"] == i)].sum()) for i in np.unique(trades["instrument_id"])}
    outrights = {s: v for s, v in volume.items() if OUTRIGHT.match(s)}
    front = max(outrights, key=outrights.get)
    return next(i for i, s in names.items() if s == front), front, outrights[front] / sum(outrights.values())


def test_front_month_rolls_with_two_low_dominance_sessions(market):
    fronts = {d: _front(market, d) for d in SESSIONS}
    assert fronts[dt.date(2024, 12, 10)][1] == "ESZ4" and fronts[dt.date(2024, 12, 10)][2] > 0.6
    assert fronts[dt.date(2024, 12, 11)][1] == "ESZ4" and fronts[dt.date(2024, 12, 11)][2] < 0.6
    assert fronts[dt.date(2024, 12, 12)][1] == "ESH5" and fronts[dt.date(2024, 12, 12)][2] < 0.6
    assert fronts[dt.date(2024, 12, 13)][1] == "ESH5" and fronts[dt.date(2024, 12, 13)][2] > 0.6
    assert sum(f[2] < 0.6 for f in fronts.values()) == 2
    # the calendar spread trades too (excluded by symbol downstream) and prices near the basis
    trades = records(session_paths(market, dt.date(2024, 12, 12))[(FUTURES, "trades")])
    names = symbols_by_id(session_paths(market, dt.date(2024, 12, 12))[(FUTURES, "trades")])
    spread_id = next(i for i, s in names.items() if s == "ESZ4-ESH5")
    spread_px = trades["price"][trades["instrument_id"] == spread_id] / 1e9
    assert len(spread_px) > 50 and 20 < np.median(spread_px) < 120


def test_futures_definitions(market):
    defs = records(session_paths(market, DAY)[(FUTURES, "definition")])
    by_symbol = {r["raw_symbol"].decode(): r for r in defs}
    assert set(by_symbol) == {"ESZ4", "ESH5", "ESZ4-ESH5"}
    for symbol, expiry in (("ESZ4", third_friday(2024, 12)), ("ESH5", third_friday(2025, 3))):
        r = by_symbol[symbol]
        assert r["instrument_class"] == b"F" and r["min_price_increment"] == 250_000_000 and r["asset"] == b"ES"
        assert r["expiration"] == et_to_ns(expiry, dt.time(9, 30))
    legs = defs[defs["raw_symbol"] == b"ESZ4-ESH5"]
    assert len(legs) == 2 and set(legs["instrument_class"].tolist()) == {b"S"}
    assert sorted(legs["leg_raw_symbol"].tolist()) == [b"ESH5", b"ESZ4"]


def test_every_session_is_a_pure_function_of_its_date_and_sessions_chain(market):
    """Each session opens where the previous one closed (same contract, ± a day of carry)."""
    closes = {}
    for d in SESSIONS:
        paths = session_paths(market, d)
        bars = records(paths[(FUTURES, "ohlcv-1m")])
        names = symbols_by_id(paths[(FUTURES, "ohlcv-1m")])
        esz4 = bars[bars["instrument_id"] == next(i for i, s in names.items() if s == "ESZ4")]
        closes[d] = (esz4["open"][0] / 1e9, esz4["close"][-1] / 1e9)
    for prev, cur in zip(SESSIONS, SESSIONS[1:]):
        assert abs(closes[cur][0] - closes[prev][1]) < 6.0, (prev, cur)


@pytest.mark.parametrize("day", [DAY, dt.date(2024, 12, 4)])
def test_ground_truth_does_not_depend_on_the_scale(day):
    """Scales differ in book and tape density only: the path and every planted approach agree."""
    frames, bids = [], []
    for scale in ("tiny", "small", "realistic"):
        config = SyntheticConfig(seed=7, scale=scale)
        regime = session_regime(config, day)
        chain = build_chain(regime)
        sim = simulate_session(config, regime, chain, draw_option_flow(config, regime, chain))
        frames.append(ground_truth_frame(sim.approaches))
        bids.append(sim.lead.bid)
    assert frames[0].height > 10
    for other, bid in zip(frames[1:], bids[1:]):
        assert other.equals(frames[0]) and np.array_equal(bid, bids[0])


# --- options ------------------------------------------------------------------------------------


def test_option_definitions_carry_strike_right_expiry_and_underlying(market):
    window = session_window(DAY)
    defs = records(session_paths(market, DAY)[(OPTIONS, "definition")])
    assert set(defs["instrument_class"].tolist()) == {b"C", b"P"}
    strikes = defs["strike_price"] / 1e9
    assert np.all(strikes % 5 == 0) and len(np.unique(strikes)) >= 5
    assert np.all(defs["expiration"] == window.close_ns)
    assert set(defs["underlying"].tolist()) == {session_contracts(DAY).lead.symbol.encode()}
    calls = defs[defs["instrument_class"] == b"C"]
    assert all(s.decode().split(" ")[1] == f"C{int(k / 1e9)}" for s, k in zip(calls["raw_symbol"], calls["strike_price"]))


def test_open_interest_is_published_before_the_open_with_other_statistics(market):
    window = session_window(DAY)
    stats = records(session_paths(market, DAY)[(OPTIONS, "statistics")])
    defs = records(session_paths(market, DAY)[(OPTIONS, "definition")])
    oi = stats[stats["stat_type"] == dbn.StatType.OPEN_INTEREST.value]
    assert sorted(oi["instrument_id"].tolist()) == sorted(defs["instrument_id"].tolist())  # one per option
    assert np.all(oi["ts_event"] < window.rth_open_ns) and np.all(oi["quantity"] > 0)
    assert {3, 6} <= set(stats["stat_type"].tolist())  # settlement, cleared volume: to be ignored


def test_option_quotes_are_never_crossed_and_trades_hit_the_quote(market):
    book = records(session_paths(market, DAY)[(OPTIONS, "mbp-1")])
    assert np.all(book["bid_px_00"] < book["ask_px_00"]) and np.all(book["bid_px_00"] > 0)
    prints = book[book["action"] == b"T"]
    buyer = prints["side"] == b"B"
    assert len(prints) > 50 and 0.1 < buyer.mean() < 0.9
    assert np.array_equal(prints["price"][buyer], prints["ask_px_00"][buyer])
    assert np.array_equal(prints["price"][~buyer], prints["bid_px_00"][~buyer])


# --- the planted model ----------------------------------------------------------------------------


def test_ground_truth_has_planned_approaches_whose_outcomes_the_path_realizes(market):
    gt = read_ground_truth(market, SESSIONS)
    planned = gt.filter("planned")
    per_session = planned.group_by("session_date").len()["len"]
    assert per_session.min() >= 8 and planned["level_kind"].n_unique() == 6
    assert planned["p_break"].is_between(0, 1, closed="none").all()
    assert set(planned["outcome"].unique()) == {"BREAK", "REJECT", "CHOP"}
    for p in PRECURSORS:
        assert planned[f"z_{p.name}"].is_not_null().all()
    # the pipeline's first-crossing label (1 ATR, 4 min) agrees with the drawn outcome
    assert (planned["outcome"] == planned["label_4m"]).mean() > 0.9
    window = session_window(SESSIONS[0])
    first = gt.filter(pl.col("session_date") == SESSIONS[0])["touch_ts_event"]
    assert first.min() >= window.rth_open_ns and first.max() <= window.analysis_end_ns


def test_planted_relations_hold_on_pooled_sessions(market):
    planned = read_ground_truth(market, SESSIONS).filter("planned")

    def mean_p(condition) -> float:
        return planned.filter(condition)["p_break"].mean()

    median = planned.select(pl.col(c).median() for c in ("wall_lots", "flow_imbalance", "speed_atr")).row(0, named=True)
    assert mean_p(pl.col("wall_lots") > median["wall_lots"]) < mean_p(pl.col("wall_lots") <= median["wall_lots"])
    assert mean_p(pl.col("flow_imbalance") > median["flow_imbalance"]) > mean_p(pl.col("flow_imbalance") <= median["flow_imbalance"])
    assert mean_p(pl.col("speed_atr") > median["speed_atr"]) > mean_p(pl.col("speed_atr") <= median["speed_atr"])
    assert mean_p(pl.col("attempt") >= 3) > mean_p(pl.col("attempt") == 1)
    assert mean_p(pl.col("gamma_sign") < 0) > mean_p(pl.col("gamma_sign") > 0)  # dealers short gamma → breaks
    decided = planned.filter(pl.col("outcome") != "CHOP")
    walls = decided["wall_lots"].to_numpy()
    broke = (decided["outcome"] == "BREAK").to_numpy()
    assert broke[walls > np.median(walls)].mean() < broke[walls <= np.median(walls)].mean()


def test_oracle_auc_is_clearly_better_than_chance(market):
    gt = read_ground_truth(market, SESSIONS)
    assert oracle_auc(gt) > 0.65
    assert oracle_auc(gt, score="p_break_observable") > 0.65
    assert roc_auc(np.array([False, False, True, True]), np.array([0.1, 0.4, 0.4, 0.8])) == pytest.approx(0.875)


def test_planted_precursors_are_visible_in_the_files(market):
    """The wall is resting MBP-10 depth within ±2 pt of the level at the touch; the flow is the
    aggressor imbalance of the trades file (B = +1, A = −1) over the 2 minutes before it."""
    walls, depths, flow_truth, flow_files = [], [], [], []
    for d in SESSIONS[:5]:
        paths = session_paths(market, d)
        front_id, _, _ = _front(market, d)
        book = records(paths[(FUTURES, "mbp-10")])
        book = book[book["instrument_id"] == front_id]
        trades = records(paths[(FUTURES, "trades")])
        trades = trades[trades["instrument_id"] == front_id]
        planned = read_ground_truth(market, [d]).filter("planned")
        for r in planned.iter_rows(named=True):
            snap = book[np.searchsorted(book["ts_event"], r["touch_ts_event"], side="right") - 1]
            side = "ask" if r["direction"] == "UP" else "bid"
            px = np.array([snap[f"{side}_px_{k:02d}"] for k in range(10)]) / 1e9
            sz = np.array([snap[f"{side}_sz_{k:02d}"] for k in range(10)])
            walls.append(r["wall_lots"])
            depths.append(sz[np.abs(px - r["level_price"]) <= 2.0].sum())
            window = (trades["ts_event"] > r["touch_ts_event"] - 120 * 10**9) & (trades["ts_event"] <= r["touch_ts_event"])
            signed = np.where(trades["side"][window] == b"B", 1, -1) * trades["size"][window].astype(float)
            flow_files.append(r["dir_sign"] * signed.sum() / trades["size"][window].sum())
            flow_truth.append(r["flow_imbalance"])
    assert np.corrcoef(np.log(walls), np.log(depths))[0, 1] > 0.7
    assert np.corrcoef(flow_truth, flow_files)[0, 1] > 0.9


# --- the source ----------------------------------------------------------------------------------


def test_synthetic_source_lists_files_and_refuses_non_trading_days(market, tmp_path):
    files = SyntheticSource(market, TINY).acquire(DAY)
    assert files.source == "synthetic" and set(files.files) == set(session_paths(market, DAY))
    assert files.get(FUTURES, "mbp-10") == (session_paths(market, DAY)[(FUTURES, "mbp-10")],)
    with pytest.raises(SourceError):
        SyntheticSource(market, TINY).acquire(dt.date(2024, 12, 14))  # a Saturday
    no_options = SyntheticSource(tmp_path, SyntheticConfig(seed=7, scale="tiny", options=False)).acquire(DAY)
    assert {venue for venue, _ in no_options.files} == {FUTURES} and len(no_options.files) == 4
