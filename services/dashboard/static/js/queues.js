// The queues panel: one row per queue (state, depth, limits, workers) with Pause and Resume.

import { ApiError, request } from "./api.js";
import { h, setAttr, setText, toast } from "./dom.js";
import { num, rate } from "./format.js";

const READ_ONLY = "This API key may only read";

/** "10 / 1 s · max 5", or "—" for a queue without limits. */
export function limitsText(row) {
  const parts = [];
  if (row.rate_limit) parts.push(`${num(row.rate_limit.tasks)} / ${rate(row.rate_limit.per_seconds)} s`);
  if (row.max_concurrency) parts.push(`max ${num(row.max_concurrency)}`);
  return parts.length ? parts.join(" · ") : "—";
}

function limitsTitle(row) {
  const parts = [];
  if (row.rate_limit) parts.push(`at most ${num(row.rate_limit.tasks)} starts every ${rate(row.rate_limit.per_seconds)} s`);
  if (row.max_concurrency) parts.push(`at most ${num(row.max_concurrency)} running at once`);
  return parts.length ? `${parts.join(", ")}, across all workers` : "No rate or concurrency limit";
}

export class Queues {
  constructor({ body, subtitle, onPick }) {
    Object.assign(this, { body, subtitle, onPick });
    this.role = "read";
    this.rows = new Map(); // name -> row, in the server's order (by name)
    this.answered = new Map(); // name -> server ms of an action's answer, kept over older updates
    this.busy = new Set(); // names with a pause or resume on its way
    this.elements = new Map();
    this.selected = "";
  }

  /** Take the queues of a snapshot or update; rows read before an action's answer are older. */
  merge(msg) {
    if (!msg.queues) return;
    const next = new Map();
    for (const row of msg.queues) {
      const since = this.answered.get(row.name);
      if (since !== undefined && msg.t < since && this.rows.has(row.name)) {
        next.set(row.name, this.rows.get(row.name));
        continue;
      }
      this.answered.delete(row.name);
      next.set(row.name, row);
    }
    this.rows = next;
  }

  async act(name, action) {
    this.busy.add(name);
    this.onChange?.();
    try {
      const reply = await request(`/api/queues/${encodeURIComponent(name)}/${action}`, { method: "POST" });
      this.answered.set(name, reply.t);
      this.rows.set(name, reply.queue);
      toast(`Queue ${name} ${action === "pause" ? "paused" : "resumed"}`);
    } catch (error) {
      toast(error instanceof ApiError ? error.message : String(error), "error");
    } finally {
      this.busy.delete(name);
      this.onChange?.();
    }
  }

  names() {
    return [...this.rows.keys()];
  }

  select(name) {
    this.selected = name;
    for (const [key, tr] of this.elements) tr.classList.toggle("selected", key === name);
  }

  setRole(role) {
    this.role = role;
    for (const tr of this.elements.values()) tr.buttonKey = null;
  }

  cells(name) {
    const cell = (cls, label) => h("td", { class: cls, dataset: label ? { label } : {} });
    const tr = h("tr", { dataset: { queue: name } });
    tr.c = {
      name: cell("c-name"), state: cell("c-state"), ready: cell("c-ready num", "Ready"),
      processing: cell("c-processing num", "Processing"), failed: cell("c-failed num", "Failed"),
      total: cell("c-total num", "Total"), workers: cell("c-workers num", "Workers"),
      limits: cell("c-limits", "Limits"), actions: cell("actions"),
    };
    tr.c.name.append(h("button", { type: "button", class: "link", title: "Show this queue's tasks", onclick: () => this.onPick(name) }, name));
    tr.c.state.append(h("span", { class: "pill" }));
    tr.append(...Object.values(tr.c));
    return tr;
  }

  button(row) {
    const action = row.paused ? "resume" : "pause";
    const readOnly = this.role !== "admin";
    const hint = row.paused ? "Start this queue's tasks again" : "Start none of this queue's tasks until resumed; running ones finish";
    return h("button", {
      type: "button", class: `btn btn-small ${row.paused ? "btn-retry" : ""}`, dataset: { action },
      disabled: readOnly || this.busy.has(row.name), title: readOnly ? READ_ONLY : hint,
      onclick: () => this.act(row.name, action),
    }, row.paused ? "Resume" : "Pause");
  }

  fill(tr, row) {
    tr.classList.toggle("paused", row.paused);
    const pill = tr.c.state.firstChild;
    pill.dataset.state = row.paused ? "paused" : "running";
    setText(pill, row.paused ? "Paused" : "Running");
    // Ready tasks no live worker here has a handler for: they wait, unclaimed, for one.
    const unhandled = Object.entries(row.unhandled || {});
    const stuck = unhandled.reduce((sum, [, n]) => sum + n, 0);
    setText(tr.c.ready, stuck ? `${num(row.ready)} · ${num(stuck)} no handler` : num(row.ready));
    tr.c.ready.classList.toggle("held", row.paused && row.ready > 0);
    tr.c.ready.classList.toggle("bad", stuck > 0);
    const held = row.paused && row.ready > 0 ? "held while paused · " : "";
    const nobody = stuck ? `waiting for a worker with a handler: ${unhandled.map(([type, n]) => `${type} (${num(n)})`).join(", ")} · ` : "";
    setAttr(tr.c.ready, "title", `${held}${nobody}${num(row.pending)} pending · ${num(row.delayed)} waiting (scheduled or retry backoff)`);
    setText(tr.c.processing, num(row.processing));
    setText(tr.c.failed, num(row.failed));
    tr.c.failed.classList.toggle("bad", row.failed > 0);
    setText(tr.c.total, num(row.total));
    setText(tr.c.workers, num(row.workers));
    const stranded = row.workers === 0 && row.ready > 0;
    tr.c.workers.classList.toggle("bad", stranded);
    setAttr(tr.c.workers, "title", stranded ? "No live worker serves this queue: its ready tasks wait" : "Live workers serving this queue");
    setText(tr.c.limits, limitsText(row));
    setAttr(tr.c.limits, "title", limitsTitle(row));
    tr.c.limits.classList.toggle("muted", !row.rate_limit && !row.max_concurrency);
    const key = `${row.paused}|${this.role}|${this.busy.has(row.name)}`;
    if (tr.buttonKey !== key) {
      tr.buttonKey = key;
      tr.c.actions.replaceChildren(this.button(row));
    }
  }

  render() {
    const rows = [...this.rows.values()];
    for (const [name, tr] of this.elements) {
      if (!this.rows.has(name)) {
        tr.remove();
        this.elements.delete(name);
      }
    }
    rows.forEach((row, index) => {
      let tr = this.elements.get(row.name);
      if (!tr) {
        tr = this.cells(row.name);
        tr.classList.toggle("selected", row.name === this.selected);
        this.elements.set(row.name, tr);
      }
      this.fill(tr, row);
      if (this.body.children[index] !== tr) this.body.insertBefore(tr, this.body.children[index] || null);
    });
    const paused = rows.filter((row) => row.paused).length;
    const ready = rows.reduce((sum, row) => sum + row.ready, 0);
    setText(this.subtitle, `${rows.length} queue${rows.length === 1 ? "" : "s"}${paused ? ` · ${paused} paused` : ""} · ${num(ready)} ready`);
  }
}
