// The 2-min candles with volume and the six level lines: PM/OR as fixed price lines once known, SMA 90 and
// EMA 20 as dotted lines that move with every bar (their value at each candle is the level as known then).
import {
  CandlestickSeries, HistogramSeries, LineSeries, LineStyle, createChart, createSeriesMarkers,
} from "./vendor/lightweight-charts.standalone.production.mjs";
import { LEVEL_KINDS, LEVEL_STYLE, el, etClock, levelLabel, nsToSeconds } from "./format.js";

const MOVING = new Set(["SMA_90", "EMA_20"]);

export class PriceChart {
  constructor(container, legend) {
    this.legend = legend;
    this.chart = createChart(container, {
      autoSize: true,
      layout: { background: { color: "#141a23" }, textColor: "#9aa7b8", fontSize: 11 },
      grid: { vertLines: { color: "#1c2430" }, horzLines: { color: "#1c2430" } },
      rightPriceScale: { borderColor: "#263041", scaleMargins: { top: 0.08, bottom: 0.22 } },
      timeScale: { borderColor: "#263041", timeVisible: true, secondsVisible: false, rightOffset: 6,
                   tickMarkFormatter: (time) => etClock(time) },
      localization: { timeFormatter: (time) => `${etClock(time)} ET`, priceFormatter: (p) => p.toFixed(2) },
      crosshair: { mode: 0 },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    });
    this.volume = this.chart.addSeries(HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" },
                                                          lastValueVisible: false, priceLineVisible: false });
    this.chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
    this.markers = createSeriesMarkers(this.candles, []);
    this.reset();
  }

  reset() {
    this.candles.setData([]);
    this.volume.setData([]);
    for (const line of Object.values(this.priceLines ?? {})) this.candles.removePriceLine(line);
    for (const series of Object.values(this.movingSeries ?? {})) this.chart.removeSeries(series);
    this.priceLines = {};
    this.movingSeries = {};
    this.levels = Object.fromEntries(LEVEL_KINDS.map((k) => [k, null]));
    this.markerList = [];
    this.markers.setMarkers([]);
    this.renderLegend();
  }

  setCandles(candles) {
    this.reset();
    for (const candle of candles) this.update(candle, false);
    this.chart.timeScale().fitContent();
  }

  update(candle, live = true) {
    const time = nsToSeconds(candle.bar_start_ns);
    this.candles.update({ time, open: candle.open, high: candle.high, low: candle.low, close: candle.close });
    this.volume.update({ time, value: candle.volume,
                         color: candle.close >= candle.open ? "rgba(38,166,154,0.35)" : "rgba(239,83,80,0.35)" });
    for (const level of candle.levels) this.updateLevel(level.kind, level.price, time);
    if (live) this.renderLegend();
  }

  updateLevel(kind, price, time) {
    if (price === null) return;
    const style = LEVEL_STYLE[kind];
    if (MOVING.has(kind)) {
      if (!this.movingSeries[kind]) {
        this.movingSeries[kind] = this.chart.addSeries(LineSeries, {
          color: style.color, lineWidth: 2, lineStyle: LineStyle.Dotted, title: levelLabel(kind),
          priceLineVisible: false, lastValueVisible: true, crosshairMarkerVisible: false,
        });
      }
      this.movingSeries[kind].update({ time, value: price });
    } else if (!this.priceLines[kind]) {
      this.priceLines[kind] = this.candles.createPriceLine({
        price, color: style.color, lineWidth: 2, lineStyle: kind.startsWith("OR") ? LineStyle.Dashed : LineStyle.Solid,
        axisLabelVisible: true, title: levelLabel(kind),
      });
    } else if (this.levels[kind] !== price) {
      this.priceLines[kind].applyOptions({ price });
    }
    this.levels[kind] = price;
  }

  // An arrow where an approach began, on the side price came from.
  markApproach(signal) {
    const time = nsToSeconds(signal.ts_ns) - (nsToSeconds(signal.ts_ns) % 120);
    const up = signal.level.direction === "UP";
    this.markerList.push({ time, position: up ? "belowBar" : "aboveBar", shape: up ? "arrowUp" : "arrowDown",
                           color: LEVEL_STYLE[signal.level.kind].color, text: levelLabel(signal.level.kind) });
    this.markers.setMarkers([...this.markerList].sort((a, b) => a.time - b.time));
  }

  renderLegend() {
    this.legend.replaceChildren(...LEVEL_KINDS.map((kind) => el("span", {
      class: `level-chip${this.levels[kind] === null ? " unknown" : ""}`, "data-kind": kind,
      style: `border-left-color:${LEVEL_STYLE[kind].color}`,
    }, `${levelLabel(kind)} ${this.levels[kind] === null ? "—" : this.levels[kind].toFixed(2)}`)));
  }

  // What is drawn, for the browser test and for debugging in the console.
  describe() {
    return {
      candles: this.candles.data().length,
      levelLines: Object.keys(this.priceLines).length + Object.keys(this.movingSeries).length,
      levels: { ...this.levels },
    };
  }
}
