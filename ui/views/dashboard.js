// Dashboard: today's numbers, requests / tokens by model, success rate and latency over
// a chosen period in a chosen time zone, usage per key today, and a yearly heatmap.
// Each panel loads on its own, so one missing endpoint leaves the others working.

import { h, replace } from '../dom.js';
import { t, locale } from '../i18n.js';
import { api, query } from '../api.js';
import { lineChart, heatmap, bars } from '../charts.js';
import {
  loading, empty, errorBox, stateBadge, fmtNum, fmtCompact, fmtRate, fmtMs, field, button,
} from '../widgets.js';

const PERIODS = {
  '24h': { ms: 86400000, bucket: 'hour' },
  '7d': { ms: 7 * 86400000, bucket: 'hour' },
  '30d': { ms: 30 * 86400000, bucket: 'day' },
  '90d': { ms: 90 * 86400000, bucket: 'day' },
  '365d': { ms: 365 * 86400000, bucket: 'week' },
};

function localZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

function zones(current) {
  let list = [];
  try {
    list = Intl.supportedValuesOf('timeZone');
  } catch {
    list = ['UTC', 'Asia/Shanghai', 'Asia/Tokyo', 'Europe/London', 'Europe/Berlin', 'America/New_York', 'America/Los_Angeles'];
  }
  if (!list.includes('UTC')) list = ['UTC', ...list];
  if (!list.includes(current)) list = [current, ...list];
  return list;
}

function todayIn(tz) {
  try {
    return new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
  } catch {
    return new Date().toISOString().slice(0, 10);
  }
}

