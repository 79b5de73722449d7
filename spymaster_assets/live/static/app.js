// The dashboard: one WebSocket to /ws; a snapshot redraws everything, live frames update the panels. Drawing is
// batched to one animation frame, so a fast replay (hundreds of frames a second) costs one redraw per screen refresh.
import { ApproachCards } from "./cards.js";
import { el, pct } from "./format.js";
import { PriceChart } from "./price_chart.js";
import { StreamPanel } from "./streams.js";

const $ = (id) => document.getElementById(id);
const price = new PriceChart($("price-chart"), $("level-legend"));
const cards = new ApproachCards($("cards"), $("card-count"));
const streams = new StreamPanel($("stream-canvas"), $("stream-tabs"), $("alert-log"));
const page = { status: null, frames: 0, socket: null, retryMs: 500, dirty: new Set() };

function markDirty(...parts) {
  if (page.dirty.size === 0) requestAnimationFrame(flush);
  for (const part of parts) page.dirty.add(part);
}

function flush() {
  const dirty = new Set(page.dirty);
  page.dirty.clear();
  if (dirty.has("cards")) {
    cards.render();
    streams.follow(cards.active().map((s) => s.level.kind));
  }
  if (dirty.has("streams")) { streams.renderTabs(); streams.draw(); }
  if (dirty.has("legend")) price.renderLegend();
  if (dirty.has("fit")) price.chart.timeScale().fitContent();  // the whole session (≤ ~100 bars) stays in view
  if (dirty.has("footer")) renderFooter();
}

function applySnapshot(snapshot) {
  price.setCandles(snapshot.candles);
  cards.reset();
  streams.reset();
  for (const update of snapshot.streams ?? []) apply(update, false);  // the recent past of every level's streams
  for (const message of snapshot.latest) if (message.type !== "stream_update") apply(message, false);
  for (const alert of snapshot.alerts) streams.addAlert(alert);
  applyStatus(snapshot.status);
  markDirty("cards", "streams", "legend", "footer");
}

function apply(message, live = true) {
  switch (message.type) {
    case "candle":
      price.update(message, false);
      markDirty(message.final ? "fit" : "legend", "legend");
      break;
    case "stream_update":
      streams.addStream(message);
      cards.addDistance(message.level_kind, message.ts_ns, message.distance_atr);
      markDirty("streams");
      break;
    case "projection_update":
      streams.addProjection(message);
      markDirty("streams");
      break;
    case "alert":
      streams.addAlert(message);
      markDirty("streams");
      break;
    case "level_signal":
      if (live && !cards.signals.has(message.approach_id)) price.markApproach(message);
      cards.add(message, live);
      markDirty("cards", "streams", "footer");
      break;
    default:
      break;
  }
}

function applyStatus(status) {
  page.status = status;
  $("session-label").textContent = status.session ?? "no session";
  $("replay-clock").textContent = status.replay_time_et ?? "--:--:--";
  const state = $("run-state");
  state.textContent = status.running ? `replay ${status.speed === 0 ? "max" : `${status.speed}×`}` :
    status.session ? "ended" : "idle";
  state.className = `badge ${status.running ? "running" : status.session ? "ended" : "idle"}`;
  const select = $("session-select");
  const wanted = status.sessions.map(String);
  if ([...select.options].map((o) => o.value).join() !== wanted.join()) {
    select.replaceChildren(...wanted.map((d) => el("option", { value: d }, d)));
  }
  if (status.session) select.value = status.session;
  const speed = $("speed-select");
  if (status.running && [...speed.options].some((o) => Number(o.value) === status.speed)) speed.value = String(status.speed);
  markDirty("footer");
}

function renderFooter() {
  const trust = cards.latestTrust();
  $("trust-asof").replaceChildren("Index as of ", el("b", {}, trust?.index_as_of ?? "—"),
                                  " · Model as of ", el("b", {}, trust?.model_as_of ?? "—"));
  $("trust-bucket").replaceChildren(...(trust ? [
    `Answers in the ${trust.bucket} bucket came true `, el("b", {}, pct(trust.bucket_hit_rate)),
    ` of the time (n = ${trust.bucket_n})`] : ["This probability bucket: —"]));
  $("trust-frames").replaceChildren(`frames ${page.frames} · dropped `,
                                    el("b", {}, String(page.status?.dropped_frames ?? 0)));
}

function onFrame(event) {
  const message = JSON.parse(event.data);
  page.frames += 1;
  if (message.type === "snapshot") applySnapshot(message);
  else if (message.type === "status") applyStatus(message);
  else if (message.type === "error") $("last-error").textContent = `${message.error}: ${message.detail ?? ""}`;
  else {
    apply(message);
    if (page.status) $("replay-clock").textContent = message.time_et;
  }
}

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  page.socket = socket;
  socket.addEventListener("open", () => {
    page.retryMs = 500;
    $("connection").textContent = "● live";
    $("connection").className = "conn up";
  });
  socket.addEventListener("message", onFrame);
  socket.addEventListener("close", () => {
    $("connection").textContent = "● reconnecting";
    $("connection").className = "conn down";
    setTimeout(connect, page.retryMs);
    page.retryMs = Math.min(page.retryMs * 2, 8000);
  });
}

$("replay-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!page.socket || page.socket.readyState !== WebSocket.OPEN) return;
  $("last-error").textContent = "";
  page.socket.send(JSON.stringify({
    type: "replay", session: $("session-select").value, speed: Number($("speed-select").value),
    start: $("start-input").value || "09:22",
  }));
});

// For the browser test and for poking at the page from the console.
window.spymaster = {
  describe: () => ({
    ...price.describe(),
    cards: document.querySelectorAll("#cards .card.active").length,
    analogPaths: Math.max(0, ...[...document.querySelectorAll("canvas.analogs")].map((c) => Number(c.dataset.drawn ?? 0))),
    streamLevels: Object.keys(streams.history).length,
    alerts: streams.alerts.length,
    frames: page.frames,
    clock: $("replay-clock").textContent,
    status: page.status,
  }),
};

connect();
