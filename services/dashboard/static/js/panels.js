// The status counters, the queue-depth card, the services list and the workers grid.

import { $, h, setAttr, setText } from "./dom.js";
import { ago, duration, num, shortId, STATUSES, title } from "./format.js";

const HISTORY_MS = 60_000;
const SERVICES = ["api", "worker", "scheduler", "notifier", "dashboard"];

export class Counters {
  constructor(root, onPick) {
    this.root = root;
    this.history = []; // [time ms, counts] for the "in the last minute" line
    this.tiles = {};
    for (const status of [...STATUSES, "total"]) {
      const value = h("span", { class: "counter-value" }, "–");
      const delta = h("span", { class: "counter-delta" });
      const tile = h(
        "button",
        { type: "button", class: "counter", dataset: { status }, "aria-pressed": "false", title: status === "total" ? "Show every task" : `Show ${status} tasks` },
        h("span", { class: "counter-label" }, h("span", { class: "dot" }), title(status)),
        value,
        delta,
      );
      tile.addEventListener("click", () => onPick(status === "total" ? "" : status));
      this.tiles[status] = { tile, value, delta };
      root.append(tile);
    }
  }

  select(status) {
    for (const [name, { tile }] of Object.entries(this.tiles)) {
      setAttr(tile, "aria-pressed", String(status ? name === status : name === "total"));
    }
  }

  render(msg) {
    const now = msg.t;
    this.history.push([now, msg.counts]);
    while (this.history.length > 2 && this.history[1][0] <= now - HISTORY_MS) this.history.shift();
    const [then, old] = this.history[0];
    const span = now - then;
    for (const [name, { value, delta }] of Object.entries(this.tiles)) {
      const count = msg.counts[name] ?? 0;
      setText(value, num(count));
      if (span < 5000) {
        setText(delta, "");
        continue;
      }
      const diff = count - (old[name] ?? 0);
      const window = span >= HISTORY_MS - 2000 ? "1m" : `${Math.round(span / 1000)}s`;
      setText(delta, diff === 0 ? "steady" : `${diff > 0 ? "+" : "−"}${num(Math.abs(diff))} in ${window}`);
    }
  }
}

export class Depth {
  constructor(root, total, facts, services) {
    this.rows = {};
    for (const p of ["5", "4", "3", "2", "1"]) {
      const fill = h("span", { class: "bar-fill" });
      const value = h("span", { class: "depth-value" }, "0");
      root.append(
        h("div", { class: "depth-row", title: p === "5" ? "Priority 5 runs first" : `Priority ${p}` },
          h("span", { class: "depth-label" }, `P${p}`), h("span", { class: "bar" }, fill), value),
      );
      this.rows[p] = { fill, value };
    }
    this.total = total;
    this.facts = {};
    for (const [key, label] of [
      ["processing", "Running now"],
      ["delayed", "Waiting (scheduled + retry backoff)"],
      ["notify", "Ready for the notifier (email, webhook)"],
    ]) {
      const dd = h("dd", {}, "0");
      facts.append(h("dt", {}, label), dd);
      this.facts[key] = dd;
    }
    this.services = {};
    for (const name of SERVICES) {
      const count = h("b");
      const el = h("span", { class: "service", dataset: { service: name } }, h("span", { class: "dot" }), name, count);
      services.append(el);
      this.services[name] = { el, count };
    }
  }

  render(msg) {
    const depths = msg.depth || {};
    const values = Object.values(depths).map(Number);
    const max = Math.max(1, ...values);
    let total = 0;
    for (const [p, { fill, value }] of Object.entries(this.rows)) {
      const n = Number(depths[p] || 0);
      total += n;
      setText(value, num(n));
      const width = `${n ? Math.max(2, (100 * n) / max) : 0}%`;
      if (fill.style.width !== width) fill.style.width = width;
    }
    setText(this.total, num(total));
    setText(this.facts.processing, num(msg.counts.processing));
    setText(this.facts.delayed, num(msg.delayed));
    setText(this.facts.notify, num(msg.notify_depth));
    for (const [name, { el, count }] of Object.entries(this.services)) {
      const n = msg.services[name] ?? 0;
      setText(count, n > 1 ? `×${n}` : "");
      el.classList.toggle("down", n === 0);
      el.hidden = name === "api" && n === 0; // the API may not beat; show it only when it does
      setAttr(el, "title", `${name}: ${n} live instance${n === 1 ? "" : "s"}`);
    }
  }
}

