// Display helpers shared by the dashboard's panels: ET clock text, percentages, level names and colours.

export const LEVEL_KINDS = ["PM_HIGH", "PM_LOW", "OR_HIGH", "OR_LOW", "SMA_90", "EMA_20"];

export const LEVEL_STYLE = {
  PM_HIGH: { color: "#3fb950", label: "PM high" },
  PM_LOW: { color: "#f85149", label: "PM low" },
  OR_HIGH: { color: "#39c5cf", label: "OR high" },
  OR_LOW: { color: "#ff9e45", label: "OR low" },
  SMA_90: { color: "#e3d26f", label: "SMA 90" },
  EMA_20: { color: "#d06bf2", label: "EMA 20" },
};

export const OUTCOME_COLOR = { BREAK: "#4c9aff", REJECT: "#ef5350", CHOP: "#a0a8b4" };

const ET_CLOCK = new Intl.DateTimeFormat("en-US", {
  timeZone: "America/New_York", hour: "2-digit", minute: "2-digit", hour12: false,
});

export function etClock(epochSeconds) {
  return ET_CLOCK.format(new Date(epochSeconds * 1000));
}

export function nsToSeconds(ns) {
  return Math.floor(Number(ns) / 1e9);
}

export function pct(p, digits = 0) {
  return p === null || p === undefined || Number.isNaN(p) ? "—" : `${(100 * p).toFixed(digits)}%`;
}

export function points(edge) {
  if (edge === null || edge === undefined || Number.isNaN(edge)) return "—";
  const v = 100 * edge;
  return `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(0)} pts`;
}

export function levelLabel(kind) {
  return LEVEL_STYLE[kind]?.label ?? kind;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A canvas sized to its CSS box at the device pixel ratio; returns a context drawing in CSS pixels.
export function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const { width, height } = canvas.getBoundingClientRect();
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}
