// The schedules panel (SPEC section 12): one row per recurring schedule (rule, state, next
// run, last task) with Pause, Resume and Trigger. Read every few seconds; a click on the last
// task opens it in the drawer.

import { ApiError, request } from "./api.js";
import { h, setAttr, setText, toast } from "./dom.js";
import { ago, fullTime, isoToMs, shortId } from "./format.js";

const READ_ONLY = "This API key may only read";
const POLL_MS = 2000;

/** "*\/5 * * * * · Europe/Berlin", or "every 30 s". */
export function ruleText(row) {
  if (row.cron) return row.timezone && row.timezone !== "UTC" ? `${row.cron} · ${row.timezone}` : row.cron;
  const s = row.interval_seconds;
  if (s % 86400 === 0) return `every ${s / 86400} d`;
  if (s % 3600 === 0) return `every ${s / 3600} h`;
  if (s % 60 === 0) return `every ${s / 60} min`;
  return `every ${s} s`;
}

export class Schedules {
  constructor({ body, empty, subtitle, onOpen }) {
    Object.assign(this, { body, empty, subtitle, onOpen });
    this.role = "read";
    this.rows = [];
    this.busy = new Set(); // "<name>|<action>" on its way
    this.timer = null;
  }

  setRole(role) {
    this.role = role;
    this.render();
  }

  start() {
    if (this.timer) return;
    this.load();
    this.timer = setInterval(() => {
      if (!document.hidden) this.load();
    }, POLL_MS);
  }

  async load() {
    try {
      const { schedules } = await request("/api/schedules");
      this.rows = schedules;
      this.render();
    } catch {
      /* the live banner tells about an outage; the next poll tries again */
    }
  }

  async act(name, action) {
    this.busy.add(`${name}|${action}`);
    this.render();
    try {
      const reply = await request(`/api/schedules/${encodeURIComponent(name)}/${action}`, { method: "POST" });
      this.rows = this.rows.map((row) => (row.name === name ? reply.schedule : row));
      const done = { pause: "paused", resume: "resumed", trigger: "triggered" }[action];
      toast(reply.task ? `Schedule ${name} ${done}: task ${shortId(reply.task.id)}` : `Schedule ${name} ${done}`);
    } catch (error) {
      toast(error instanceof ApiError ? error.message : String(error), "error");
    } finally {
      this.busy.delete(`${name}|${action}`);
      this.render();
    }
  }

  button(row, action, label, hint) {
    const readOnly = this.role !== "admin";
    return h("button", {
      type: "button", class: `btn btn-small ${action === "resume" ? "btn-retry" : ""}`, dataset: { action },
      disabled: readOnly || this.busy.has(`${row.name}|${action}`), title: readOnly ? READ_ONLY : hint,
      onclick: () => this.act(row.name, action),
    }, label);
  }

  row(row) {
    const cell = (cls, label, ...children) => h("td", { class: cls, dataset: label ? { label } : {} }, ...children);
    const next = isoToMs(row.next_run_at);
    const last = isoToMs(row.last_run_at);
    const state = h("span", { class: "pill", dataset: { state: row.paused ? "paused" : "running" } }, row.paused ? "Paused" : "Active");
    const lastTask = row.last_task_id
      ? h("button", { type: "button", class: "link id", title: `Open task ${row.last_task_id}`, onclick: () => this.onOpen(row.last_task_id) }, shortId(row.last_task_id))
      : h("span", { class: "muted" }, "—");
    const nextCell = cell("c-next time", "Next run", next ? ago(next) : "—");
    setAttr(nextCell, "title", next ? fullTime(next) : "Paused: no next run");
    const lastCell = cell("c-last", "Last task", lastTask, last ? h("span", { class: "time" }, ` · ${ago(last)}`) : "");
    const tr = h("tr", { dataset: { schedule: row.name }, class: row.paused ? "paused" : "" },
      cell("c-name", "", row.name),
      cell("c-rule", "Rule", h("code", {}, ruleText(row))),
      cell("c-type", "Task", `${row.task.type}${row.task.queue ? ` → ${row.task.queue}` : ""}`),
      nextCell,
      lastCell,
      cell("c-state", "State", state),
      cell("actions", "",
        row.paused
          ? this.button(row, "resume", "Resume", "Fire again from the next tick after now")
          : this.button(row, "pause", "Pause", "Fire no tick until resumed"),
        this.button(row, "trigger", "Trigger", "Fire now: one task, outside the ticks")),
    );
    return tr;
  }

  render() {
    this.body.replaceChildren(...this.rows.map((row) => this.row(row)));
    this.empty.hidden = this.rows.length > 0;
    const paused = this.rows.filter((row) => row.paused).length;
    setText(this.subtitle, this.rows.length
      ? `${this.rows.length} schedule${this.rows.length === 1 ? "" : "s"}${paused ? ` · ${paused} paused` : ""}`
      : "Recurring tasks: cron or interval");
  }
}
