// Hand-made SVG charts: a multi-series line chart (gaps where a bucket has no data) and
// a calendar heatmap. Drawn at the container's width and redrawn when it changes size.
// Colours come from CSS classes (`.s0`…`.s7`, `.lv0`…`.lv4`), so the theme applies.

import { h, s, clear } from './dom.js';
import { t } from './i18n.js';

const PALETTE = 8;

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Redraws `draw(width)` into `box` now and whenever the box changes width. */
function responsive(box, draw) {
  let last = -1;
  const redraw = () => {
    const w = Math.floor(box.clientWidth);
    if (w === last || w <= 0) return;
    last = w;
    clear(box);
    draw(w);
  };
  const ro = new ResizeObserver(redraw);
  ro.observe(box);
  requestAnimationFrame(redraw);
  return () => ro.disconnect();
}

/**
 * lineChart(series, { format, height, yMax }) → element with an SVG and a legend.
 * series: [{ name, points: [{ ts, label, value|null }] }]
 */
export function lineChart(series, opts = {}) {
  const format = opts.format || String;
  const height = opts.height || 220;
  const wrap = h('div', { class: 'chart' });
  const plot = h('div', { class: 'chart-plot' });
  wrap.appendChild(plot);
  const labels = (series[0] && series[0].points.map((p) => p.label)) || [];
  const n = labels.length;
  let max = 0;
  for (const se of series) for (const p of se.points) if (p.value !== null && p.value > max) max = p.value;
  const yMax = opts.yMax || (opts.integer ? Math.ceil(niceMax(max) / 4) * 4 : niceMax(max));
  const short = opts.shortLabel || ((l) => l);

  responsive(plot, (width) => {
    const m = { l: 46, r: 10, t: 10, b: 24 };
    const iw = Math.max(10, width - m.l - m.r);
    const ih = height - m.t - m.b;
    const x = (i) => m.l + (n <= 1 ? iw / 2 : (i * iw) / (n - 1));
    const y = (v) => m.t + ih - (v / yMax) * ih;
    const svg = s('svg', { class: 'chart-svg', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': opts.label || '' });
    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      svg.appendChild(s('line', { class: 'grid', x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }));
      svg.appendChild(s('text', { class: 'axis', x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v, true)));
    }
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(iw / 70))));
    labels.forEach((l, i) => {
      if (i % every !== 0) return;
      svg.appendChild(s('text', { class: 'axis', x: x(i), y: height - 6, 'text-anchor': n > 1 && i === 0 ? 'start' : 'middle' }, short(l)));
    });
    series.forEach((se, si) => {
      let d = '';
      let open = false;
      se.points.forEach((p, i) => {
        if (p.value === null || p.value === undefined) {
          open = false;
          return;
        }
        d += `${open ? 'L' : 'M'}${x(i).toFixed(1)},${y(p.value).toFixed(1)}`;
        const prev = se.points[i - 1];
        const next = se.points[i + 1];
        const lonely = (!prev || prev.value === null) && (!next || next.value === null);
        if (lonely) svg.appendChild(s('circle', { class: `dot s${si % PALETTE}`, cx: x(i), cy: y(p.value), r: 2.5 }));
        open = true;
      });
      if (d) svg.appendChild(s('path', { class: `line s${si % PALETTE}`, d }));
    });
    // One invisible column per bucket carries a tooltip with every series' value.
    const colW = n <= 1 ? iw : iw / (n - 1);
    labels.forEach((l, i) => {
      const lines = series.map((se) => `${se.name}: ${se.points[i].value === null ? t('common.none') : format(se.points[i].value)}`);
      svg.appendChild(s('rect', { class: 'hit', x: x(i) - colW / 2, y: m.t, width: colW, height: ih },
        s('title', null, [l, ...lines].join('\n'))));
    });
    plot.appendChild(svg);
  });

  if (series.length > 1 || opts.legend) {
    wrap.appendChild(h('ul', { class: 'legend' }, series.map((se, si) => h('li', null,
      h('span', { class: `swatch s${si % PALETTE}` }), se.name))));
  }
  return wrap;
}

function ymd(date) {
  return date.toISOString().slice(0, 10);
}

/**
 * Calendar heatmap of the last 53 weeks ending `today` ("YYYY-MM-DD" in the chosen zone).
 * days: [{ date, value }]
 */
export function heatmap(days, today, opts = {}) {
  const format = opts.format || String;
  const values = new Map(days.map((d) => [d.date, d.value]));
  const max = Math.max(0, ...days.map((d) => d.value));
  const end = new Date(`${today}T00:00:00Z`);
  const weekday = (end.getUTCDay() + 6) % 7; // Monday = 0
  const start = new Date(end.getTime() - (52 * 7 + weekday) * 86400000);
  const cell = 12;
  const gap = 3;
  const left = 28;
  const top = 16;
  const weeks = 53;
  const width = left + weeks * (cell + gap);
  const height = top + 7 * (cell + gap);
  const svg = s('svg', { class: 'heatmap', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': opts.label || '' });
  const month = new Intl.DateTimeFormat(opts.locale, { month: 'short', timeZone: 'UTC' });
  const wd = new Intl.DateTimeFormat(opts.locale, { weekday: 'short', timeZone: 'UTC' });
  [0, 2, 4].forEach((r) => {
    const d = new Date(Date.UTC(2024, 0, 1 + r)); // 2024-01-01 was a Monday
    svg.appendChild(s('text', { class: 'axis', x: 0, y: top + r * (cell + gap) + cell - 2 }, wd.format(d)));
  });
  let lastMonth = -1;
  for (let i = 0; ; i++) {
    const d = new Date(start.getTime() + i * 86400000);
    if (d > end) break;
    const col = Math.floor(i / 7);
    const row = i % 7;
    if (row === 0 && d.getUTCMonth() !== lastMonth && col < weeks - 1) {
      lastMonth = d.getUTCMonth();
      svg.appendChild(s('text', { class: 'axis', x: left + col * (cell + gap), y: 10 }, month.format(d)));
    }
    const key = ymd(d);
    const v = values.get(key) || 0;
    const level = v <= 0 || max <= 0 ? 0 : Math.min(4, 1 + Math.floor((v / max) * 3.999));
    svg.appendChild(s('rect', {
      class: `day lv${level}`, x: left + col * (cell + gap), y: top + row * (cell + gap), width: cell, height: cell, rx: 2,
      dataset: { date: key },
    }, s('title', null, `${key}: ${format(v)}`)));
  }
  const legend = h('div', { class: 'heat-legend muted small' }, t('dash.heatmap.less'),
    [0, 1, 2, 3, 4].map((l) => h('span', { class: `heat-swatch lv${l}` })), t('dash.heatmap.more'));
  return h('div', { class: 'heat-wrap' }, h('div', { class: 'heat-scroll' }, svg), legend);
}

/** Horizontal bars in HTML: [{ label, value, sub }]. */
export function bars(items, opts = {}) {
  const format = opts.format || String;
  const max = Math.max(1, ...items.map((i) => i.value));
  return h('ul', { class: 'bars' }, items.map((it) => {
    const fill = h('span', { class: `bar-fill ${it.kind ? `bar-${it.kind}` : ''}` });
    fill.style.width = `${(100 * it.value) / max}%`;
    return h('li', null,
      h('span', { class: 'bar-label mono', title: it.title || '' }, it.label),
      h('span', { class: 'bar-track' }, fill),
      h('span', { class: 'bar-value' }, format(it.value)));
  }));
}
