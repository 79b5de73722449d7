// The stream panel: the Pentaview streams of one level over the last 45 minutes, its projection for the next
// horizon (q10–q90 shaded, q50 dashed) and its alerts as markers on the time axis.
import { el, etClock, fitCanvas, levelLabel, nsToSeconds } from "./format.js";

export const STREAMS = [
  { key: "sigma_p", label: "σP pressure", color: "#ffd166", width: 2.4 },
  { key: "sigma_m", label: "σM momentum", color: "#4c9aff", width: 1.3 },
  { key: "sigma_f", label: "σF flow", color: "#06d6a0", width: 1.3 },
  { key: "sigma_b", label: "σB barrier", color: "#ef476f", width: 1.3 },
  { key: "sigma_d", label: "σD dealer", color: "#b388ff", width: 1.3 },
  { key: "sigma_s", label: "σS setup", color: "#90a4ae", width: 1.3 },
];
const WINDOW_S = 45 * 60;

export class StreamPanel {
  constructor(canvas, tabs, alertLog, onSelect) {
    this.canvas = canvas;
    this.tabs = tabs;
    this.alertLog = alertLog;
    this.onSelect = onSelect;
    this.reset();
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
  }

  reset() {
    this.history = {};      // level kind -> [{t, streams}]
    this.projection = {};   // level kind -> projection_update
    this.alerts = [];
    this.selected = null;
    this.pinned = false;
    this.inApproach = new Set();
    this.alertLog.replaceChildren();
    this.renderTabs();
    this.draw();
  }

  addStream(update) {
    const rows = (this.history[update.level_kind] ??= []);
    rows.push({ t: nsToSeconds(update.ts_ns), streams: update.streams, d: update.distance_atr });
    if (this.selected === null) this.selected = update.level_kind;
  }

  addProjection(update) {
    this.projection[update.level_kind] = update;
  }

  addAlert(alert) {
    this.alerts.push(alert);
    const item = el("li", { class: alert.state },
      `${alert.time_et.slice(0, 5)} ${levelLabel(alert.level_kind)} · ${alert.alert.replaceAll("_", " ")} `,
      alert.state === "fired" ? `(${alert.confidence === null ? "—" : alert.confidence.toFixed(2)}) ` : "cleared ",
      el("span", { class: "muted" }, alert.meaning));
    this.alertLog.prepend(item);
  }

  // Follow the nearest level in approach unless the trader picked a tab.
  follow(kinds) {
    this.inApproach = new Set(kinds);
    if (!this.pinned && kinds.length > 0) this.selected = kinds[0];
  }

  renderTabs() {
    const kinds = Object.keys(this.history);
    this.tabs.replaceChildren(...kinds.map((kind) => {
      const cls = ["tab", kind === this.selected ? "active" : "", this.inApproach.has(kind) ? "approach" : ""];
      const tab = el("button", { class: cls.join(" "), type: "button", "data-kind": kind }, levelLabel(kind));
      tab.addEventListener("click", () => { this.selected = kind; this.pinned = true; this.renderTabs(); this.draw(); });
      return tab;
    }));
  }

