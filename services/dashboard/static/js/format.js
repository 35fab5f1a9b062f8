// Numbers, times and durations as people read them.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export const STATUSES = ["waiting", "pending", "scheduled", "processing", "retrying", "completed", "failed", "cancelled"];
export const RETRYABLE = new Set(["failed", "cancelled"]);
export const CANCELLABLE = new Set(["pending", "scheduled", "retrying", "waiting"]);

export const num = (n) => integer.format(n ?? 0);
export const rate = (n) => decimal.format(n ?? 0);
export const title = (s) => s.charAt(0).toUpperCase() + s.slice(1);
export const shortId = (id) => (id ? id.slice(0, 8) : "");
export const clockTime = (ms) => clock.format(new Date(ms));
export const fullTime = (ms) => (ms ? dateTime.format(new Date(ms)) : "");

/** The time alone for today, the date and time otherwise. */
export function stamp(ms) {
  if (!ms) return "";
  const date = new Date(ms);
  return date.toDateString() === new Date().toDateString() ? clock.format(date) : dateTime.format(date);
}

/** "4s ago", "12m ago", "in 3m" relative to now (ms). */
export function ago(ms, now = Date.now()) {
  if (!ms) return "";
  const delta = Math.round((now - ms) / 1000);
  const future = delta < 0;
  const s = Math.abs(delta);
  let text;
  if (s < 2) return future ? "now" : "just now";
  if (s < 60) text = `${s}s`;
  else if (s < 3600) text = `${Math.floor(s / 60)}m`;
  else if (s < 86400) text = `${Math.floor(s / 3600)}h`;
  else text = `${Math.floor(s / 86400)}d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** 850 ms -> "0.85s", 75 s -> "1m 15s". */
export function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = ms / 1000;
  if (s < 60) return `${decimal.format(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export const isoToMs = (iso) => (iso ? Date.parse(iso) : null);
