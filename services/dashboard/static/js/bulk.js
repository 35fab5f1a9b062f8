// Bulk actions (SPEC section 10): retry, cancel or purge the selected rows, or every task that
// matches the filters. Each asks first, naming the count, then shows what was done and skipped.

import { ApiError, request } from "./api.js";
import { $, h, setText, toast } from "./dom.js";
import { CANCELLABLE, num, RETRYABLE } from "./format.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);

const ACTIONS = {
  retry: {
    verb: "Retry", done: "queued again", applies: (s) => RETRYABLE.has(s),
    what: "Failed and cancelled tasks run again with a fresh retry budget; their history is kept.",
  },
  cancel: {
    verb: "Cancel", done: "cancelled", danger: true, applies: (s) => CANCELLABLE.has(s) || s === "processing",
    what: "Pending, scheduled, retrying and waiting tasks end cancelled; running ones are asked to stop.",
  },
  purge: {
    verb: "Purge", done: "purged", danger: true, applies: (s) => FINAL.has(s),
    what: "Completed, failed and cancelled tasks are deleted with their history. This cannot be undone.",
  },
};

// The answer's skip reasons, as the page words them.
const REASONS = {
  not_found: "not found",
  invalid_status: "not in a status it applies to",
  unique_conflict: "unique key taken",
  dependency_unmet: "dependency failed",
  awaited_by_dependent: "still needed by a waiting task",
  duplicate: "listed twice",
  error: "broken record",
};

const plural = (n, word = "task") => `${num(n)} ${word}${n === 1 ? "" : "s"}`;

/** The one-line summary of a bulk answer: "3 cancelled · 2 skipped (2 not in a status ...)". */
export function summary(action, answer) {
  const parts = Object.entries(answer.skipped).filter(([, n]) => n > 0);
  const skipped = parts.reduce((sum, [, n]) => sum + n, 0);
  let text = `${plural(answer.acted)} ${ACTIONS[action].done}`;
  if (answer.cancel_requested) text += ` (${num(answer.cancel_requested)} running, asked to stop)`;
  if (skipped) text += ` · ${num(skipped)} skipped (${parts.map(([r, n]) => `${num(n)} ${REASONS[r] || r}`).join(", ")})`;
  return text;
}

export class BulkActions {
  constructor({ table, bar, dialog }) {
    Object.assign(this, { table, bar, dialog });
    this.role = "read";
    this.busy = false;
    this.count = $("#bulk-count", bar);
    this.result = $("#bulk-result", bar);
    for (const button of bar.querySelectorAll("button[data-bulk]")) {
      button.addEventListener("click", () => this.start(button.dataset.bulk, button.dataset.scope));
    }
    table.onSelect = () => this.render();
  }

  setRole(role) {
    this.role = role;
    this.render();
  }

  render() {
    const selected = this.table.selected.size;
    setText(this.count, selected ? `${plural(selected)} selected` : "No tasks selected");
    const readOnly = this.role !== "admin";
    for (const button of this.bar.querySelectorAll("button[data-bulk]")) {
      const none = button.dataset.scope === "selection" && selected === 0;
      button.disabled = readOnly || this.busy || none;
      button.title = readOnly ? "This API key may only read" : button.dataset.hint || "";
    }
  }

  /** What a filtered action covers, in words: "failed tasks in queue media of type resize". */
  describeFilter() {
    const { status, queue, type } = this.table.filters;
    return [
      status ? `${status} tasks` : "tasks of every status",
      queue && `in queue ${queue}`,
      type && `of type ${type}`,
    ].filter(Boolean).join(" ");
  }

  filterBody() {
    const { status, queue, type } = this.table.filters;
    const filter = {};
    if (status) filter.status = status;
    if (queue) filter.queue = queue;
    if (type) filter.type = type;
    return filter;
  }

  async start(action, scope) {
    if (this.busy) return;
    const spec = ACTIONS[action];
    let count, question, detail;
    if (scope === "selection") {
      const ids = [...this.table.selected];
      const rows = ids.map((id) => this.table.rows.get(id)).filter(Boolean);
      const apply = rows.filter((row) => spec.applies(row.status)).length;
      count = ids.length;
      question = `${spec.verb} ${plural(count, "selected task")}?`;
      detail = apply < count ? `${num(apply)} of them can be ${spec.done}; the others will be skipped.` : "";
      if (!(await this.confirm(action, question, detail, count))) return;
      await this.run(action, { ids });
      return;
    }
    const filter = this.filterBody();
    try {
      const params = new URLSearchParams(filter);
      const found = await request(`/api/bulk/matching?${params}`);
      count = found.count;
      if (count === 0) {
        toast(`No ${this.describeFilter()} to ${action}`);
        return;
      }
      question = `${spec.verb} ${found.exact ? "all" : "up to"} ${plural(count)}?`;
      detail = `Every one of the ${this.describeFilter()}.`;
    } catch (error) {
      toast(error instanceof ApiError ? error.message : String(error), "error");
      return;
    }
    if (!(await this.confirm(action, question, detail, count))) return;
    await this.run(action, { filter });
  }

  /** The confirmation dialog; resolves true when the operator confirms. */
  confirm(action, question, detail, count) {
    const spec = ACTIONS[action];
    const yes = $("#bulk-yes", this.dialog);
    setText($("#bulk-title", this.dialog), question);
    setText($("#bulk-what", this.dialog), spec.what);
    setText($("#bulk-detail", this.dialog), detail);
    $("#bulk-detail", this.dialog).hidden = !detail;
    setText(yes, `${spec.verb} ${plural(count)}`);
    yes.className = `btn ${spec.danger ? "btn-danger" : "btn-primary"}`;
    yes.dataset.action = action;
    this.dialog.returnValue = "";
    this.dialog.showModal();
    $("#bulk-no", this.dialog).focus();
    return new Promise((resolve) => {
      this.dialog.addEventListener("close", () => resolve(this.dialog.returnValue === "yes"), { once: true });
    });
  }

  /** Send the action (following the cursor of a filter to the end) and show the answer. */
  async run(action, body) {
    this.busy = true;
    this.render();
    const total = { acted: 0, cancel_requested: 0, skipped: {} };
    setText(this.result, `${ACTIONS[action].verb}…`);
    try {
      let cursor = null;
      do {
        const answer = await request("/api/tasks/bulk", { method: "POST", body: { action, ...body, ...(cursor ? { cursor } : {}) } });
        total.acted += answer.acted;
        total.cancel_requested += answer.cancel_requested;
        for (const [reason, n] of Object.entries(answer.skipped)) total.skipped[reason] = (total.skipped[reason] || 0) + n;
        cursor = body.filter ? answer.cursor : null;
        if (cursor) setText(this.result, `${ACTIONS[action].verb}… ${num(total.acted)} so far`);
      } while (cursor);
      const text = summary(action, total);
      setText(this.result, text);
      this.result.dataset.action = action;
      toast(text);
      this.table.selected.clear();
    } catch (error) {
      // What earlier pages of a filter did stays done: say so with the error.
      setText(this.result, total.acted ? `${summary(action, total)} · then stopped` : "");
      toast(error instanceof ApiError ? error.message : String(error), "error");
    } finally {
      this.busy = false;
      this.table.reload();
      this.render();
    }
  }
}