  draw() {
    const { ctx, width, height } = fitCanvas(this.canvas);
    const pad = { left: 34, right: 12, top: 20, bottom: 20 };
    const rows = this.history[this.selected] ?? [];
    ctx.font = "11px DejaVu Sans, sans-serif";
    if (rows.length === 0) {
      ctx.fillStyle = "#7d8a9c";
      ctx.fillText("Streams appear from 09:30 for every known level.", pad.left, height / 2);
      return;
    }
    const projection = this.projection[this.selected];
    const now = rows[rows.length - 1].t;
    const horizon = projection ? projection.horizon_bars * projection.bar_seconds : 300;
    const t0 = Math.max(rows[0].t, now - WINDOW_S);
    const t1 = now + horizon;
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => pad.top + ((1 - v) / 2) * (height - pad.top - pad.bottom);

    // grid: 0 and ±0.5, a time tick every 10 minutes, the "now" line
    ctx.strokeStyle = "#222c3a";
    ctx.fillStyle = "#7d8a9c";
    ctx.lineWidth = 1;
    for (const v of [-1, -0.5, 0, 0.5, 1]) {
      ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
      ctx.fillText(v.toFixed(1), 4, y(v) + 4);
    }
    for (let t = Math.ceil(t0 / 600) * 600; t <= t1; t += 600) {
      ctx.fillText(etClock(t), x(t) - 14, height - 5);
    }
    ctx.strokeStyle = "#3a4658";
    ctx.setLineDash([2, 3]);
    ctx.beginPath(); ctx.moveTo(x(now), pad.top); ctx.lineTo(x(now), height - pad.bottom); ctx.stroke();
    ctx.setLineDash([]);

    // projections: band then median, for each projected stream
    if (projection && nsToSeconds(projection.ts_ns) >= now - 60) {
      const start = nsToSeconds(projection.ts_ns);
      for (const stream of STREAMS) {
        const path = projection.projections[stream.key];
        if (!path) continue;
        const times = path.q50.map((_, i) => start + (i + 1) * projection.bar_seconds);
        ctx.fillStyle = hexAlpha(stream.color, stream.key === "sigma_p" ? 0.25 : 0.06);
        ctx.beginPath();
        times.forEach((t, i) => (i ? ctx.lineTo(x(t), y(path.q90[i])) : ctx.moveTo(x(t), y(path.q90[i]))));
        for (let i = times.length - 1; i >= 0; i--) ctx.lineTo(x(times[i]), y(path.q10[i]));
        ctx.closePath(); ctx.fill();
        ctx.strokeStyle = stream.color;
        ctx.lineWidth = stream.key === "sigma_p" ? 1.8 : 1;
        ctx.setLineDash([5, 4]);
        ctx.beginPath();
        const last = rows[rows.length - 1].streams[stream.key];
        if (last !== null && last !== undefined) ctx.moveTo(x(now), y(last));
        times.forEach((t, i) => ctx.lineTo(x(t), y(path.q50[i])));
        ctx.stroke();
        ctx.setLineDash([]);
      }
    }

    // the streams themselves (a null is a tier gap: the line breaks)
    for (const stream of [...STREAMS].reverse()) {
      ctx.strokeStyle = stream.color;
      ctx.lineWidth = stream.width;
      ctx.beginPath();
      let drawing = false;
      for (const row of rows) {
        if (row.t < t0) continue;
        const v = row.streams[stream.key];
        if (v === null || v === undefined) { drawing = false; continue; }
        if (drawing) ctx.lineTo(x(row.t), y(v)); else ctx.moveTo(x(row.t), y(v));
        drawing = true;
      }
      ctx.stroke();
    }

    // alerts of this level: a triangle at the top (fired) or a hollow one (cleared)
    for (const alert of this.alerts) {
      if (alert.level_kind !== this.selected) continue;
      const t = nsToSeconds(alert.ts_ns);
      if (t < t0) continue;
      const ax = x(t);
      ctx.fillStyle = alert.state === "fired" ? "#ffb74d" : "#7d8a9c";
      ctx.beginPath(); ctx.moveTo(ax - 5, 4); ctx.lineTo(ax + 5, 4); ctx.lineTo(ax, 13); ctx.closePath();
      alert.state === "fired" ? ctx.fill() : (ctx.strokeStyle = "#7d8a9c", ctx.stroke());
    }

    // legend with the latest values
    let lx = pad.left + 4;
    const latest = rows[rows.length - 1].streams;
    ctx.font = "11px DejaVu Sans, sans-serif";
    for (const stream of STREAMS) {
      const v = latest[stream.key];
      const text = `${stream.label} ${v === null || v === undefined ? "n/a" : v.toFixed(2)}`;
      ctx.fillStyle = stream.color;
      ctx.fillRect(lx, pad.top + 4, 10, 3);
      ctx.fillStyle = "#c9d3df";
      ctx.fillText(text, lx + 14, pad.top + 10);
      lx += ctx.measureText(text).width + 30;
    }
  }
}

function hexAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}
