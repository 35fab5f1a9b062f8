// The throughput chart: completed and failed per second, drawn by uPlot (vendored, MIT).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { $, h, setText } from "./dom.js";
import { clockTime, num, rate } from "./format.js";

const KEEP_SECONDS = 15 * 60;
const NOW_SECONDS = 10; // the legend's "now" rate averages the last 10 seconds

/** Resolve a CSS colour (custom properties with light-dark()) to rgb() for the canvas. */
function cssColor(name) {
  const probe = h("span", { class: "sr-only" });
  probe.style.color = `var(${name})`;
  document.body.append(probe);
  const color = getComputedStyle(probe).color;
  probe.remove();
  return color;
}

function withAlpha(rgb, alpha) {
  const parts = rgb.match(/[\d.]+/g) || ["0", "0", "0"];
  return `rgba(${parts[0]}, ${parts[1]}, ${parts[2]}, ${alpha})`;
}

const two = (n) => String(n).padStart(2, "0");

/** "23:30" on whole minutes (or when ticks are a minute apart or more), else "23:30:15". */
function timeLabels(u, splits, axis, space, incr) {
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
    return incr >= 60 || d.getSeconds() === 0 ? hm : `${hm}:${two(d.getSeconds())}`;
  });
}

export class ThroughputChart {
  constructor(container, legend, rangeGroup) {
    this.container = container;
    this.legend = legend;
    this.points = new Map(); // epoch second -> [completed, failed]
    this.to = 0;
    this.range = 300;
    this.plot = null;
    this.hover = null;
    this.dirty = false;
    this.buildLegend();
    rangeGroup.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-seconds]");
      if (!button) return;
      for (const b of rangeGroup.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
      this.range = Number(button.dataset.seconds);
      this.dirty = true;
      this.render();
    });
    new ResizeObserver(() => this.resize()).observe(container);
  }

  buildLegend() {
    const key = (status, label) =>
      h("span", { class: "key", dataset: { status } }, h("span", { class: "swatch" }), label, h("b", {}, h("span", { class: "value" }), h("span", { class: "unit" })));
    this.keys = { completed: key("completed", "Completed"), failed: key("failed", "Failed") };
    this.when = h("span", { class: "when" });
    this.legend.append(this.keys.completed, this.keys.failed, this.when);
  }

  /** Merge a throughput range from the server: every second in [from, to] is authoritative. */
  merge(tp) {
    if (!tp) return;
    for (let s = tp.from; s <= tp.to; s++) this.points.set(s, [0, 0]);
    for (const [s, c, f] of tp.points) this.points.set(s, [c, f]);
    this.to = Math.max(this.to, tp.to);
    if (this.points.size > KEEP_SECONDS + 120) {
      for (const s of this.points.keys()) if (s <= this.to - KEEP_SECONDS) this.points.delete(s);
    }
    this.dirty = true;
  }

  series() {
    const n = this.range;
    const xs = new Array(n);
    const cs = new Array(n);
    const fs = new Array(n);
    for (let i = 0; i < n; i++) {
      const s = this.to - n + 1 + i;
      const p = this.points.get(s);
      xs[i] = s;
      cs[i] = p ? p[0] : 0;
      fs[i] = p ? p[1] : 0;
    }
    return [xs, cs, fs];
  }

  options(width, height) {
    const muted = cssColor("--faint");
    const grid = cssColor("--border");
    const ok = cssColor("--st-completed");
    const bad = cssColor("--st-failed");
    const axis = {
      stroke: muted,
      grid: { stroke: grid, width: 1 },
      ticks: { show: false },
      font: "11px system-ui, sans-serif",
    };
    return {
      width,
      height,
      padding: [10, 22, 0, 0],
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => [0, Math.max(4, Math.ceil((max || 0) * 1.15))] },
      },
      axes: [
        { ...axis, size: 30, space: 64, incrs: [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600], values: timeLabels },
        { ...axis, size: 44, space: 28, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] },
      ],
      series: [
        {},
        { label: "Completed", stroke: ok, width: 1.75, fill: withAlpha(ok, 0.12), points: { show: false }, paths: uPlot.paths.spline() },
        { label: "Failed", stroke: bad, width: 1.5, fill: withAlpha(bad, 0.1), points: { show: false }, paths: uPlot.paths.spline() },
      ],
      hooks: {
        setCursor: [
          (u) => {
            this.hover = u.cursor.idx ?? null;
            this.renderLegend();
          },
        ],
      },
    };
  }

  size() {
    const rect = this.container.getBoundingClientRect();
    return [Math.max(200, Math.floor(rect.width)), Math.max(120, Math.floor(rect.height))];
  }

  resize() {
    if (!this.plot) return;
    const [w, hgt] = this.size();
    if (w !== this.plot.width || hgt !== this.plot.height) this.plot.setSize({ width: w, height: hgt });
  }

  /** Rebuild with the colours of the new theme. */
  restyle() {
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
    this.dirty = true;
    this.render();
  }

  render() {
    if (!this.dirty || !this.to) return;
    this.dirty = false;
    this.data = this.series();
    if (!this.plot) {
      const [w, hgt] = this.size();
      this.plot = new uPlot(this.options(w, hgt), this.data, this.container);
    } else {
      this.plot.setData(this.data);
    }
    this.renderLegend();
    // For people reading the DOM (and for the tests): what the last minute looks like.
    let total = 0;
    let seconds = 0;
    for (let s = this.to - 59; s <= this.to; s++) {
      const p = this.points.get(s);
      if (p && p[0] > 0) {
        total += p[0];
        seconds += 1;
      }
    }
    this.container.dataset.completedLastMinute = String(total);
    this.container.dataset.secondsWithCompletions = String(seconds);
  }

  renderLegend() {
    if (!this.data) return;
    const [xs, cs, fs] = this.data;
    const at = this.hover;
    if (at !== null && at >= 0 && at < xs.length) {
      this.setKey("completed", num(cs[at]), "/s");
      this.setKey("failed", num(fs[at]), "/s");
      setText(this.when, clockTime(xs[at] * 1000));
      return;
    }
    const n = xs.length;
    const from = Math.max(0, n - NOW_SECONDS);
    let c = 0;
    let f = 0;
    for (let i = from; i < n; i++) {
      c += cs[i];
      f += fs[i];
    }
    let totalC = 0;
    let totalF = 0;
    for (let i = 0; i < n; i++) {
      totalC += cs[i];
      totalF += fs[i];
    }
    this.setKey("completed", rate(c / NOW_SECONDS), "/s");
    this.setKey("failed", rate(f / NOW_SECONDS), "/s");
    const label = this.range >= 60 ? `${this.range / 60} min` : `${this.range}s`;
    setText(this.when, `${num(totalC)} completed · ${num(totalF)} failed in ${label}`);
  }

  setKey(name, value, unit) {
    const key = this.keys[name];
    setText($(".value", key), value);
    setText($(".unit", key), unit);
  }
}
