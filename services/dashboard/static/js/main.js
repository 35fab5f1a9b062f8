// Boot: session (and key prompt), then one live stream feeding every panel; renders once per frame.

import { ApiError, onUnauthorized, openStream, request } from "./api.js";
import { BulkActions } from "./bulk.js";
import { ThroughputChart } from "./chart.js";
import { Drawer } from "./details.js";
import { $, h, setText } from "./dom.js";
import { num, rate } from "./format.js";
import { Counters, Depth, Workers } from "./panels.js";
import { Queues } from "./queues.js";
import { Schedules } from "./schedules.js";
import { initTheme } from "./theme.js";
import { TaskTable } from "./tasks.js";

const live = $("#live");
const banner = $("#banner");
let stream = null;
let latest = null;
let frame = 0;
let started = false;

// Counted for people measuring the page (see docs/dashboard.md) and for the tests.
const metrics = { messages: 0, bytes: 0, snapshots: 0, renders: 0, since: performance.now() };

const chart = new ThroughputChart($("#tp-chart"), $("#tp-legend"), $("#tp-range"));
const counters = new Counters($("#counters"), (status) => pickStatus(status));
const depth = new Depth($("#depth"), $("#depth-total"), $("#depth-facts"), $("#services"));
const drawer = new Drawer($("#drawer"), (task) => table.upsert(task));
const workers = new Workers($("#workers"), $("#workers-sub"), (id) => drawer.open(id));
const queues = new Queues({ body: $("#queue-rows"), subtitle: $("#queues-sub"), onPick: (name) => pickQueue(name) });
const schedules = new Schedules({
  body: $("#schedule-rows"), empty: $("#schedules-empty"), subtitle: $("#schedules-sub"), onOpen: (id) => drawer.open(id),
});
const table = new TaskTable({
  body: $("#task-rows"),
  empty: $("#tasks-empty"),
  more: $("#load-more"),
  subtitle: $("#tasks-sub"),
  onOpen: (id) => drawer.open(id),
  selectPage: $("#select-page"),
});
const bulk = new BulkActions({ table, bar: $("#bulkbar"), dialog: $("#bulk-dialog") });
table.onChange = schedule;
queues.onChange = schedule;
window.__dashboard = { metrics, chart, table, drawer, queues, bulk, schedules };

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  metrics.renders += 1;
  if (latest) {
    counters.render(latest);
    depth.render(latest);
    workers.render(latest);
    queues.render();
    syncQueueOptions(queues.names());
    chart.render();
    const events = latest.events_per_s;
    setText($("#event-rate"), events > 0 ? `${events >= 100 ? num(events) : rate(events)} events/s` : "idle");
  }
  table.render();
}

function setState(state, text) {
  live.dataset.state = state;
  setText($(".live-text", live), text);
}

function showBanner(text) {
  banner.hidden = !text;
  setText(banner, text || "");
}

function receive(msg, bytes, kind) {
  metrics.messages += 1;
  metrics.bytes += bytes;
  latest = msg;
  chart.merge(msg.tp);
  queues.merge(msg);
  if (kind === "snapshot") {
    // A reconnect or a resync: what changed meanwhile is unknown, so re-read the list.
    metrics.snapshots += 1;
    if (metrics.snapshots > 1) {
      table.reloadSoon();
      drawer.refreshSoon();
    }
  } else {
    table.apply(msg.tasks);
    if (msg.changed > msg.tasks.length) {
      table.reloadSoon(); // more changed than one update carries: re-read the page
      drawer.refreshSoon();
    } else if (drawer.id && msg.tasks.some((row) => row.id === drawer.id)) {
      drawer.refreshSoon();
    }
  }
  setState("live", "Live");
  showBanner("");
  schedule();
}

function pickStatus(status) {
  $("#filter-status").value = status;
  counters.select(status);
  table.setFilters({ status });
}

function pickQueue(name) {
  syncQueueOptions(queues.names(), name);
  $("#filter-queue").value = name;
  queues.select(name);
  table.setFilters({ queue: name });
}

let queueOptions = "";

/** The queue filter lists every queue there is (and the one picked, even if it is gone). */
function syncQueueOptions(names, picked = $("#filter-queue").value) {
  const all = picked && !names.includes(picked) ? [...names, picked] : names;
  const key = all.join(",");
  if (key === queueOptions) return;
  queueOptions = key;
  const select = $("#filter-queue");
  select.replaceChildren(h("option", { value: "" }, "All"), ...all.map((name) => h("option", { value: name }, name)));
  select.value = picked;
}

function wireFilters() {
  $("#filter-status").addEventListener("change", (event) => pickStatus(event.target.value));
  $("#filter-queue").addEventListener("change", (event) => pickQueue(event.target.value));
  let typing = null;
  $("#filter-type").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => table.setFilters({ type: event.target.value.trim() }), 300);
  });
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  counters.select("");
}

async function loadTypes() {
  try {
    const { types } = await request("/api/types");
    $("#type-options").replaceChildren(...types.map((t) => h("option", { value: t })));
  } catch {
    /* the filter still takes free text */
  }
}

function start(role) {
  $("#login").hidden = true;
  $("#app").hidden = false;
  table.setRole(role);
  bulk.setRole(role);
  queues.setRole(role);
  schedules.setRole(role);
  schedules.start();
  drawer.role = role;
  if (!started) {
    started = true;
    wireFilters();
    setInterval(() => {
      if (!document.hidden) table.tickTimes();
    }, 1000);
  }
  loadTypes();
  table.reload();
  stream = openStream({
    snapshot: (msg, bytes) => receive(msg, bytes, "snapshot"),
    update: (msg, bytes) => receive(msg, bytes, "update"),
    trouble: (msg) => {
      setState("trouble", "Redis unavailable");
      showBanner(`${msg.error}. Figures will resume when it is back.`);
    },
    state: (state) => {
      if (state === "reconnecting") setState("reconnecting", "Reconnecting…");
    },
  });
  drawer.fromHash();
}

function showLogin(message = "") {
  if (stream) stream.close();
  stream = null;
  $("#app").hidden = true;
  $("#login").hidden = false;
  setText($("#login-error"), message);
  $("#login-key").focus();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("#login-key").value;
  try {
    const { role } = await request("/api/login", { method: "POST", body: { key } });
    $("#login-key").value = "";
    start(role);
  } catch (error) {
    setText($("#login-error"), error instanceof ApiError && error.status === 401 ? "That key is not valid." : error.message);
  }
});

$("#logout").addEventListener("click", async () => {
  await request("/api/logout", { method: "POST" }).catch(() => null);
  showLogin();
});

onUnauthorized(() => showLogin("Your session ended. Enter the key again."));

async function boot() {
  let session;
  try {
    session = await request("/api/session");
  } catch (error) {
    setState("reconnecting", "Offline");
    showBanner(`The dashboard service cannot be reached (${error.message}). Retrying…`);
    setTimeout(boot, 3000);
    return;
  }
  showBanner("");
  setText($("#queue-name"), session.queue);
  $("#logout").hidden = !session.auth;
  if (session.auth && !session.role) return showLogin();
  start(session.role);
}

initTheme(() => chart.restyle());
boot();
