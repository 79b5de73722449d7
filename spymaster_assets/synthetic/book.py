"""MBP-10 book events of a futures instrument, vectorized, with consistent snapshots.

State model: each (side, price) key holds a resting size. Every record is one event that
changes one key (or none, for a trade print), and its 10-level snapshot is the state *after*
the event (Databento's MBP convention; a 'T' record shows the book before the fill).

Event sources, all generated as arrays for the whole session:
- transitions of the best bid/ask (from `InstrumentPath.bid`): each removed touch level is a
  'C' to zero — preceded by a 'T' print when it is a sweep — then each new level on the other
  side is an 'A' (removals first, so the book is never crossed);
- trade prints at the touch ('T', aggressor side) each followed by a 'C' that reduces the
  resting level by the fill; scale-dependent extra prints copy a path print (same second,
  price and side, just before it), so the bars never change with the scale;
- depth updates at levels 0–9 ('A'/'C'/'M', sizes from the intraday depth profile, tilted by
  the path's book pressure) — except at an active wall's price;
- planted walls: the wall's size written at its key every 5 s while it is active (invisible
  while more than 10 levels away, which is how a wall is "latent" until price comes near),
  until it is traded through; a break's sweep print carries the wall's size (set by the path).

Values: keys are resolved with one sort by (key, time). A segment of a key starts at a write
(or at the key's initial size) and runs until the next write; fills decrement it. A
segment's starting size is raised to (its fills + 1) when needed, so a level never trades
below one lot before it is removed. A write that would cross the touch (a key on the wrong
side of the current best) is dropped; a write deeper than 10 levels changes state silently.

Snapshots: per side, a dense (events × prices) matrix over a short span of events holds the
index of the last event that wrote each price; a running maximum forward-fills it and the 10
ladder columns are gathered (the carry between spans is a per-price state array).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ScaleProfile
from .path import WALL_REFRESH_S, InstrumentPath, Wall
from .regime import IntradayProfile
from .tape import CORE_AFTER_TAU_NS, NS_PER_S, previous_bids, trade_sizes

DEPTH = 10
SET, DEC, REMOVE, NONE = 0, 1, 2, 3
# roles
R_REFRESH, R_WALL, R_ADD, R_REMOVE, R_TRADE, R_FILL = 0, 1, 2, 3, 4, 5
LEVEL_PROFILE = 0.7 + 0.13 * np.arange(DEPTH)  # deeper levels hold more
LEVEL_WEIGHTS = 1.0 / (1.0 + 0.35 * np.arange(DEPTH))
PRESSURE_TILT = 0.5
MODIFY_SHARE = 0.2
SPAN_EVENTS = 65_536
WALL_WRITE_OFFSET_NS = 999_000_000  # wall writes sit at the end of their second, after its transition


@dataclass
class BookEvents:
    """All events of one instrument in processing (time) order."""

    ts: np.ndarray
    action: np.ndarray  # S1
    side: np.ndarray  # S1: book side, or aggressor side for 'T'
    price: np.ndarray  # ticks
    size: np.ndarray
    key_side: np.ndarray  # 0 bid, 1 ask (for 'T': the resting side it trades against)
    kind: np.ndarray  # SET / DEC / REMOVE / NONE
    after: np.ndarray  # key size after the event
    best_bid: np.ndarray  # touch after the event (ticks)
    best_ask: np.ndarray
    depth: np.ndarray
    emit: np.ndarray  # False: state-only (deeper than 10 levels) or no-op
    pmin: int  # price range of the carry arrays
    init: np.ndarray  # (2, range) initial size of every key

    def __len__(self) -> int:
        return len(self.ts)


# Event columns and their (compact) dtypes: a realistic session has ~6 M events per outright.
_COLUMNS: dict[str, np.dtype] = {
    "ts": np.dtype(np.int64), "sub": np.dtype(np.int16), "action": np.dtype("S1"), "side": np.dtype("S1"),
    "price": np.dtype(np.int64), "key_side": np.dtype(np.int8), "kind": np.dtype(np.int8), "value": np.dtype(np.int64),
    "role": np.dtype(np.int8), "best_bid": np.dtype(np.int64), "best_ask": np.dtype(np.int64), "depth": np.dtype(np.int8),
    "pair": np.dtype(np.int32),
}


def _events(n: int, **cols) -> dict:
    """Columns of n events; scalars are broadcast. `pair` (a sweep print's removal) defaults to −1."""
    cols.setdefault("pair", -1)
    assert set(cols) == set(_COLUMNS), set(cols) ^ set(_COLUMNS)
    return {k: (np.full(n, v, dtype=_COLUMNS[k]) if np.ndim(v) == 0 else np.asarray(v).astype(_COLUMNS[k], copy=False))
            for k, v in cols.items()}


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in _COLUMNS}


