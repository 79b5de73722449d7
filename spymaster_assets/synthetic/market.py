"""Generate one synthetic session in Databento's batch layout, atomically and idempotently.

```
<root>/GLBX.MDP3/<YYYY-MM-DD>/futures/glbx-mdp3-<YYYYMMDD>.{trades,mbp-10,ohlcv-1m,definition}.dbn.zst
<root>/GLBX.MDP3/<YYYY-MM-DD>/options/glbx-mdp3-<YYYYMMDD>.{trades,mbp-1,statistics,definition}.dbn.zst
<root>/GLBX.MDP3/<YYYY-MM-DD>/manifest.json
<root>/ground_truth/date=<YYYY-MM-DD>/approaches.parquet      (sidecar; the pipeline never reads it)
```
Every file covers [18:00 ET previous evening, close] of the session. Records are sorted by
ts_recv; ts_event ≤ ts_recv and non-decreasing per instrument. The session is written to a
temporary directory and renamed into place; the manifest is the completeness marker, and a
session whose manifest already records the same config and generator version is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

import databento_dbn as dbn
import numpy as np

from ..lib.calendar import NS_PER_S
from ..sources.base import FUTURES, FUTURES_SCHEMAS, OPTIONS, OPTIONS_SCHEMAS, file_sha256
from .book import DEPTH, SnapshotEngine, build_book_events, order_counts
from .config import GENERATOR_NAME, GENERATOR_VERSION, SyntheticConfig
from .contracts import ES_TICK, assign_instrument_ids
from .dbn_writer import (
    DATASET,
    FIXED_PRICE_SCALE,
    FLAGS_BOOK,
    FLAGS_TRADE,
    PUBLISHER_GLBX_MDP3,
    BOOK_LEVEL_DTYPE,
    DbnWriter,
    book_levels,
    empty_records,
    metadata_bytes,
    to_fixed,
)
from .ground_truth import ground_truth_dir, ground_truth_frame, write_ground_truth
from .options import PRICE_UNIT, UNSET, build_chain, build_option_book, draw_option_flow, option_statistics
from .path import InstrumentPath, SimulatedSession, simulate_session
from .regime import SessionRegime, session_regime

MERGE_CHUNK_RECORDS = 200_000
MANIFEST = "manifest.json"
TRADE_FIELDS = ("ts_event", "instrument_id", "price", "size", "action", "side", "flags", "depth", "ts_recv", "ts_in_delta", "sequence")


def session_dir(root: Path, session: dt.date) -> Path:
    return Path(root) / DATASET / session.isoformat()


def session_paths(root: Path, session: dt.date) -> dict[tuple[str, str], Path]:
    """Where each (venue, schema) file of a session lives (whether or not it exists yet)."""
    base = session_dir(root, session)
    stamp = session.strftime("%Y%m%d")
    out = {(FUTURES, s): base / FUTURES / f"glbx-mdp3-{stamp}.{s}.dbn.zst" for s in FUTURES_SCHEMAS}
    out |= {(OPTIONS, s): base / OPTIONS / f"glbx-mdp3-{stamp}.{s}.dbn.zst" for s in OPTIONS_SCHEMAS}
    return out


def read_manifest(root: Path, session: dt.date) -> dict | None:
    path = session_dir(root, session) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_current(manifest: dict | None, config: SyntheticConfig) -> bool:
    return bool(manifest) and manifest.get("config") == config.to_dict() and manifest.get("generator_version") == GENERATOR_VERSION


def generate_session(session: dt.date, out_root: Path, config: SyntheticConfig) -> dict:
    """Write the session's DBN files, manifest and ground truth; returns the manifest.

    Raises ValueError for a day that is not a CME ES trading session."""
    out_root = Path(out_root)
    existing = read_manifest(out_root, session)
    if _is_current(existing, config):
        return existing
    regime = session_regime(config, session)
    chain = build_chain(regime) if config.options else None
    flow = draw_option_flow(config, regime, chain) if config.options else None
    sim = simulate_session(config, regime, chain, flow)

    final_dir = session_dir(out_root, session)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_dir = final_dir.parent / f".{session.isoformat()}.tmp-{tag}"
    gt_final = ground_truth_dir(out_root, session)
    gt_tmp = gt_final.parent / f".{gt_final.name}.tmp-{tag}"
    try:
        paths = {key: tmp_dir / p.relative_to(final_dir) for key, p in session_paths(out_root, session).items()}
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        futures_ids = assign_instrument_ids([sim.lead.symbol, sim.other.symbol, sim.spread.symbol])
        counts = _write_futures(paths, sim, futures_ids, config)
        option_ids: dict[str, int] = {}
        if config.options:
            option_ids = assign_instrument_ids(list(chain.symbols), taken=set(futures_ids.values()))
            counts |= _write_options(paths, regime, chain, flow, sim, option_ids, futures_ids, config)
        else:
            for key in [k for k in paths if k[0] == OPTIONS]:
                paths.pop(key)
            shutil.rmtree(tmp_dir / OPTIONS, ignore_errors=True)
        gt_frame = ground_truth_frame(sim.approaches)
        gt_path = write_ground_truth(gt_frame, gt_tmp)
        manifest = _manifest(session, config, regime, sim, paths, counts, futures_ids, option_ids, tmp_dir, gt_path, gt_frame)
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _replace_dir(gt_tmp, gt_final)
        _replace_dir(tmp_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(gt_tmp, ignore_errors=True)
    return manifest


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place, replacing an older one."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        trash = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


def _manifest(session, config, regime: SessionRegime, sim: SimulatedSession, paths, counts, futures_ids, option_ids, tmp_dir,
              gt_path: Path, gt_frame) -> dict:
    files = []
    for (venue, schema), path in sorted(paths.items()):
        files.append({
            "venue": venue, "schema": schema, "path": str(path.relative_to(tmp_dir)), "bytes": path.stat().st_size,
            "sha256": file_sha256(path), "records": int(counts[(venue, schema)]),
        })
    planned = gt_frame.filter(gt_frame["planned"]) if gt_frame.height else gt_frame
    return {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "dataset": DATASET,
        "session": session.isoformat(),
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "window": {"start_ns": regime.window.globex_open_ns, "end_ns": regime.window.close_ns},
        "files": files,
        "instruments": {**futures_ids, **option_ids},
        "contracts": {
            "lead": sim.lead.symbol, "other": sim.other.symbol, "spread": sim.spread.symbol,
            "planned_lead_share": round(regime.contracts.lead_share, 4),
        },
        "ground_truth": {
            "path": f"ground_truth/date={session.isoformat()}/{gt_path.name}", "sha256": file_sha256(gt_path),
            "touches": gt_frame.height, "planned_approaches": planned.height,
        },
    }


# --- futures ----------------------------------------------------------------------------------


def monotone_receive_times(ts_event: np.ndarray, group: np.ndarray, rng: np.random.Generator, origin_ns: int,
                           end_ns: int) -> np.ndarray:
    """ts_recv = ts_event + a venue-to-capture latency (kept inside the window's end), made
    non-decreasing within each group (instrument) so that sorting by ts_recv never reorders an
    instrument's events."""
    latency = 25_000 + rng.lognormal(np.log(120_000.0), 0.6, len(ts_event)).astype(np.int64)
    recv = np.minimum(ts_event + latency, end_ns - 1)
    order = np.lexsort((np.arange(len(ts_event)), ts_event, group))
    rel = recv[order] - origin_ns
    assert rel.min(initial=0) >= 0 and rel.max(initial=0) < (1 << 47)
    keyed = group[order].astype(np.int64) * (1 << 47) + rel  # a per-group running max in one pass
    out = np.empty_like(recv)
    out[order] = np.maximum.accumulate(keyed) - group[order].astype(np.int64) * (1 << 47) + origin_ns
    return out


def _write_futures(paths, sim: SimulatedSession, ids: dict[str, int], config: SyntheticConfig) -> dict:
    regime = sim.regime
    start_ns, end_ns = regime.window.globex_open_ns, regime.window.close_ns
    instruments: list[InstrumentPath] = [sim.lead, sim.other, sim.spread]
    books = [build_book_events(ip, sim.profile, config.profile, start_ns, config.rng(regime.session, f"book:{ip.symbol}"))
             for ip in instruments]
    emitted = [np.flatnonzero(b.emit) for b in books]
    inst = np.concatenate([np.full(len(e), i, dtype=np.int64) for i, e in enumerate(emitted)])
    local = np.concatenate([np.arange(len(e)) for e in emitted])
    ts_event = np.concatenate([b.ts[e] for b, e in zip(books, emitted)])
    rng = config.rng(regime.session, "latency:futures")
    ts_recv = monotone_receive_times(ts_event, inst, rng, start_ns, end_ns)
    ts_in_delta = rng.integers(9_000, 22_000, len(ts_event)).astype(np.int32)
    order = np.lexsort((local, inst, ts_recv))
    assert ts_event.min() >= start_ns and ts_recv.max() < end_ns

    header_ids = dict(ids)
    engines = [SnapshotEngine(b) for b in books]
    tick_fixed = [int(round(ip.tick * FIXED_PRICE_SCALE)) for ip in instruments]
    inst_ids = [ids[ip.symbol] for ip in instruments]
    counts = {}
    trade_rows: list[np.ndarray] = []
    with DbnWriter(paths[(FUTURES, "mbp-10")], "mbp-10", metadata_bytes("mbp-10", start_ns, end_ns, "ES.FUT", header_ids)) as mbp, \
         DbnWriter(paths[(FUTURES, "trades")], "trades", metadata_bytes("trades", start_ns, end_ns, "ES.FUT", header_ids)) as trades:
        for c0 in range(0, len(order), MERGE_CHUNK_RECORDS):
            pos = order[c0 : c0 + MERGE_CHUNK_RECORDS]
            rec = empty_records("mbp-10", len(pos))
            rec["ts_recv"] = ts_recv[pos]
            rec["ts_in_delta"] = ts_in_delta[pos]
            rec["sequence"] = (c0 + np.arange(len(pos))) % (1 << 32)
            chunk_inst, chunk_local = inst[pos], local[pos]
            for i, (book, engine) in enumerate(zip(books, engines)):
                sel = np.flatnonzero(chunk_inst == i)
                if len(sel) == 0:
                    continue
                a, b = int(chunk_local[sel[0]]), int(chunk_local[sel[-1]]) + 1
                assert b - a == len(sel), "per-instrument order broken by the merge"
                _fill_book_rows(rec, sel, book, emitted[i][a:b], engine.ladders(a, b), inst_ids[i], tick_fixed[i])
            mbp.write(rec)
            is_trade = rec["action"] == b"T"
            tr = empty_records("trades", int(is_trade.sum()))
            for f in TRADE_FIELDS:
                tr[f] = rec[f][is_trade]
            trades.write(tr)
            trade_rows.append(tr[["ts_event", "instrument_id", "price", "size"]])
        counts[(FUTURES, "mbp-10")], counts[(FUTURES, "trades")] = mbp.records, trades.records

    all_trades = np.concatenate(trade_rows) if trade_rows else np.zeros(0)
    counts[(FUTURES, "ohlcv-1m")] = _write_ohlcv(paths[(FUTURES, "ohlcv-1m")], all_trades, start_ns, end_ns, header_ids)
    counts[(FUTURES, "definition")] = _write_futures_definitions(paths[(FUTURES, "definition")], regime, ids, start_ns, end_ns)
    return counts


def _fill_book_rows(rec: np.ndarray, sel: np.ndarray, book, events: np.ndarray, ladders, instrument_id: int, tick_fixed: int) -> None:
    bid_sz, ask_sz = ladders
    action = book.action[events]
    rec["instrument_id"][sel] = instrument_id
    rec["ts_event"][sel] = book.ts[events]
    rec["price"][sel] = book.price[events] * tick_fixed
    rec["size"][sel] = book.size[events]
    rec["action"][sel] = action
    rec["side"][sel] = book.side[events]
    rec["flags"][sel] = np.where(action == b"T", FLAGS_TRADE, FLAGS_BOOK)
    rec["depth"][sel] = book.depth[events]
    steps = np.arange(DEPTH)
    levels = np.empty((len(sel), DEPTH), dtype=BOOK_LEVEL_DTYPE)
    levels["bid_px"] = (book.best_bid[events][:, None] - steps) * tick_fixed
    levels["ask_px"] = (book.best_ask[events][:, None] + steps) * tick_fixed
    levels["bid_sz"], levels["ask_sz"] = bid_sz, ask_sz
    levels["bid_ct"], levels["ask_ct"] = order_counts(bid_sz), order_counts(ask_sz)
    book_levels(rec, DEPTH)[sel] = levels


def _write_ohlcv(path: Path, trades: np.ndarray, start_ns: int, end_ns: int, ids: dict[str, int]) -> int:
    """1-min bars per instrument from the trades just written, stamped by the bar start."""
    minute_ns = 60 * NS_PER_S
    rows = []
    for iid in np.unique(trades["instrument_id"]) if len(trades) else []:
        t = trades[trades["instrument_id"] == iid]
        t = t[np.argsort(t["ts_event"], kind="stable")]
        minute = (t["ts_event"].astype(np.int64) - start_ns) // minute_ns
        starts = np.flatnonzero(np.concatenate(([True], minute[1:] != minute[:-1])))
        ends = np.concatenate((starts[1:], [len(t)])) - 1
        bars = empty_records("ohlcv-1m", len(starts))
        bars["instrument_id"] = iid
        bars["ts_event"] = start_ns + minute[starts] * minute_ns
        price = t["price"]
        bars["open"], bars["close"] = price[starts], price[ends]
        bars["high"] = np.maximum.reduceat(price, starts)
        bars["low"] = np.minimum.reduceat(price, starts)
        bars["volume"] = np.add.reduceat(t["size"].astype(np.uint64), starts)
        rows.append(bars)
    bars = np.concatenate(rows) if rows else empty_records("ohlcv-1m", 0)
    bars = bars[np.lexsort((bars["instrument_id"], bars["ts_event"]))]
    with DbnWriter(path, "ohlcv-1m", metadata_bytes("ohlcv-1m", start_ns, end_ns, "ES.FUT", ids)) as w:
        w.write(bars)
        return w.records


def _definition(symbol: str, iid: int, ts_event: int, ts_recv: int, **fields) -> bytes:
    msg = dbn.InstrumentDefMsg(
        publisher_id=PUBLISHER_GLBX_MDP3, instrument_id=iid, ts_event=ts_event, ts_recv=ts_recv, raw_symbol=symbol,
        security_update_action=dbn.SecurityUpdateAction.ADD, raw_instrument_id=iid, currency="USD", exchange="XCME",
        unit_of_measure="IPNT", unit_of_measure_qty=50 * FIXED_PRICE_SCALE, display_factor=10_000_000,
        match_algorithm=dbn.MatchAlgorithm.FIFO, user_defined_instrument=dbn.UserDefinedInstrument.NO, **fields,
    )
    return bytes(msg)


def _write_futures_definitions(path: Path, regime: SessionRegime, ids: dict[str, int], start_ns: int, end_ns: int) -> int:
    c = regime.contracts
    published = start_ns - 90 * 60 * NS_PER_S  # the snapshot the day's definitions come from
    payload = []
    for contract in (c.near, c.far):
        payload.append(_definition(
            contract.symbol, ids[contract.symbol], published, start_ns, min_price_increment=int(ES_TICK * FIXED_PRICE_SCALE),
            asset="ES", security_type="FUT", instrument_class=dbn.InstrumentClass.FUTURE, expiration=contract.expiration_ns,
            activation=contract.expiration_ns - 455 * 86_400 * NS_PER_S, group="ES", cfi="FFIXSX", maturity_year=contract.year,
            maturity_month=contract.month, maturity_day=contract.expiry_date.day, min_price_increment_amount=12_500_000_000,
        ))
    spread_fields = dict(
        min_price_increment=int(0.05 * FIXED_PRICE_SCALE), asset="ES", security_type="FUT",
        instrument_class=dbn.InstrumentClass.FUTURE_SPREAD, expiration=c.near.expiration_ns,
        activation=c.near.expiration_ns - 120 * 86_400 * NS_PER_S, group="ES", cfi="FMIXSX", maturity_year=c.near.year,
        maturity_month=c.near.month, leg_count=2,
    )
    # DBN v3 describes a multi-leg instrument with one record per leg.
    for leg_index, (leg, side) in enumerate(((c.near, dbn.Side.ASK), (c.far, dbn.Side.BID))):
        payload.append(_definition(
            c.spread_symbol, ids[c.spread_symbol], published, start_ns, leg_index=leg_index, leg_instrument_id=ids[leg.symbol],
            leg_raw_symbol=leg.symbol, leg_side=side, leg_instrument_class=dbn.InstrumentClass.FUTURE,
            leg_ratio_qty_numerator=1, leg_ratio_qty_denominator=1, **spread_fields,
        ))
    order = sorted(range(len(payload)), key=lambda i: i)
    with DbnWriter(path, "definition", metadata_bytes("definition", start_ns, end_ns, "ES.FUT", ids)) as w:
        for i in order:
            w.write_raw(payload[i], 1)
        return w.records


# --- options ----------------------------------------------------------------------------------


def _write_options(paths, regime: SessionRegime, chain, flow, sim: SimulatedSession, option_ids: dict[str, int],
                   futures_ids: dict[str, int], config: SyntheticConfig) -> dict:
    start_ns, end_ns = regime.window.globex_open_ns, regime.window.close_ns
    book = build_option_book(config, regime, chain, flow, sim.lead.bid)
    ids = np.array([option_ids[s] for s in chain.symbols], dtype=np.uint32)
    rng = config.rng(regime.session, "latency:options")
    ts_recv = monotone_receive_times(book.ts_ns, book.option, rng, start_ns, end_ns)
    order = np.lexsort((np.arange(len(ts_recv)), ts_recv))
    unit = int(round(PRICE_UNIT * FIXED_PRICE_SCALE))
    rec = empty_records("mbp-1", len(order))
    rec["instrument_id"] = ids[book.option[order]]
    rec["ts_event"] = book.ts_ns[order]
    rec["ts_recv"] = ts_recv[order]
    rec["ts_in_delta"] = rng.integers(9_000, 22_000, len(order))
    rec["sequence"] = np.arange(len(order)) % (1 << 32)
    rec["action"] = book.action[order]
    rec["side"] = book.side[order]
    rec["price"] = book.price_u[order] * unit
    rec["size"] = book.size[order]
    rec["flags"] = np.where(rec["action"] == b"T", FLAGS_TRADE, FLAGS_BOOK)
    top = book_levels(rec, 1)[:, 0]
    unset = dbn.UNDEF_PRICE  # an empty side (only before an option's opening quote completes)
    top["bid_px"] = np.where(book.bid_u[order] == UNSET, unset, book.bid_u[order] * unit)
    top["ask_px"] = np.where(book.ask_u[order] == UNSET, unset, book.ask_u[order] * unit)
    top["bid_sz"], top["ask_sz"] = book.bid_sz[order], book.ask_sz[order]
    top["bid_ct"], top["ask_ct"] = order_counts(book.bid_sz[order]), order_counts(book.ask_sz[order])
    counts = {}
    with DbnWriter(paths[(OPTIONS, "mbp-1")], "mbp-1", metadata_bytes("mbp-1", start_ns, end_ns, "ES.OPT", option_ids)) as w:
        for c0 in range(0, len(rec), MERGE_CHUNK_RECORDS):
            w.write(rec[c0 : c0 + MERGE_CHUNK_RECORDS])
        counts[(OPTIONS, "mbp-1")] = w.records
    is_trade = rec["action"] == b"T"
    trades = empty_records("trades", int(is_trade.sum()))
    for f in TRADE_FIELDS:
        trades[f] = rec[f][is_trade]
    with DbnWriter(paths[(OPTIONS, "trades")], "trades", metadata_bytes("trades", start_ns, end_ns, "ES.OPT", option_ids)) as w:
        w.write(trades)
        counts[(OPTIONS, "trades")] = w.records

    stats = option_statistics(config, regime, chain, book)
    with DbnWriter(paths[(OPTIONS, "statistics")], "statistics", metadata_bytes("statistics", start_ns, end_ns, "ES.OPT", option_ids)) as w:
        for i, st in enumerate(stats):
            msg = dbn.StatMsg(
                publisher_id=PUBLISHER_GLBX_MDP3, instrument_id=int(ids[st.option]), ts_event=st.ts_event,
                ts_recv=st.ts_event + 180_000, ts_ref=st.ts_ref,
                price=int(to_fixed(st.price)) if st.price is not None else dbn.UNDEF_PRICE,
                quantity=st.quantity if st.quantity is not None else dbn.UNDEF_STAT_QUANTITY,
                stat_type=dbn.StatType(st.stat_type), sequence=i, ts_in_delta=15_000, channel_id=0,
                update_action=dbn.StatUpdateAction.NEW, stat_flags=0,
            )
            w.write_raw(bytes(msg), 1)
        counts[(OPTIONS, "statistics")] = w.records

    published = start_ns - 90 * 60 * NS_PER_S
    lead = regime.contracts.lead
    with DbnWriter(paths[(OPTIONS, "definition")], "definition", metadata_bytes("definition", start_ns, end_ns, "ES.OPT", option_ids)) as w:
        for i in np.argsort(ids, kind="stable"):
            symbol = chain.symbols[i]
            is_call = bool(chain.is_call[i])
            w.write_raw(_definition(
                symbol, int(ids[i]), published, start_ns, min_price_increment=int(PRICE_UNIT * FIXED_PRICE_SCALE), asset=chain.root,
                security_type="OOF", instrument_class=dbn.InstrumentClass.CALL if is_call else dbn.InstrumentClass.PUT,
                strike_price=int(to_fixed(chain.strikes[i])), strike_price_currency="USD", expiration=chain.expiration_ns,
                activation=chain.expiration_ns - 8 * 86_400 * NS_PER_S, underlying=lead.symbol, underlying_id=futures_ids[lead.symbol],
                group=chain.root[:3], cfi="OCAFPS" if is_call else "OPAFPS", maturity_year=regime.session.year,
                maturity_month=regime.session.month, maturity_day=regime.session.day,
            ), 1)
        counts[(OPTIONS, "definition")] = w.records
    return counts
