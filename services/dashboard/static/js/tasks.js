// The task table: a page read from /api/tasks, kept current by the rows each update carries.

import { ApiError, request } from "./api.js";
import { h, setAttr, setText, toast } from "./dom.js";
import { ago, CANCELLABLE, fullTime, RETRYABLE, shortId, title } from "./format.js";

const PAGE = 50;
const MAX_LIMIT = 200;
const RELOAD_EVERY_MS = 3000;

/** `row` is an older state of the task than `than` (by its last update, in ms). */
const isOlder = (row, than) => Boolean(than) && row.updated < than.updated;

const newestFirst = (a, b) => b.created - a.created || (b.id < a.id ? -1 : b.id > a.id ? 1 : 0);

/** Retry and Cancel, shared by the table and the details drawer. */
export async function act(action, id) {
  try {
    const reply = await request(`/api/tasks/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    const stopping = reply.task?.status === "processing"; // a running task: its worker stops it
    toast(action === "retry" ? `Task ${shortId(id)} queued again` : stopping ? `Stopping task ${shortId(id)}…` : `Task ${shortId(id)} cancelled`);
    return reply.task;
  } catch (error) {
    toast(error instanceof ApiError ? error.message : String(error), "error");
    return null;
  }
}

/** A button for the action a row allows now (or null). Cancel asks once more before acting. */
export function actionButton(row, role, onDone, small = true) {
  const size = small ? " btn-small" : "";
  const readOnly = role !== "admin";
  const hint = readOnly ? "This API key may only read" : null;
  if (RETRYABLE.has(row.status)) {
    return h("button", {
      type: "button", class: `btn btn-retry${size}`, disabled: readOnly, title: hint || "Run this task again with a fresh retry budget",
      dataset: { action: "retry" },
      onclick: async (event) => {
        event.stopPropagation();
        event.currentTarget.disabled = true;
        onDone(await act("retry", row.id));
      },
    }, "Retry");
  }
  const running = row.status === "processing"; // SPEC section 10: its worker interrupts it
  if (running && row.cancel_requested) {
    return h("button", { type: "button", class: `btn btn-cancel${size}`, disabled: true, title: "Cancel requested: its worker is stopping it" }, "Stopping…");
  }
  if (CANCELLABLE.has(row.status) || running) {
    return h("button", {
      type: "button", class: `btn btn-cancel${size}`, disabled: readOnly, title: hint || "Cancel this task",
      dataset: { action: "cancel" },
      onclick: async (event) => {
        event.stopPropagation();
        const button = event.currentTarget;
        if (!button.classList.contains("confirm")) {
          button.classList.add("confirm");
          button.textContent = "Confirm";
          setTimeout(() => { button.classList.remove("confirm"); button.textContent = "Cancel"; }, 3000);
          return;
        }
        button.disabled = true;
        onDone(await act("cancel", row.id));
      },
    }, "Cancel");
  }
  return null;
}

export class TaskTable {
  constructor({ body, empty, more, subtitle, onOpen, selectPage }) {
    Object.assign(this, { body, empty, more, subtitle, onOpen });
    this.role = "read";
    this.filters = { status: "", type: "", queue: "" };
    this.limit = PAGE;
    this.rows = new Map();
    this.order = [];
    this.elements = new Map();
    this.hasMore = false;
    this.generation = 0;
    this.inFlight = false;
    this.during = new Map(); // rows from updates that arrive while a read is in flight
    this.loaded = false;
    this.lastLoad = 0;
    this.reloadTimer = null;
    this.dirty = true;
    this.selected = new Set(); // ids ticked for a bulk action (bulk.js), kept to rows shown
    this.onSelect = null;
    this.selectPage = selectPage || null;
    selectPage?.addEventListener("change", () => {
      for (const id of this.order) {
        if (selectPage.checked) this.selected.add(id);
        else this.selected.delete(id);
      }
      for (const tr of this.elements.values()) tr.row = null;
      this.dirty = true;
      this.onChange?.();
    });
    more.addEventListener("click", () => {
      this.limit = Math.min(MAX_LIMIT, this.limit + PAGE);
      this.reload();
    });
  }

  setFilters(filters) {
    this.filters = { ...this.filters, ...filters };
    this.limit = PAGE;
    this.selected.clear();
    this.rows.clear();
    this.order = [];
    this.loaded = false;
    this.dirty = true;
    this.reload();
  }

  matches(row) {
    const { status, type, queue } = this.filters;
    return (!status || row.status === status) && (!type || row.type === type) && (!queue || row.queue === queue);
  }

  async reload() {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = null;
    const params = new URLSearchParams({ limit: String(this.limit) });
    if (this.filters.status) params.set("status", this.filters.status);
    if (this.filters.type) params.set("type", this.filters.type);
    if (this.filters.queue) params.set("queue", this.filters.queue);
    this.lastLoad = Date.now();
    const generation = ++this.generation;
    this.inFlight = true;
    this.during.clear();
    try {
      const page = await request(`/api/tasks?${params}`);
      if (generation !== this.generation) return; // a newer read (other filters) is on its way
      // Rows that updates brought while this read was under way are at least as fresh.
      const rows = new Map(page.tasks.map((row) => [row.id, row]));
      for (const row of this.during.values()) {
        const read = rows.get(row.id);
        if (!read || read.updated <= row.updated) rows.set(row.id, row);
      }
      this.during.clear();
      this.inFlight = false;
      const kept = [...rows.values()].filter((row) => this.matches(row)).sort(newestFirst);
      this.rows = new Map(kept.slice(0, this.limit).map((row) => [row.id, row]));
      this.order = [...this.rows.keys()];
      this.hasMore = Boolean(page.next_cursor) || kept.length > this.limit;
      this.loaded = true;
      this.dirty = true;
      this.onChange?.();
    } catch (error) {
      if (generation === this.generation) this.inFlight = false;
      if (!(error instanceof ApiError && error.status === 401)) toast(`Cannot list tasks: ${error.message}`, "error");
    }
  }

  /** Re-read the page soon (at most every few seconds), when updates carried fewer rows than changed. */
  reloadSoon() {
    if (this.reloadTimer) return;
    const wait = Math.max(0, this.lastLoad + RELOAD_EVERY_MS - Date.now());
    this.reloadTimer = setTimeout(() => this.reload(), wait);
  }

  /** Apply changed rows from an update: refresh, insert in created order, or drop. */
  apply(rows) {
    let changed = false;
    for (const row of rows) {
      if (this.inFlight && !isOlder(row, this.during.get(row.id))) this.during.set(row.id, row);
      const known = this.rows.has(row.id);
      if (known && !this.matches(row)) {
        this.rows.delete(row.id);
        changed = true;
      } else if (known) {
        const old = this.rows.get(row.id);
        // An action's answer can arrive after the live update that followed it (a retried
        // task handed over, run and completed before the retry call returned): never step
        // a row back to an older state.
        if (!isOlder(row, old) && (old.updated !== row.updated || old.status !== row.status || old.progress !== row.progress)) {
          this.rows.set(row.id, row);
          changed = true;
        }
      } else if (this.matches(row)) {
        const last = this.rows.get(this.order[this.order.length - 1]);
        if (this.rows.size < this.limit || !last || newestFirst(row, last) < 0) {
          this.rows.set(row.id, row);
          changed = true;
        }
      }
    }
    if (!changed) return;
    this.order = [...this.rows.values()].sort(newestFirst).map((row) => row.id);
    for (const id of this.order.splice(this.limit)) {
      this.rows.delete(id);
      this.hasMore = true;
    }
    this.dirty = true;
  }

  upsert(row) {
    if (row) this.apply([row]);
  }

  cells(row) {
    const cell = (cls) => h("td", { class: cls });
    const tr = h("tr", { dataset: { id: row.id }, tabindex: "0" });
    tr.c = {
      select: cell("c-select"),
      status: cell("c-status"), type: cell("c-type"), queue: cell("c-queue"), id: cell("c-id id"), prio: cell("c-prio num"),
      attempts: cell("c-attempts num"), created: cell("c-created time"), updated: cell("c-updated time"),
      error: cell("c-error err"), actions: cell("actions"),
    };
    tr.c.select.append(h("input", {
      type: "checkbox", class: "row-select", "aria-label": `Select task ${shortId(row.id)}`,
      onclick: (event) => event.stopPropagation(),
      onchange: (event) => this.select(row.id, event.target.checked),
    }));
    tr.c.status.append(h("span", { class: "pill" }), h("span", { class: "progress", hidden: true }, h("span", { class: "progress-fill" })));
    tr.c.queue.append(h("span", { class: "queue-tag" }));
    tr.c.prio.append(h("span", { class: "prio" }));
    tr.append(...Object.values(tr.c));
    tr.addEventListener("click", () => this.onOpen(row.id));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter") this.onOpen(row.id);
    });
    return tr;
  }

  fill(tr, row) {
    if (tr.row === row) return;
    const previous = tr.row;
    tr.row = row;
    const box = tr.c.select.firstChild;
    box.checked = this.selected.has(row.id);
    box.disabled = this.role !== "admin";
    tr.classList.toggle("selected", box.checked);
    const pill = tr.c.status.firstChild;
    pill.dataset.status = row.status;
    setText(pill, title(row.status));
    const bar = tr.c.status.lastChild; // a running task's progress (SPEC section 10)
    bar.hidden = row.status !== "processing" || row.progress == null;
    if (!bar.hidden) {
      bar.firstChild.style.width = `${row.progress}%`;
      setAttr(bar, "title", `${Math.round(row.progress)}%${row.progress_message ? ` · ${row.progress_message}` : ""}`);
    }
    setText(tr.c.type, row.type);
    setText(tr.c.queue.firstChild, row.queue);
    setAttr(tr.c.queue.firstChild, "title", `Queue ${row.queue}`);
    setText(tr.c.id, shortId(row.id));
    setAttr(tr.c.id, "title", row.id);
    const prio = tr.c.prio.firstChild;
    prio.className = `prio prio-${row.priority}`;
    setText(prio, row.priority);
    setText(tr.c.attempts, `${row.retries}/${row.max_retries}`);
    setAttr(tr.c.attempts, "title", "Retries used / allowed");
    setText(tr.c.error, row.error || "");
    setAttr(tr.c.error, "title", row.error || null);
    tr.c.actions.replaceChildren(...[actionButton(row, this.role, (task) => this.upsert(task))].filter(Boolean));
    this.fillTimes(tr, Date.now());
    if (previous && previous.status !== row.status) {
      tr.classList.add("flash");
      setTimeout(() => tr.classList.remove("flash"), 700);
    }
  }

  fillTimes(tr, now) {
    const row = tr.row;
    setText(tr.c.created, ago(row.created, now));
    setAttr(tr.c.created, "title", fullTime(row.created));
    const scheduled = row.status === "scheduled" && row.run_at;
    setText(tr.c.updated, scheduled ? `runs ${ago(row.run_at, now)}` : ago(row.updated, now));
    setAttr(tr.c.updated, "title", fullTime(scheduled ? row.run_at : row.updated));
  }

  tickTimes() {
    const now = Date.now();
    for (const tr of this.elements.values()) this.fillTimes(tr, now);
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    const keep = new Set(this.order);
    for (const [id, tr] of this.elements) {
      if (!keep.has(id)) {
        tr.remove();
        this.elements.delete(id);
      }
    }
    this.order.forEach((id, index) => {
      const row = this.rows.get(id);
      let tr = this.elements.get(id);
      if (!tr) {
        tr = this.cells(row);
        this.elements.set(id, tr);
      }
      this.fill(tr, row);
      if (this.body.children[index] !== tr) this.body.insertBefore(tr, this.body.children[index] || null);
    });
    this.renderSelection();
    this.empty.hidden = this.order.length > 0 || !this.loaded;
    this.more.hidden = !(this.hasMore && this.limit < MAX_LIMIT);
    const { status, type, queue } = this.filters;
    const what = [status && title(status), queue && `queue ${queue}`, type && `type ${type}`].filter(Boolean).join(", ");
    setText(this.subtitle, `${what ? `${what} · ` : ""}newest first · ${this.order.length} shown`);
  }

  /** Tick or untick one row for a bulk action. */
  select(id, on) {
    if (on) this.selected.add(id);
    else this.selected.delete(id);
    const tr = this.elements.get(id);
    if (tr) tr.row = null;
    this.dirty = true;
    this.onChange?.();
  }

  /** Keep the selection to rows shown; the header box says all, some or none of them. */
  renderSelection() {
    // (Not while other filters' rows are being read: the table is empty until they come.)
    if (this.loaded) for (const id of this.selected) if (!this.rows.has(id)) this.selected.delete(id);
    if (this.selectPage) {
      const ticked = this.order.filter((id) => this.selected.has(id)).length;
      this.selectPage.checked = ticked > 0 && ticked === this.order.length;
      this.selectPage.indeterminate = ticked > 0 && ticked < this.order.length;
      this.selectPage.disabled = this.role !== "admin" || this.order.length === 0;
    }
    this.onSelect?.();
  }

  setRole(role) {
    this.role = role;
    for (const tr of this.elements.values()) tr.row = null;
    this.dirty = true;
  }
}
