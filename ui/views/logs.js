// Request log: filters (kept in the URL hash), cursor pagination, CSV export, and a
// detail dialog with the attempt chain (which keys were tried, how each one ended).
// Live API sessions still open are listed above it (their record comes when they close).

import { h, clear, replace } from '../dom.js';
import { t } from '../i18n.js';
import { api, query } from '../api.js';
import {
  button, badge, outcomeBadge, loading, empty, errorBox, modal, field,
  fmtNum, fmtMs, fmtTime, fmtBytes, fmtDuration,
} from '../widgets.js';

const OUTCOMES = ['ok', 'client_error', 'upstream_error', 'no_key', 'truncated', 'cancelled'];
const FILTERS = ['from', 'to', 'user', 'key', 'model', 'outcome', 'status', 'stream'];
const LIMIT = 50;

function localInputToMs(v) {
  return v ? String(new Date(v).getTime()) : '';
}

function msToLocalInput(ms) {
  if (!ms) return '';
  const d = new Date(Number(ms));
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function shortTime(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return fmtTime(ms, today
    ? { hour: '2-digit', minute: '2-digit', second: '2-digit' }
    : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

function statusBadge(status) {
  if (status === null || status === undefined) return h('span', { class: 'muted' }, t('common.none'));
  const kind = status < 300 ? 'active' : status < 500 && status !== 429 ? 'cooling' : 'invalid';
  return badge(kind, String(status));
}

/** The detail dialog for one request. */
export async function showDetail(requestId) {
  await modal(t('logs.detail', { id: requestId }), () => {
    const box = h('div', { class: 'detail', id: 'log-detail' }, loading());
    api(`/api/logs/${encodeURIComponent(requestId)}`).then((r) => {
      const tok = r.tokens || {};
      const dl = h('dl', { class: 'kv' },
        [
          [t('logs.col.time'), fmtTime(r.time)],
          [t('logs.user'), r.user || t('common.none')],
          [t('logs.col.route'), r.route],
          [t('logs.model'), r.model],
          [t('logs.stream'), r.stream ? t('common.yes') : t('common.no')],
          [t('logs.status'), statusBadge(r.status)],
          [t('logs.outcome'), outcomeBadge(r.outcome)],
          [t('logs.col.latency'), fmtMs(r.latency_ms)],
          [t('logs.ttfb'), fmtMs(r.ttfb_ms)],
          [t('logs.key'), r.key || t('common.none')],
          [t('logs.group'), r.group || t('common.none')],
          [t('logs.resource'), r.resource ? h('span', { class: 'mono' }, r.resource) : t('common.none')],
          [t('logs.bytes'), t('logs.bytes.detail', { up: fmtBytes(r.bytes_up ?? 0), down: fmtBytes(r.bytes_down ?? 0) })],
          ...(r.close_code != null ? [[t('logs.close_code'), String(r.close_code)]] : []),
          [t('logs.col.tokens'), t('logs.tokens.detail', {
            p: fmtNum(tok.prompt ?? 0), c: fmtNum(tok.candidates ?? 0), th: fmtNum(tok.thoughts ?? 0),
            ca: fmtNum(tok.cached ?? 0), t: fmtNum(tok.total ?? 0),
          })],
        ].map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
      const chain = r.attempt_chain || [];
      replace(box, dl,
        h('h3', null, t('logs.chain')),
        chain.length
          ? h('ol', { class: 'chain', id: 'attempt-chain' }, chain.map((a, i) => h('li', { class: `chain-${a.outcome === 'ok' ? 'ok' : 'bad'}` },
            h('span', { class: 'chain-n' }, String(i + 1)),
            h('div', { class: 'chain-body' },
              h('div', { class: 'chain-head' },
                h('span', { class: 'mono' }, a.key || a.key_id || t('common.none')),
                outcomeBadge(a.outcome), statusBadge(a.status),
                h('span', { class: 'muted small' }, fmtMs(a.latency_ms))),
              a.error ? h('div', { class: 'muted small clamp', title: a.error }, a.error) : null))))
          : h('p', { class: 'muted' }, t('logs.chain.empty')));
    }).catch((err) => {
      if (!err.unauthorized) replace(box, errorBox(err));
    });
    return box;
  }, { wide: true });
}

export function render(root, { params }) {
  const f = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || '']));
  const pages = [null];
  let page = 0;
  let nextCursor = null;

  const controls = {
    from: h('input', { type: 'datetime-local', value: msToLocalInput(f.from) }),
    to: h('input', { type: 'datetime-local', value: msToLocalInput(f.to) }),
    user: h('input', { type: 'text', list: 'dl-users', value: f.user, autocomplete: 'off' }),
    key: h('select', null, h('option', { value: '' }, t('logs.any'))),
    model: h('input', { type: 'text', value: f.model, placeholder: 'gemini-2.5-flash', autocomplete: 'off' }),
    outcome: h('select', null, h('option', { value: '' }, t('logs.any')),
      OUTCOMES.map((o) => h('option', { value: o }, t(`outcome.${o}`)))),
    status: h('input', { type: 'number', min: 100, max: 599, value: f.status, inputmode: 'numeric' }),
    stream: h('select', null, h('option', { value: '' }, t('logs.any')),
      h('option', { value: 'true' }, t('common.yes')), h('option', { value: 'false' }, t('common.no'))),
  };
  controls.outcome.value = f.outcome;
  controls.stream.value = f.stream;
  const usersList = h('datalist', { id: 'dl-users' });

  // Fill the key and user pickers; both are optional comforts.
  api('/api/keys').then((r) => {
    for (const k of r.keys || []) controls.key.appendChild(h('option', { value: k.id }, k.note ? `${k.brief} · ${k.note}` : k.brief));
    controls.key.value = f.key;
  }).catch(() => {});
  api('/api/users').then((r) => {
    for (const u of r.users || []) usersList.appendChild(h('option', { value: u.name }));
  }).catch(() => {});

  function read() {
    const out = {};
    for (const k of FILTERS) out[k] = controls[k].value.trim();
    out.from = localInputToMs(out.from);
    out.to = localInputToMs(out.to);
    return out;
  }

  const tableBox = h('div', { class: 'table-box', id: 'logs-table' });
  const openBox = h('div', { id: 'live-open' });

  async function loadOpen() {
    let list = [];
    try {
      list = (await api('/api/live')).sessions || [];
    } catch {
      list = [];
    }
    if (!list.length) {
      clear(openBox);
      return;
    }
    const cols = ['logs.col.time', 'logs.user', 'logs.model', 'logs.col.open', 'logs.col.tokens', 'logs.key'];
    replace(openBox, h('div', { class: 'table-box' },
      h('h2', null, t('logs.open_sessions', { n: list.length })),
      h('table', { class: 'table responsive', id: 'live-sessions' },
        h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
        h('tbody', null, list.map((s) => h('tr', { dataset: { id: s.request_id } },
          h('td', { 'data-label': t('logs.col.time') }, shortTime(s.time)),
          h('td', { 'data-label': t('logs.user') }, s.user || h('span', { class: 'muted' }, t('common.none'))),
          h('td', { 'data-label': t('logs.model') }, h('span', { class: 'mono model' }, s.model), h('span', { class: 'tag' }, 'live')),
          h('td', { 'data-label': t('logs.col.open'), class: 'num' }, fmtDuration(s.open_ms / 1000)),
          h('td', { 'data-label': t('logs.col.tokens'), class: 'num' }, fmtNum(s.tokens)),
          h('td', { 'data-label': t('logs.key') }, h('span', { class: 'mono' }, s.key))))))));
  }
  const pager = h('div', { class: 'pager' });
  const csv = h('a', { class: 'btn', download: 'requests.csv', href: '#', id: 'logs-csv' });

  function syncUrl(filters) {
    history.replaceState(null, '', `#/logs${query(filters)}`);
    csv.setAttribute('href', `/api/logs/export${query({ ...filters, format: 'csv' })}`);
  }

  async function loadPage() {
    loadOpen();
    const filters = read();
    syncUrl(filters);
    replace(tableBox, loading());
    clear(pager);
    try {
      const r = await api(`/api/logs${query({ ...filters, limit: LIMIT, cursor: pages[page] })}`);
      nextCursor = r.next_cursor || null;
      draw(r.logs || []);
    } catch (err) {
      if (!err.unauthorized) replace(tableBox, errorBox(err, loadPage));
    }
  }

  function row(r) {
    const label = (key) => ({ 'data-label': t(key) });
    const open = () => showDetail(r.request_id);
    return h('tr', { class: 'clickable', dataset: { id: r.request_id }, on: { click: (e) => { if (e.target.tagName !== 'BUTTON') open(); } } },
      h('td', label('logs.col.time'),
        h('button', { type: 'button', class: 'link', title: r.request_id, on: { click: open } }, shortTime(r.time))),
      h('td', label('logs.user'), r.user || h('span', { class: 'muted' }, t('common.none'))),
      h('td', label('logs.model'), h('span', { class: 'mono model' }, r.model),
        r.stream ? h('span', { class: 'tag' }, 'stream') : null),
      h('td', label('logs.status'), statusBadge(r.status), ' ', outcomeBadge(r.outcome)),
      h('td', { ...label('logs.col.latency'), class: 'num' }, fmtMs(r.latency_ms)),
      h('td', { ...label('logs.col.tokens'), class: 'num' }, fmtNum(r.tokens ? r.tokens.total : null)),
      h('td', label('logs.key'), h('span', { class: 'mono' }, r.key || t('common.none'))),
      h('td', { ...label('logs.col.attempts'), class: 'num' }, String(r.attempts ?? '')),
      h('td', { ...label('logs.col.route'), class: 'muted small' }, r.route));
  }

  function draw(logs) {
    clear(tableBox);
    if (!logs.length && page === 0) {
      tableBox.appendChild(empty(t('logs.empty')));
    } else {
      const cols = ['logs.col.time', 'logs.user', 'logs.model', 'logs.status', 'logs.col.latency', 'logs.col.tokens', 'logs.key', 'logs.col.attempts', 'logs.col.route'];
      tableBox.appendChild(h('table', { class: 'table responsive', id: 'logs' },
        h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
        h('tbody', null, logs.map(row))));
    }
    if (page === 0 && !nextCursor) {
      clear(pager);
      return;
    }
    replace(pager,
      button(t('logs.newer'), () => { page -= 1; loadPage(); }, { disabled: page === 0, small: true }),
      h('span', { class: 'muted small' }, t('logs.page', { n: page + 1 })),
      button(t('logs.older'), () => { pages[page + 1] = nextCursor; page += 1; loadPage(); }, { disabled: !nextCursor, small: true }));
  }

  const form = h('form', {
    class: 'filters card', id: 'log-filters',
    on: {
      submit: (e) => { e.preventDefault(); pages.length = 1; page = 0; loadPage(); },
      reset: () => setTimeout(() => { pages.length = 1; page = 0; loadPage(); }, 0),
    },
  },
  field(t('logs.from'), controls.from),
  field(t('logs.to'), controls.to),
  field(t('logs.user'), controls.user),
  field(t('logs.key'), controls.key),
  field(t('logs.model'), controls.model),
  field(t('logs.outcome'), controls.outcome),
  field(t('logs.status'), controls.status),
  field(t('logs.stream'), controls.stream),
  h('div', { class: 'filter-actions' },
    button(t('common.apply'), null, { kind: 'primary', type: 'submit' }),
    button(t('common.reset'), null, { type: 'reset', kind: 'ghost' })),
  usersList);

  csv.append(t('logs.csv'));
  root.append(
    h('div', { class: 'page-head' }, h('h1', null, t('logs.title')),
      h('div', { class: 'btn-row' }, csv, button('', loadPage, { icon: 'refresh', kind: 'ghost', ariaLabel: t('common.refresh'), title: t('common.refresh') }))),
    form, openBox, tableBox, pager);
  loadPage();
}