function statCard(label, value, sub, id) {
  return h('div', { class: 'stat', id }, h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value' }, value), sub ? h('div', { class: 'stat-sub' }, sub) : null);
}

function hasData(series) {
  return series.some((se) => se.points.some((p) => p.value !== null && p.value !== undefined));
}

export function render(root) {
  let tz = localStorage.getItem('gb.tz') || localZone();
  let period = localStorage.getItem('gb.period') || '24h';
  if (!PERIODS[period]) period = '24h';

  const cards = h('div', { class: 'stats', id: 'summary' }, loading());
  const panel = (title, id, wide) => {
    const body = h('div', { class: 'panel-body' }, loading());
    const el = h('section', { class: ['card', 'panel', wide && 'panel-wide'], id }, h('h2', { class: 'card-title' }, title), body);
    return { el, body };
  };
  const pRequests = panel(t('dash.requests'), 'chart-requests', true);
  const pTokens = panel(t('dash.tokensByModel'), 'chart-tokens');
  const pSuccess = panel(t('dash.successRate'), 'chart-success');
  const pLatency = panel(t('dash.latency'), 'chart-latency');
  const pKeys = panel(t('dash.perKey'), 'per-key');
  const pHeat = panel(t('dash.heatmap'), 'heatmap', true);

  async function summary(keysP) {
    replace(cards, loading());
    const [sum, keys] = await Promise.allSettled([api(`/api/stats/summary${query({ tz })}`), keysP]);
    const out = [];
    if (sum.status === 'fulfilled') {
      const d = sum.value.today || {};
      const l = sum.value.last_24h || {};
      out.push(
        statCard(t('dash.today'), fmtNum(d.requests), t('dash.last24') + ': ' + fmtNum(l.requests), 'stat-requests'),
        statCard(t('dash.success'), fmtRate(d.success_rate), [t('dash.ok', { n: fmtNum(d.ok) }), ' · ', t('dash.errors', { n: fmtNum(d.errors) })], 'stat-success'),
        statCard(t('dash.tokens'), fmtCompact(d.tokens), t('dash.last24') + ': ' + fmtCompact(l.tokens), 'stat-tokens'));
    } else if (!sum.reason.unauthorized) {
      out.push(h('div', { class: 'stat stat-wide' }, errorBox(sum.reason)));
    }
    if (keys.status === 'fulfilled') {
      const counts = { active: 0, cooling: 0, invalid: 0, disabled: 0 };
      for (const k of keys.value) counts[k.state] = (counts[k.state] || 0) + 1;
      out.push(statCard(t('dash.keys'), fmtNum(keys.value.length),
        h('span', { class: 'badges' }, Object.entries(counts).filter(([, n]) => n).map(([s, n]) => [stateBadge(s), ' ', fmtNum(n), ' '])), 'stat-keys'));
    }
    replace(cards, out);
  }

  async function series(p, metric, groupBy, format) {
    replace(p.body, loading());
    const { ms, bucket } = PERIODS[period];
    const to = Date.now();
    try {
      const r = await api(`/api/stats/timeseries${query({ metric, bucket, from: to - ms, to, tz, group_by: groupBy })}`);
      const list = (r.series || []).filter((se) => se.points && se.points.length);
      if (!list.length || !hasData(list)) {
        replace(p.body, empty(t('dash.nodata')));
        return;
      }
      const fmt = format === 'rate'
        ? (v) => fmtRate(v)
        : format;
      const yMax = format === 'rate' ? 100 : undefined;
      const shortLabel = (l) => {
        const str = String(l);
        if (bucket === 'hour' && str.includes(' ')) return str.slice(str.indexOf(' ') + 1, str.indexOf(' ') + 6);
        if (/^\d{4}-\d{2}-\d{2}$/.test(str)) return str.slice(5);
        return str;
      };
      replace(p.body, lineChart(list, {
        format: fmt, yMax, shortLabel, integer: metric === 'requests' || metric === 'tokens',
        label: p.el.querySelector('h2').textContent, legend: !!groupBy,
      }));
    } catch (err) {
      if (!err.unauthorized) replace(p.body, errorBox(err, () => series(p, metric, groupBy, format)));
    }
  }

  function perKey(keys) {
    if (!keys.length) {
      replace(pKeys.body, empty(t('dash.nokeys')));
      return;
    }
    const items = keys.slice().sort((a, b) => b.usage_today - a.usage_today).slice(0, 12)
      .map((k) => ({ label: k.brief, value: k.usage_today || 0, title: k.note || '', kind: k.state }));
    replace(pKeys.body, bars(items, { format: fmtNum }));
  }

  async function heat() {
    replace(pHeat.body, loading());
    try {
      const r = await api(`/api/stats/heatmap${query({ metric: 'requests', tz })}`);
      replace(pHeat.body, heatmap(r.days || [], todayIn(tz), { locale: locale(), format: fmtNum, label: t('dash.heatmap') }));
    } catch (err) {
      if (!err.unauthorized) replace(pHeat.body, errorBox(err, heat));
    }
  }

  function loadAll() {
    const keysP = api('/api/keys').then((r) => r.keys || []);
    summary(keysP);
    keysP.then(perKey).catch((err) => { if (!err.unauthorized) replace(pKeys.body, errorBox(err)); });
    series(pRequests, 'requests', 'model', fmtCompact);
    series(pTokens, 'tokens', 'model', fmtCompact);
    series(pSuccess, 'success_rate', null, 'rate');
    series(pLatency, 'latency', null, fmtMs);
    heat();
  }

  const tzSel = h('select', { id: 'tz', on: { change: (e) => { tz = e.target.value; localStorage.setItem('gb.tz', tz); loadAll(); } } },
    zones(tz).map((z) => h('option', { value: z }, z)));
  tzSel.value = tz;
  const periodSel = h('select', { id: 'period', on: { change: (e) => { period = e.target.value; localStorage.setItem('gb.period', period); loadAll(); } } },
    Object.keys(PERIODS).map((p) => h('option', { value: p }, t(`dash.p.${p}`))));
  periodSel.value = period;

  root.append(
    h('div', { class: 'page-head' },
      h('h1', null, t('dash.title')),
      h('div', { class: 'controls' }, field(t('dash.period'), periodSel), field(t('dash.tz'), tzSel),
        button('', loadAll, { icon: 'refresh', kind: 'ghost', ariaLabel: t('common.refresh'), title: t('common.refresh') }))),
    cards,
    h('div', { class: 'grid' }, pRequests.el, pTokens.el, pKeys.el, pSuccess.el, pLatency.el, pHeat.el));
  loadAll();
}