export class Workers {
  constructor(root, subtitle, onOpen) {
    this.root = root;
    this.subtitle = subtitle;
    this.onOpen = onOpen;
    this.cards = new Map();
    this.empty = h(
      "p",
      { class: "empty" },
      "No live workers. Start one with ",
      h("code", {}, "python -m services.worker"),
      " or ",
      h("code", {}, "make run"),
      ".",
    );
    root.append(this.empty);
  }

  card(worker) {
    const name = h("span");
    const beat = h("span", { class: "worker-beat" });
    const meta = h("div", { class: "worker-meta" });
    const fill = h("span", { class: "bar-fill" });
    const chips = h("div", { class: "chips" });
    const el = h(
      "article",
      { class: "worker", dataset: { id: worker.id } },
      h("div", { class: "worker-head" }, h("div", { class: "worker-name" }, h("span", { class: "dot" }), name), beat),
      meta,
      h("div", { class: "bar", title: "Busy slots" }, fill),
      chips,
    );
    return { el, name, beat, meta, fill, chips, tasksKey: null };
  }

  render(msg) {
    const workers = [...msg.workers].sort((a, b) => a.service.localeCompare(b.service) || a.name.localeCompare(b.name, undefined, { numeric: true }));
    if (workers.length && this.empty.parentNode) this.empty.remove();
    const seen = new Set();
    let busy = 0;
    let slots = 0;
    workers.forEach((w, index) => {
      seen.add(w.id);
      let card = this.cards.get(w.id);
      if (!card) {
        card = this.card(w);
        this.cards.set(w.id, card);
      }
      if (this.root.children[index] !== card.el) this.root.insertBefore(card.el, this.root.children[index] || null);
      busy += w.running;
      slots += w.slots || 0;
      setText(card.name, w.service === "notifier" ? `${w.name} · notifier` : w.name);
      setText(card.beat, `beat ${duration(w.age_ms)} ago`);
      card.el.classList.toggle("late", w.age_ms > 2500);
      const started = w.started_at ? ` · up ${ago(w.started_at * 1000, msg.t).replace(" ago", "")}` : "";
      setText(card.meta, `${w.running}/${w.slots ?? "?"} busy · ${num(w.processed)} done${started}${w.host ? ` · ${w.host}` : ""}${w.pid ? `:${w.pid}` : ""}`);
      const width = `${w.slots ? (100 * w.running) / w.slots : 0}%`;
      if (card.fill.style.width !== width) card.fill.style.width = width;
      const key = w.tasks.map((t) => t.id).join(",") + (w.running > w.tasks.length ? `+${w.running}` : "");
      if (key !== card.tasksKey) {
        card.tasksKey = key;
        const chips = w.tasks.map((t) =>
          h("button", { type: "button", class: "chip", title: `Task ${t.id}`, onclick: () => this.onOpen(t.id) },
            t.type || "task", h("span", { class: "mono" }, shortId(t.id))),
        );
        if (w.running > w.tasks.length) chips.push(h("span", { class: "idle" }, `+${w.running - w.tasks.length} more`));
        card.chips.replaceChildren(...(chips.length ? chips : [h("span", { class: "idle" }, "Idle")]));
      }
    });
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.el.remove();
        this.cards.delete(id);
      }
    }
    if (!workers.length && !this.empty.parentNode) this.root.append(this.empty);
    const count = workers.filter((w) => w.service === "worker").length;
    setText(this.subtitle, workers.length ? `${count} worker process${count === 1 ? "" : "es"} · ${busy} of ${slots} slots busy` : "Live processes, by heartbeat");
  }
}
