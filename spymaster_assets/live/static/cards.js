// Approach cards: per level in approach, what happened in similar past setups — P(BREAK) with its interval against
// the base rate, effective N, the model's p beside retrieval, the drivers, and the analogs' price paths overlaid.
import { LEVEL_STYLE, OUTCOME_COLOR, el, fitCanvas, levelLabel, nsToSeconds, pct, points } from "./format.js";

const TOUCH_BAND_ATR = 0.25;  // SPEC §6: a touch is |spot − level| ≤ 0.25 ATR (the tick floor is negligible here)
const OWN_PATH_BEFORE_S = 600;
const ENDED_SHOWN = 2;
const ENDED_KEPT_S = 600;  // an ended approach stays on screen (dimmed) for 10 minutes of replay time

export class ApproachCards {
  constructor(container, countLabel) {
    this.container = container;
    this.countLabel = countLabel;
    this.reset();
  }

  reset() {
    this.signals = new Map();  // approach_id -> newest level_signal
    this.now = 0;              // the newest event time seen, seconds
    this.starts = new Map();   // approach_id -> when this page first saw it (unknown for approaches in a snapshot)
    this.distances = {};       // level kind -> [{t, d}] from stream updates and signals: the approach's own path
    this.render();
  }

  addDistance(kind, tsNs, distanceAtr) {
    if (distanceAtr === null || distanceAtr === undefined) return;
    const rows = (this.distances[kind] ??= []);
    const t = nsToSeconds(tsNs);
    this.now = Math.max(this.now, t);
    if (rows.length && rows[rows.length - 1].t === t) rows[rows.length - 1].d = distanceAtr;
    else rows.push({ t, d: distanceAtr });
  }

  add(signal, live = true) {
    if (live && !this.starts.has(signal.approach_id)) this.starts.set(signal.approach_id, nsToSeconds(signal.ts_ns));
    this.signals.set(signal.approach_id, signal);
    this.addDistance(signal.level.kind, signal.ts_ns, signal.level.distance_atr);
  }

  active() {
    return [...this.signals.values()].filter((s) => s.approach_state === "active")
      .sort((a, b) => Math.abs(a.level.distance_atr) - Math.abs(b.level.distance_atr));
  }

  latestTrust() {
    let newest = null;
    for (const s of this.signals.values()) if (!newest || s.ts_ns >= newest.ts_ns) newest = s;
    return newest?.trust ?? null;
  }

  render() {
    const active = this.active();
    const ended = [...this.signals.values()]
      .filter((s) => s.approach_state === "ended" && nsToSeconds(s.ts_ns) >= this.now - ENDED_KEPT_S)
      .sort((a, b) => b.ts_ns - a.ts_ns).slice(0, ENDED_SHOWN);
    this.countLabel.textContent = active.length ? `${active.length} in approach` : "none in approach";
    if (active.length + ended.length === 0) {
      this.container.replaceChildren(el("p", { class: "empty" },
        "No level in approach (|d| ≤ 2 ATR and moving toward it)."));
      return;
    }
    this.container.replaceChildren(...[...active, ...ended].map((s) => this.card(s)));
    for (const canvas of this.container.querySelectorAll("canvas.analogs")) this.drawAnalogs(canvas);
  }

