// The details drawer: one task with its attempts, events and webhook deliveries, kept live.

import { ApiError, request } from "./api.js";
import { $, h, setText } from "./dom.js";
import { ago, duration, fullTime, isoToMs, num, shortId, stamp, title } from "./format.js";
import { actionButton } from "./tasks.js";

const REFRESH_MS = 800;
const RELATED_SHOWN = 100; // dependencies or dependents listed at most (a fan-in can have 1,000)

const EVENT_STATUS = {
  "task.claimed": "processing",
  "task.completed": "completed",
  "task.retrying": "retrying",
  "task.failed": "failed",
  "task.cancelled": "cancelled",
  "task.retried": "pending",
  "task.requeued": "pending",
  "task.pending": "pending",
  "task.recovered": "retrying",
  "task.cancel_requested": "processing",
  "task.released": "pending",
};

const json = (value) => JSON.stringify(value, null, 2);

export class Drawer {
  constructor(root, onAction) {
    this.root = root;
    this.panel = $(".drawer-panel", root);
    this.body = $("#drawer-body", root);
    this.titleEl = $("#drawer-title", root);
    this.status = $("#drawer-status", root);
    this.onAction = onAction;
    this.role = "read";
    this.id = null;
    this.timer = null;
    this.lastLoad = 0;
    for (const el of root.querySelectorAll("[data-close]")) el.addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.id) this.close();
    });
    window.addEventListener("hashchange", () => this.fromHash());
  }

  fromHash() {
    const match = location.hash.match(/^#task=([\w.:-]+)$/);
    if (match && match[1] !== this.id) this.open(match[1]);
    if (!match && this.id) this.close();
  }

  open(id) {
    this.id = id;
    this.data = null;
    if (location.hash !== `#task=${id}`) history.replaceState(null, "", `#task=${id}`);
    setText(this.titleEl, "Loading…");
    setText(this.status, "");
    this.body.replaceChildren();
    this.root.classList.add("open");
    this.root.setAttribute("aria-hidden", "false");
    this.panel.focus();
    this.load();
  }

  close() {
    this.id = null;
    this.root.classList.remove("open");
    this.root.setAttribute("aria-hidden", "true");
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }

  /** An update touched this task (or maybe did): read it again, at most every REFRESH_MS. */
  refreshSoon() {
    if (!this.id || this.timer) return;
    const wait = Math.max(0, this.lastLoad + REFRESH_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.load();
    }, wait);
  }

  async load() {
    const id = this.id;
    if (!id) return;
    this.lastLoad = Date.now();
    try {
      const data = await request(`/api/tasks/${encodeURIComponent(id)}`);
      if (id === this.id) this.render(data);
    } catch (error) {
      if (id !== this.id) return;
      setText(this.titleEl, error instanceof ApiError && error.status === 404 ? "Task not found" : "Cannot load task");
      this.body.replaceChildren(h("p", { class: "muted" }, error.message));
    }
  }

  render(data) {
    this.data = data;
    const t = data.task;
    const row = { id: t.id, status: t.status, cancel_requested: t.cancel_requested };
    setText(this.titleEl, t.type);
    this.status.dataset.status = t.status;
    setText(this.status, title(t.status));
    const copy = navigator.clipboard
      ? h("button", { type: "button", class: "btn btn-quiet btn-small", onclick: () => navigator.clipboard.writeText(t.id) }, "Copy")
      : null;
    const action = actionButton(row, this.role, (task) => {
      this.onAction(task);
      this.load();
    }, false);
    const sections = [
      h("div", { class: "idline" }, h("span", {}, t.id), copy),
      action ? h("div", { class: "drawer-actions" }, action) : null,
      t.status === "processing" && t.progress != null ? this.progress(t) : null,
      this.summary(t, data.attempts.length),
      t.error ? this.section("Last error", h("pre", { class: "code error" }, t.error)) : null,
      data.depends_on?.length ? this.section(`Depends on (${data.depends_on.length})`, this.related(data.depends_on)) : null,
      data.dependents?.length ? this.section(`Dependents (${data.dependents.length})`, this.related(data.dependents)) : null,
      this.section("Payload", h("pre", { class: "code" }, json(t.payload))),
      t.result !== null && t.result !== undefined ? this.section("Result", h("pre", { class: "code" }, json(t.result))) : null,
      data.attempts.length ? this.section(`Attempts (${data.attempts.length})`, this.attempts(data.attempts)) : null,
      this.section("History", this.timeline(data.events)),
      t.webhook || data.webhook_deliveries.length ? this.section("Webhook deliveries", this.deliveries(data.webhook_deliveries)) : null,
    ];
    this.body.replaceChildren(...sections.filter(Boolean));
  }

  section(name, ...content) {
    return h("section", {}, h("h3", { class: "section-title" }, name), ...content);
  }

  summary(t, runs) {
    const items = [
      ["Queue", h("span", { class: "queue-tag" }, t.queue)],
      ["Priority", `${t.priority}${t.priority === 5 ? " (most urgent)" : ""}`],
      ["Retries", `${t.retry_count} of ${t.max_retries} used · ${runs} run${runs === 1 ? "" : "s"}`],
      ["Created", this.when(t.created_at)],
      t.scheduled_for ? ["Scheduled for", this.when(t.scheduled_for)] : null,
      t.started_at ? ["Started", this.when(t.started_at)] : null,
      t.completed_at ? ["Finished", this.when(t.completed_at)] : null,
      t.started_at && t.completed_at ? ["Took", duration(isoToMs(t.completed_at) - isoToMs(t.started_at))] : null,
      ["Updated", this.when(t.updated_at)],
      t.timeout_seconds ? ["Timeout", `${t.timeout_seconds}s`] : null,
      t.webhook ? ["Webhook", t.webhook] : null,
    ].filter(Boolean);
    return h("dl", { class: "kv" }, items.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  /** Dependencies or dependents (SPEC section 11), each a link that opens its own panel. */
  related(list) {
    const shown = list.slice(0, RELATED_SHOWN);
    const more = list.length - shown.length;
    return h(
      "ul",
      { class: "related" },
      shown.map((r) =>
        h("li", {},
          h("a", { href: `#task=${r.id}`, title: r.id },
            h("span", { class: "pill", dataset: { status: r.status || "cancelled" } }, title(r.status || "purged")),
            h("span", { class: "related-id" }, shortId(r.id)),
            r.type ? h("small", {}, r.type) : null)),
      ),
      more > 0 ? h("li", { class: "muted" }, `and ${num(more)} more`) : null,
    );
  }

  /** A running task's progress bar (SPEC section 10), with its handler's message. */
  progress(t) {
    const label = `${Math.round(t.progress)}%${t.progress_message ? ` · ${t.progress_message}` : ""}`;
    const fill = h("span", { class: "progress-fill" });
    fill.style.width = `${t.progress}%`; // through the CSSOM: the page's CSP refuses style attributes
    return h("div", { class: "drawer-progress" },
      h("span", { class: "progress", role: "progressbar", "aria-valuenow": String(t.progress), "aria-valuemin": "0", "aria-valuemax": "100" }, fill),
      h("small", {}, label));
  }

  when(iso) {
    const ms = isoToMs(iso);
    return h("span", { title: fullTime(ms) }, `${stamp(ms)} · ${ago(ms)}`);
  }

  attempts(list) {
    return h(
      "div",
      { class: "attempts" },
      [...list].reverse().map((a) => {
        const took = a.finished_at ? duration(isoToMs(a.finished_at) - isoToMs(a.started_at)) : "running";
        const outcome = a.outcome || "processing";
        return h(
          "div",
          { class: "attempt" },
          h("div", { class: "attempt-head" },
            h("span", {}, h("b", {}, `#${a.number}`), " ", h("span", { class: "pill", dataset: { status: outcome === "lost" || outcome === "requeued" ? "retrying" : outcome } }, title(outcome))),
            h("small", {}, `${a.worker || "unknown worker"} · ${took} · ${ago(isoToMs(a.started_at))}`)),
          a.error ? h("div", { class: "err" }, a.error) : null,
        );
      }),
    );
  }

  timeline(events) {
    return h(
      "ol",
      { class: "timeline" },
      [...events].reverse().map((e) => {
        const name = e.event.replace(/^task\./, "");
        const notes = [
          e.worker && `by ${e.worker}`,
          e.attempt && `attempt ${e.attempt}`,
          e.retry_at && `next try ${ago(isoToMs(e.retry_at))}`,
          e.error,
        ].filter(Boolean).join(" · ");
        return h(
          "li",
          {},
          h("span", { class: "dot", dataset: { status: EVENT_STATUS[e.event] || e.status } }),
          h("span", { class: "what" }, title(name), notes ? h("small", {}, notes) : null),
          h("span", { class: "at", title: fullTime(isoToMs(e.at)) }, stamp(isoToMs(e.at))),
        );
      }),
    );
  }

  deliveries(list) {
    if (!list.length) return h("p", { class: "muted" }, "No delivery yet: it is sent when the task completes or fails for good.");
    return h(
      "table",
      { class: "deliveries" },
      h("thead", {}, h("tr", {}, ["#", "Event", "Result", "Took", "When"].map((c) => h("th", {}, c)))),
      h("tbody", {}, list.map((d) =>
        h("tr", { title: d.url },
          h("td", {}, num(d.attempt)),
          h("td", {}, d.event),
          h("td", {}, h("span", { class: "pill", dataset: { status: d.outcome === "delivered" ? "completed" : d.outcome === "retrying" ? "retrying" : "failed" } },
            d.status_code ? `${d.status_code} ${d.outcome}` : d.outcome), d.error ? h("small", { class: "muted" }, ` ${d.error}`) : null),
          h("td", {}, duration(d.duration_ms)),
          h("td", {}, ago(isoToMs(d.at)))),
      )),
    );
  }
}
