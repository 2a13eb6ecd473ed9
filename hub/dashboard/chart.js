// The time chart (uPlot, the hub's own copy): counts over time for the selected area, one line per
// source · category. A period the disclosure layer suppressed is null, drawn as a gap, never as 0;
// a period with no row at all is a true 0. The slider's period is marked by a vertical line.
"use strict";

const SERIES_COLOURS = ["#1f6feb", "#d94801", "#2e7d32", "#8e24aa", "#c62828", "#00838f", "#6d4c41", "#f9a825", "#455a64", "#ad1457"];
const chartState = { plot: null, current: null };

// rows: the cube's rows for one zone (start, source, category, n, suppressed); xs: every period's start.
function chartSeries(rows, xs) {
  const index = new Map(xs.map((x, i) => [x, i]));
  const series = new Map();
  for (const r of rows) {
    const label = `${r.source} · ${r.category}`;
    if (!series.has(label)) series.set(label, xs.map(() => 0));
    const i = index.get(r.start);
    if (i === undefined) continue;
    const values = series.get(label);
    values[i] = r.n === null || values[i] === null ? null : values[i] + r.n;
  }
  // The busiest series first, at most ten lines: a legend an analyst can read.
  const total = (v) => v.reduce((a, b) => a + (b || 0), 0);
  return [...series.entries()].sort((a, b) => total(b[1]) - total(a[1])).slice(0, 10);
}

function drawChart({ title, rows, xs, tz, bucket, current }) {
  const box = document.getElementById("chart");
  const series = chartSeries(rows, xs);
  if (chartState.plot) { chartState.plot.destroy(); chartState.plot = null; }
  box.replaceChildren();
  document.getElementById("chart-title").textContent = title;
  let points = 0;
  let gaps = 0;
  for (const [, values] of series) for (const v of values) { if (v === null) gaps += 1; else points += 1; }
  box.dataset.points = String(points);
  box.dataset.gaps = String(gaps);
  box.dataset.series = String(series.length);
  const status = document.getElementById("chart-status");
  if (!series.length || !xs.length) { status.textContent = "No data for this area."; return; }
  status.textContent = `${points} served periods, ${gaps} suppressed (under k: gaps, not zeros); per ${bucket}, dates in ${tz}.`;
  chartState.current = current;
  const opts = {
    width: Math.max(320, box.clientWidth || 600),
    height: 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
    // One period alone: a day either side, or uPlot would stretch it over years.
    scales: { x: { time: true, ...(xs.length === 1 ? { range: [xs[0] - 86400, xs[0] + 86400] } : {}) }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    // ISO dates in the city's time zone on the axis (not the browser's locale or zone).
    axes: [{ values: (u, splits) => splits.map((ts) => new Date(ts * 1000).toLocaleDateString("sv-SE", { timeZone: tz })), space: 80,
      // Few periods: one tick per period start (weeks on their Mondays), never between two.
      ...(xs.length <= 12 ? { splits: () => xs } : {}) },
      { label: `count per ${bucket}`, size: 56 }],
    series: [
      { label: "period" },
      ...series.map(([label], i) => ({
        label, stroke: SERIES_COLOURS[i % SERIES_COLOURS.length], width: 2, spanGaps: false,
        points: { show: true, size: 5 },
      })),
    ],
    hooks: { draw: [(u) => markCurrent(u)] },
  };
  chartState.plot = new uPlot(opts, [xs, ...series.map(([, v]) => v)], box);
}

function markCurrent(u) {
  const t = chartState.current;
  if (t === null || t === undefined) return;
  const x = u.valToPos(t, "x", true);
  const { ctx } = u;
  ctx.save();
  ctx.strokeStyle = "#14202e";
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  ctx.moveTo(x, u.bbox.top);
  ctx.lineTo(x, u.bbox.top + u.bbox.height);
  ctx.stroke();
  ctx.restore();
}

function chartMark(t) {
  chartState.current = t;
  if (chartState.plot) chartState.plot.redraw(false);
}