def _group_index(counts: np.ndarray) -> np.ndarray:
    """0, 1, …, c−1 for each group of size c, concatenated."""
    offsets = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(offsets, counts)


def build_book_events(ip: InstrumentPath, profile: IntradayProfile, scale: ScaleProfile, start_ns: int,
                      rng: np.random.Generator) -> BookEvents:
    n = len(ip.bid)
    bid = ip.bid
    draws = ip.draws
    prev = previous_bids(bid, 0, n)
    delta = bid - prev
    secs = np.arange(n, dtype=np.int64)
    tau = start_ns + secs * NS_PER_S + draws.tau_ns
    moved = delta != 0
    free_from = np.where(moved, draws.tau_ns + CORE_AFTER_TAU_NS, 0)  # first free ns of each second
    depth_lots = profile.depth_lots * ip.depth_scale
    parts: list[dict] = []

    # --- transitions: the old touch levels go (sweep prints first), then the new ones come ----
    k = np.abs(delta)
    up = delta > 0
    swept = moved & (draws.sweep_u < ip.sweep_prob)
    r_sec = np.repeat(secs, k)
    j = _group_index(k)
    r_up, r_prev, r_k = up[r_sec], prev[r_sec], k[r_sec]
    r_price = np.where(r_up, r_prev + 1 + j, r_prev - j)
    removals = _events(
        len(r_sec), ts=tau[r_sec], sub=2 * j + 1, action=b"C", side=np.where(r_up, b"A", b"B"), price=r_price,
        key_side=np.where(r_up, 1, 0), kind=REMOVE, value=0, role=R_REMOVE,
        best_bid=np.where(r_up, r_prev, r_prev - j - 1), best_ask=np.where(r_up, r_prev + 2 + j, r_prev + 1), depth=0,
    )
    sweep_tape = ip.tape.sweep
    t_size = ip.tape.size[sweep_tape]  # the tape's sweep prints, in (second, level) order
    s_idx = np.flatnonzero(swept[r_sec])
    assert len(s_idx) == len(t_size), "tape and book disagree on sweeps"
    sweep_prints = _events(
        len(s_idx), ts=tau[r_sec[s_idx]], sub=2 * j[s_idx], action=b"T", side=np.where(r_up[s_idx], b"B", b"A"),
        price=r_price[s_idx], key_side=np.where(r_up[s_idx], 1, 0), kind=NONE, value=t_size, role=R_TRADE,
        best_bid=np.where(r_up[s_idx], r_prev[s_idx], r_prev[s_idx] - j[s_idx]),
        best_ask=np.where(r_up[s_idx], r_prev[s_idx] + 1 + j[s_idx], r_prev[s_idx] + 1), depth=0,
        pair=s_idx,  # index of its removal within `removals` (made global below)
    )
    a_size = np.maximum(1, np.rint(depth_lots[r_sec] * LEVEL_PROFILE[0] * rng.lognormal(0.0, 0.5, len(r_sec)))).astype(np.int64)
    additions = _events(
        len(r_sec), ts=tau[r_sec] + 20_000 * (j + 1), sub=0, action=b"A", side=np.where(r_up, b"B", b"A"), price=r_price,
        key_side=np.where(r_up, 0, 1), kind=SET, value=a_size, role=R_ADD,
        best_bid=np.where(r_up, r_prev + 1 + j, r_prev - r_k), best_ask=np.where(r_up, r_prev + r_k + 1, r_prev - j), depth=0,
    )
    parts += [removals, sweep_prints, additions]

    # --- trade prints at the touch (path prints plus scale copies) and their fills ----------
    core = ~sweep_tape
    c_ts, c_price, c_side, c_size, c_sec = (getattr(ip.tape, f)[core] for f in ("ts_ns", "price", "side", "size", "second"))
    if scale.trade_copies > 0 and len(c_ts):
        n_copy = rng.poisson(scale.trade_copies, len(c_ts))
        same_second = np.concatenate(([False], c_sec[1:] == c_sec[:-1]))
        lower = np.where(same_second, np.concatenate(([0], c_ts[:-1])), start_ns + c_sec * NS_PER_S + free_from[c_sec])
        src = np.repeat(np.arange(len(c_ts)), n_copy)
        frac = np.sort(rng.random(len(src)) + src) - src  # increasing within each source print
        copy_ts = lower[src] + 1 + (frac * np.maximum(c_ts[src] - lower[src] - 2, 0)).astype(np.int64)
        c_ts = np.concatenate((c_ts, copy_ts))
        c_price = np.concatenate((c_price, c_price[src]))
        c_side = np.concatenate((c_side, c_side[src]))
        c_size = np.concatenate((c_size, trade_sizes(rng, len(src))))
        c_sec = np.concatenate((c_sec, c_sec[src]))
    buy = c_side > 0
    for sub, action, side, kind, role in ((0, b"T", np.where(buy, b"B", b"A"), NONE, R_TRADE),
                                          (1, b"C", np.where(buy, b"A", b"B"), DEC, R_FILL)):
        parts.append(_events(
            len(c_ts), ts=c_ts, sub=sub, action=action, side=side, price=c_price, key_side=np.where(buy, 1, 0), kind=kind,
            value=c_size, role=role, best_bid=bid[c_sec], best_ask=bid[c_sec] + 1, depth=0,
        ))

    # --- depth updates --------------------------------------------------------------------------
    rate = scale.book_updates_per_s * ip.activity_scale * profile.activity
    n_upd = rng.poisson(rate)
    u_sec = np.repeat(secs, n_upd)
    m = len(u_sec)
    lo = free_from[u_sec]
    u_ts = start_ns + u_sec * NS_PER_S + lo + (rng.random(m) * (NS_PER_S - 1 - lo)).astype(np.int64)
    level = rng.choice(DEPTH, size=m, p=LEVEL_WEIGHTS / LEVEL_WEIGHTS.sum())
    on_ask = rng.random(m) < 0.5
    tilt = np.exp(np.where(on_ask, -1.0, 1.0) * PRESSURE_TILT * ip.pressure[u_sec])
    u_val = np.maximum(1, np.rint(depth_lots[u_sec] * LEVEL_PROFILE[level] * tilt * rng.lognormal(0.0, 0.5, m))).astype(np.int64)
    modify = rng.random(m) < MODIFY_SHARE
    u_price = np.where(on_ask, bid[u_sec] + 1 + level, bid[u_sec] - level)
    # Ordinary updates leave an active wall's price alone (the wall refreshes itself).
    free = np.ones(m, dtype=bool)
    for wall in ip.walls:
        free &= ~((u_price == wall.price) & (on_ask == (wall.side == 1)) & (u_ts >= wall.start_ns) & (u_ts <= wall.end_ns))
    u_ts, u_sec, level, on_ask, u_val, modify, u_price = (x[free] for x in (u_ts, u_sec, level, on_ask, u_val, modify, u_price))
    m = len(u_ts)
    parts.append(_events(
        m, ts=u_ts, sub=0, action=np.where(modify, b"M", b"A"), side=np.where(on_ask, b"A", b"B"),
        price=u_price, key_side=on_ask.astype(np.int64), kind=SET,
        value=u_val, role=R_REFRESH, best_bid=bid[u_sec], best_ask=bid[u_sec] + 1, depth=level,
    ))

    # --- planted walls: refreshed until they end or are traded through ------------------------------
    for wall in ip.walls:
        through = (removals["key_side"] == wall.side) & (removals["price"] == wall.price) & (removals["ts"] >= wall.start_ns)
        end_ns = min(wall.end_ns, int(removals["ts"][through].min()) - 1) if through.any() else wall.end_ns
        parts.append(_wall_events(wall, end_ns, bid, start_ns, depth_lots))

    ev = _concat(parts)
    del parts
    # Writes on the wrong side of the touch would cross the book: dropped while sorting by time.
    kind, key_side, price = ev["kind"], ev["key_side"], ev["price"]
    wrong_side = (kind == SET) & (((key_side == 0) & (price > ev["best_bid"])) | ((key_side == 1) & (price < ev["best_ask"])))
    order = np.lexsort((ev["sub"], ev["ts"]))
    order = order[~wrong_side[order]]
    # sweep prints point at their removal (the first block of the concatenation; never dropped)
    position = np.full(len(wrong_side), -1, dtype=np.int64)
    position[order] = np.arange(len(order))
    del wrong_side, kind, key_side, price
    for column in list(ev):  # column by column, so only one column is ever duplicated
        ev[column] = ev[column][order]
    del order
    has_pair = ev["pair"] >= 0
    ev["pair"][has_pair] = position[ev["pair"][has_pair]]
    del position
    return _resolve(ev, bid, depth_lots, rng)