  card(s) {
    const up = s.level.direction === "UP";
    const r = s.retrieval;
    const m = s.model;
    const side = s.level.distance_atr < 0 ? "below" : "above";
    const head = el("div", { class: "card-head" },
      el("div", { class: "card-title" },
        el("span", { style: `color:${LEVEL_STYLE[s.level.kind].color}` }, levelLabel(s.level.kind)), " ",
        s.level.price.toFixed(2), " ",
        el("span", { class: up ? "dir-up" : "dir-down" }, up ? "↑ testing from below" : "↓ testing from above")),
      el("div", { class: "card-sub" }, s.approach_state === "ended" ? `ended ${s.time_et.slice(0, 5)}` :
        `${Math.abs(s.level.distance_atr).toFixed(2)} ATR ${side}`));
    const rows = [];
    if (r) {
      rows.push(this.probabilityRow("Similar cases", r.probabilities.BREAK, r.p_break_interval, r.base_rates.BREAK));
    }
    if (m) rows.push(this.probabilityRow("Model", m.p_break, null, m.base_rate));
    const stats = el("div", { class: "stats" },
      r ? el("span", {}, "eff. N ", el("b", {}, r.effective_n.toFixed(0)), ` of ${r.n_neighbours}`) : null,
      r ? el("span", {}, "base ", el("b", {}, pct(r.base_rates.BREAK))) : null,
      r ? el("span", {}, "edge ", el("b", { class: r.edge >= 0 ? "edge-pos" : "edge-neg" }, points(r.edge))) : null,
      r ? el("span", {}, `${Math.round(100 * r.credible_level)}% interval `,
             el("b", {}, `${pct(r.p_break_interval[0])}–${pct(r.p_break_interval[1])}`)) : null,
      s.smoothed ? el("span", {}, "smoothed ", el("b", {}, pct(s.smoothed.BREAK))) : null,
      m ? el("span", {}, "model edge ", el("b", { class: m.edge >= 0 ? "edge-pos" : "edge-neg" }, points(m.edge))) : null);
    const warnings = [];
    if (!r) warnings.push(el("div", { class: "warn" }, "No similar-case history for this session yet."));
    else if (r.insufficient_history) warnings.push(el("div", { class: "warn" }, "Thin history: effective N < 10."));
    const drivers = el("div", { class: "drivers" }, this.driverList("Pushing through", s.drivers.break),
                       this.driverList("Holding it", s.drivers.reject));
    const counts = { BREAK: 0, REJECT: 0, CHOP: 0 };
    for (const a of s.analogs) counts[a.outcome] += 1;
    const analogs = el("div", { class: "analog-wrap" },
      el("div", { class: "analog-head" },
        el("span", {}, `${s.analogs.length} similar past cases · ATR from the level · aligned at the touch`),
        el("span", { class: "legend" }, el("span", { class: "legend-break" }, `break ${counts.BREAK}`), " · ",
           el("span", { class: "legend-reject" }, `reject ${counts.REJECT}`), " · ",
           el("span", { class: "legend-chop" }, `chop ${counts.CHOP}`), " · ", el("b", {}, "this one"))),
      el("canvas", { class: "analogs", "data-approach": s.approach_id, "data-paths": String(s.analogs.length) }));
    const ctx = s.context ?? {};
    const context = el("div", { class: "context" },
      [["time", ctx.time_bucket], ["attempt", ctx.attempt_index], ["touches today", ctx.touches_today], ["tier", ctx.tier]]
        .filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => `${k} ${v}`).join(" · "));
    return el("div", { class: `card ${s.approach_state}`, "data-kind": s.level.kind, "data-approach": s.approach_id },
      head, ...rows, stats, ...warnings, drivers, analogs, context);
  }

  probabilityRow(label, p, interval, base) {
    const bar = el("div", { class: "pbar" }, el("div", { class: "fill", style: `width:${(100 * p).toFixed(1)}%` }));
    if (interval) {
      bar.append(el("div", { class: "interval",
        style: `left:${(100 * interval[0]).toFixed(1)}%;width:${(100 * (interval[1] - interval[0])).toFixed(1)}%` }));
    }
    if (base !== null && base !== undefined) {
      bar.append(el("div", { class: "base", title: `base rate ${pct(base)}`, style: `left:${(100 * base).toFixed(1)}%` }));
    }
    return el("div", { class: "pbar-row" }, el("span", { class: "pbar-label" }, `${label} P(BREAK)`), bar,
              el("span", { class: "pvalue" }, pct(p)));
  }

  driverList(title, drivers) {
    return el("div", {}, el("h4", {}, title), el("ul", {}, ...(drivers.length ? drivers.slice(0, 3).map((d) =>
      el("li", {}, el("span", {}, d.name),
         el("span", { class: d.edge >= 0 ? "edge-pos" : "edge-neg" },
            points(d.edge), d.percentile === null ? "" : ` · p${Math.round(100 * d.percentile)}`))) :
      [el("li", { class: "muted" }, "—")])));
  }

  // This approach's own path, toward-level sign: the origin is the first touch if price has touched, else now.
  ownPath(signal) {
    const dirSign = signal.level.direction === "UP" ? 1 : -1;
    const end = nsToSeconds(signal.ts_ns);
    const rows = (this.distances[signal.level.kind] ?? []).filter((r) => r.t <= end && r.t >= end - 2 * OWN_PATH_BEFORE_S);
    const start = this.starts.get(signal.approach_id) ?? end - OWN_PATH_BEFORE_S;
    const touch = rows.find((r) => r.t >= start && Math.abs(r.d) <= TOUCH_BAND_ATR);
    const origin = touch ? touch.t : end;
    return { touched: Boolean(touch), points: rows.filter((r) => r.t >= origin - OWN_PATH_BEFORE_S)
      .map((r) => ({ s: r.t - origin, v: r.d * dirSign })) };
  }

  drawAnalogs(canvas) {
    const signal = this.signals.get(canvas.dataset.approach);
    if (!signal) return;
    const { ctx, width, height } = fitCanvas(canvas);
    const pad = { left: 30, right: 8, top: 8, bottom: 16 };
    const own = this.ownPath(signal);
    let [s0, s1, vmax] = [-600, 600, 1.5];
    for (const a of signal.analogs) {
      s0 = Math.min(s0, a.path_start_s);
      s1 = Math.max(s1, a.path_start_s + (a.path_atr.length - 1) * a.path_step_s);
      for (const v of a.path_atr) if (v !== null) vmax = Math.max(vmax, Math.abs(v));
    }
    for (const p of own.points) vmax = Math.max(vmax, Math.abs(p.v));
    vmax = Math.min(vmax * 1.1, 4);  // beyond ±4 ATR the shape near the level matters more: farther points are clipped
    const x = (s) => pad.left + ((s - s0) / (s1 - s0)) * (width - pad.left - pad.right);
    const y = (v) => pad.top + ((vmax - v) / (2 * vmax)) * (height - pad.top - pad.bottom);
    ctx.font = "10px DejaVu Sans, sans-serif";
    ctx.strokeStyle = "#263041";
    ctx.fillStyle = "#7d8a9c";
    for (const v of [-2, -1, 1, 2].filter((v) => Math.abs(v) <= vmax)) {
      ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
      ctx.fillText(`${v > 0 ? "+" : ""}${v}`, 6, y(v) + 3);
    }
    ctx.strokeStyle = "#55627a";
    ctx.beginPath(); ctx.moveTo(pad.left, y(0)); ctx.lineTo(width - pad.right, y(0)); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(x(0), pad.top); ctx.lineTo(x(0), height - pad.bottom); ctx.stroke();
    ctx.fillText("level", 4, y(0) + 3);
    ctx.fillText(own.touched ? "touch" : "now", x(0) + 3, height - 4);
    ctx.fillText(`${s0 / 60} min`, pad.left, height - 4);
    ctx.fillText(`+${s1 / 60} min`, width - pad.right - 34, height - 4);
    ctx.fillText("through ↑", width - pad.right - 50, pad.top + 9);

    // the analogs, faint to strong by weight, so the most similar cases read first
    const maxWeight = Math.max(...signal.analogs.map((a) => a.weight), 1e-9);
    for (const a of [...signal.analogs].sort((p, q) => p.weight - q.weight)) {
      ctx.strokeStyle = OUTCOME_COLOR[a.outcome];
      ctx.globalAlpha = 0.35 + 0.6 * (a.weight / maxWeight);
      ctx.lineWidth = 1.4;
      ctx.beginPath();
      let drawing = false;
      a.path_atr.forEach((v, i) => {
        if (v === null) { drawing = false; return; }
        const px = x(a.path_start_s + i * a.path_step_s);
        const py = y(Math.max(-vmax, Math.min(vmax, v)));
        if (drawing) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        drawing = true;
      });
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    // the current approach on top
    if (own.points.length) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2.6;
      ctx.beginPath();
      const clip = (v) => Math.max(-vmax, Math.min(vmax, v));
      own.points.forEach((p, i) => (i ? ctx.lineTo(x(p.s), y(clip(p.v))) : ctx.moveTo(x(p.s), y(clip(p.v)))));
      ctx.stroke();
      const last = own.points[own.points.length - 1];
      ctx.fillStyle = "#ffffff";
      ctx.beginPath(); ctx.arc(x(last.s), y(clip(last.v)), 3, 0, 2 * Math.PI); ctx.fill();
    }
    canvas.dataset.drawn = String(signal.analogs.length);
  }
}
