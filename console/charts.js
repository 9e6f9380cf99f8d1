// Line charts drawn on <canvas>, no library: one or more series of (time, value) points over a fixed
// window, the y axis scaled to the data, colours read from the page's theme variables.
"use strict";

const Charts = (() => {
  const PALETTE = ["--accent", "--ok", "--warn", "--danger", "--kw"];

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function formatTick(value) {
    if (value === 0) return "0";
    if (Math.abs(value) >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + "k";
    if (Math.abs(value) < 0.01) return value.toExponential(0);
    return String(Number(value.toPrecision(3)));
  }

  // Draws `series` ([{name, points: [[ms, value]...]}]) into `canvas` for the window ending `now`.
  function draw(canvas, series, windowMs, now) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 320;
    const height = canvas.clientHeight || 140;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 40, right = 6, top = 6, bottom = 18;
    const plotW = width - left - right, plotH = height - top - bottom;
    const start = now - windowMs;
    let max = 0;
    for (const s of series) for (const [t, v] of s.points) if (t >= start && Number.isFinite(v)) max = Math.max(max, v);
    max = niceMax(max);
    const fg = cssVar("--muted");
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = fg;
    ctx.strokeStyle = cssVar("--line");
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(width - right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      ctx.fillText(formatTick((max * i) / 4), left - 4, y);
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText("-" + Math.round(windowMs / 60000) + " min", left, top + plotH + 3);
    ctx.textAlign = "right";
    ctx.fillText("now", width - right, top + plotH + 3);
    series.forEach((s, index) => {
      ctx.strokeStyle = cssVar(PALETTE[index % PALETTE.length]);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.fillStyle = ctx.strokeStyle;
      // A point with no neighbour to join (one sample between gaps) is drawn as a dot.
      const visible = s.points.map(([t, v]) => t >= start && Number.isFinite(v));
      s.points.forEach(([t, v], i) => {
        if (!visible[i]) return;
        const x = left + ((t - start) / windowMs) * plotW;
        const y = top + plotH - (v / max) * plotH;
        if (i > 0 && visible[i - 1]) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        if (!visible[i - 1] && !visible[i + 1]) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
      });
      ctx.stroke();
    });
  }

  return { draw, palette: PALETTE, cssVar };
})();