def _wall_events(wall: Wall, end_ns: int, bid: np.ndarray, start_ns: int, depth_lots: np.ndarray) -> dict:
    n = len(bid)
    first = max(0, (wall.start_ns - start_ns) // NS_PER_S)
    last = min(n - 1, (end_ns - start_ns) // NS_PER_S - 1)  # the last refresh precedes end_ns
    secs = np.arange(first, last + 1, WALL_REFRESH_S, dtype=np.int64)
    values = np.full(len(secs), wall.size, dtype=np.int64)
    if last + 1 < n and not wall.absorb:  # pulled back to an ordinary size when it expires
        secs = np.append(secs, last + 1)
        values = np.append(values, max(1, int(depth_lots[last + 1] * LEVEL_PROFILE[3])))
    return _events(
        len(secs), ts=start_ns + secs * NS_PER_S + WALL_WRITE_OFFSET_NS, sub=0, action=b"A",
        side=b"A" if wall.side == 1 else b"B", price=wall.price, key_side=wall.side, kind=SET, value=values, role=R_WALL,
        best_bid=bid[secs], best_ask=bid[secs] + 1, depth=0,
    )


def _resolve(ev: dict, bid: np.ndarray, depth_lots: np.ndarray, rng: np.random.Generator) -> BookEvents:
    n = len(ev["ts"])
    key_side, price, kind, value, role = ev["key_side"], ev["price"], ev["kind"], ev["value"], ev["role"]
    best_bid, best_ask = ev["best_bid"], ev["best_ask"]

    pmin = int(min(bid.min(), price.min())) - DEPTH - 2
    pmax = int(max(bid.max(), price.max())) + DEPTH + 3
    span = pmax - pmin + 1
    init = _initial_sizes(int(bid[0]), pmin, span, float(depth_lots[0]), rng)

    # Key-by-key resolution: segments start at a write (SET/REMOVE) or at the key's first event.
    st_idx = np.flatnonzero(kind != NONE)
    key_all = key_side[st_idx].astype(np.int64) * span + (price[st_idx] - pmin)
    sort = np.lexsort((st_idx, key_all))
    order = st_idx[sort]
    key = key_all[sort]
    del key_all, sort, st_idx
    k_kind = kind[order]
    new_key = np.ones(len(order), dtype=bool)
    new_key[1:] = key[1:] != key[:-1]
    seg_start = new_key | (k_kind != DEC)
    starts = np.flatnonzero(seg_start)
    seg_id = np.cumsum(seg_start) - 1
    init_of_key = init.reshape(-1)[key]
    first_kind = k_kind[starts]
    base = np.where(first_kind == SET, value[order][starts], init_of_key[starts])
    dec = np.where(k_kind == DEC, value[order], 0)
    seg_dec = np.add.reduceat(dec, starts) if len(starts) else np.zeros(0, np.int64)
    base = np.where(first_kind == REMOVE, 0, np.maximum(base, seg_dec + 1))  # never fill a level to zero
    cum = np.cumsum(dec)
    used = cum - (cum - dec)[starts][seg_id]
    after_sorted = np.where(k_kind == REMOVE, 0, np.maximum(base[seg_id] - used, 0))
    before_sorted = np.where(new_key, init_of_key, np.concatenate(([0], after_sorted[:-1])))
    after = np.zeros(n, dtype=np.int64)
    before = np.zeros(n, dtype=np.int64)
    after[order] = after_sorted
    before[order] = before_sorted
    before[role == R_ADD] = 0  # a new level: nothing rested on that side at that price

    # Event sizes and actions.
    action = ev["action"].copy()
    size = value.copy()
    delta = after - before
    is_write = (role == R_REFRESH) | (role == R_WALL)
    size[is_write] = np.abs(delta[is_write])
    action[is_write & (delta > 0) & (action != b"M")] = b"A"
    action[is_write & (delta < 0) & (action != b"M")] = b"C"
    adds, removes = role == R_ADD, role == R_REMOVE
    size[adds] = after[adds]
    size[removes] = before[removes]
    # A sweep print fills min(its size, what rests there); the rest of the level is cancelled.
    sweeps = np.flatnonzero(ev["pair"] >= 0)
    size[sweeps] = np.minimum(value[sweeps], before[ev["pair"][sweeps]])

    # Only visible, real changes are written.
    deep = ((key_side == 0) & (price < best_bid - (DEPTH - 1))) | ((key_side == 1) & (price > best_ask + (DEPTH - 1)))
    emit = ~(is_write & ((delta == 0) | deep))
    depth = np.where(role == R_WALL, np.where(key_side == 0, best_bid - price, price - best_ask), ev["depth"])
    return BookEvents(
        ts=ev["ts"], action=action.astype("S1"), side=ev["side"].astype("S1"), price=price, size=size, key_side=key_side,
        kind=kind, after=after, best_bid=best_bid, best_ask=best_ask, depth=np.clip(depth, 0, DEPTH - 1).astype(np.uint8),
        emit=emit, pmin=pmin, init=init,
    )


def _initial_sizes(first_bid: int, pmin: int, span: int, depth: float, rng: np.random.Generator) -> np.ndarray:
    """(2, span) sizes resting at every key before the first event: the depth profile by
    distance from the opening touch, deep levels at the profile's last step."""
    prices = pmin + np.arange(span)
    bid_level = np.clip(first_bid - prices, 0, DEPTH - 1)
    ask_level = np.clip(prices - (first_bid + 1), 0, DEPTH - 1)
    noise = rng.lognormal(0.0, 0.5, (2, span))
    sizes = depth * np.stack((LEVEL_PROFILE[bid_level], LEVEL_PROFILE[ask_level])) * noise
    return np.maximum(1, np.rint(sizes)).astype(np.int64)


class SnapshotEngine:
    """Post-event 10-level ladders of an instrument's emitted events, span by span, in order."""

    def __init__(self, events: BookEvents):
        self.ev = events
        self.carry = events.init.copy()  # state before `self.next_event`
        self.next_event = 0
        self.emitted = np.flatnonzero(events.emit)

    def ladders(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Sizes (rows × 10) of the bid and ask ladders for emitted rows a..b−1 (a must follow
        the previous call's b)."""
        rows = self.emitted[a:b]
        bid_sz = np.empty((len(rows), DEPTH), dtype=np.int64)
        ask_sz = np.empty((len(rows), DEPTH), dtype=np.int64)
        if len(rows) == 0:
            return bid_sz, ask_sz
        out_pos = 0
        end_event = int(rows[-1]) + 1
        while self.next_event < end_event:
            e0 = self.next_event
            e1 = min(end_event, e0 + SPAN_EVENTS)
            span_rows = rows[(rows >= e0) & (rows < e1)]
            if len(span_rows):
                b_sz, a_sz = self._span(e0, e1, span_rows)
                bid_sz[out_pos : out_pos + len(span_rows)] = b_sz
                ask_sz[out_pos : out_pos + len(span_rows)] = a_sz
                out_pos += len(span_rows)
            else:
                self._advance_carry(e0, e1)
            self.next_event = e1
        return bid_sz, ask_sz

    def _span(self, e0: int, e1: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ev = self.ev
        local_rows = rows - e0
        out = []
        for side in (0, 1):
            best = ev.best_ask[rows] if side else ev.best_bid[rows]
            ladder = best[:, None] + (np.arange(DEPTH) if side else -np.arange(DEPTH))[None, :]
            lo, hi = int(ladder.min()), int(ladder.max())
            width = hi - lo + 1
            writes = np.flatnonzero((ev.key_side[e0:e1] == side) & (ev.kind[e0:e1] != NONE))
            w_price = ev.price[e0:e1][writes]
            inside = (w_price >= lo) & (w_price <= hi)
            last_writer = np.full((e1 - e0, width), -1, dtype=np.int32)
            last_writer[writes[inside], w_price[inside] - lo] = writes[inside]
            np.maximum.accumulate(last_writer, axis=0, out=last_writer)
            picked = last_writer[local_rows[:, None], ladder - lo]
            carried = self.carry[side][ladder - self.ev.pmin]
            values = np.where(picked >= 0, ev.after[e0:e1][np.maximum(picked, 0)], carried)
            out.append(values)
        self._advance_carry(e0, e1)
        return out[0], out[1]

    def _advance_carry(self, e0: int, e1: int) -> None:
        ev = self.ev
        stateful = np.flatnonzero(ev.kind[e0:e1] != NONE) + e0
        if len(stateful) == 0:
            return
        key = ev.key_side[stateful].astype(np.int64) * self.carry.shape[1] + (ev.price[stateful] - ev.pmin)
        # the last write of each key in the span wins
        rev_key = key[::-1]
        uniq, first_in_rev = np.unique(rev_key, return_index=True)
        last = stateful[::-1][first_in_rev]
        self.carry.reshape(-1)[uniq] = ev.after[last]


def order_counts(sizes: np.ndarray) -> np.ndarray:
    """Orders resting at a level: roughly one per 5 lots, at least one (none on an empty side)."""
    return np.where(sizes > 0, np.maximum(1, (sizes + 4) // 5), 0)
