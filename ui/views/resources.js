// Resources Google keeps per project (files, caches, batches, operations, interactions,
// upload sessions): which pool key holds each and which user created it, with size and
// expiry. Read-only; users delete their resources through the Gemini API.

import { h, clear } from '../dom.js';
import { t } from '../i18n.js';
import { api, query } from '../api.js';
import { button, loading, empty, errorBox, fmtTime, fmtCompact } from '../widgets.js';

const KINDS = ['', 'files', 'cachedContents', 'batches', 'operations', 'interactions', 'upload', 'fileSearchStores', 'tunedModels'];

export function render(root) {
  const tableBox = h('div', { class: 'card', id: 'resources-box' });
  const kind = h('select', { name: 'kind', on: { change: refresh } },
    KINDS.map((k) => h('option', { value: k }, k || t('common.all'))));

  async function refresh() {
    clear(tableBox);
    tableBox.appendChild(loading());
    try {
      const r = await api(`/api/resources${query({ kind: kind.value })}`);
      draw(r);
    } catch (err) {
      if (!err.unauthorized) {
        clear(tableBox);
        tableBox.appendChild(errorBox(err, refresh));
      }
    }
  }

  function row(r) {
    const label = (key) => ({ 'data-label': t(key) });
    return h('tr', null,
      h('td', label('res.col.name'), h('span', { class: 'mono' }, r.name)),
      h('td', label('res.col.kind'), r.kind),
      h('td', label('res.col.user'), r.user || h('span', { class: 'muted' }, r.user_id)),
      h('td', label('res.col.key'), h('span', { class: 'mono' }, r.key || t('res.key.gone'))),
      h('td', label('res.col.size'), r.size == null ? t('common.none') : fmtCompact(r.size)),
      h('td', label('res.col.created'), fmtTime(r.created_ms)),
      h('td', label('res.col.expires'), fmtTime(r.expires_ms)));
  }

  function draw(r) {
    clear(tableBox);
    if (!r.resources.length) {
      tableBox.appendChild(empty(t('res.empty')));
      return;
    }
    const cols = ['res.col.name', 'res.col.kind', 'res.col.user', 'res.col.key', 'res.col.size', 'res.col.created', 'res.col.expires'];
    tableBox.append(
      h('p', { class: 'muted small' }, t('res.count', { n: r.resources.length, total: r.total })),
      h('table', { class: 'table responsive', id: 'resources' },
        h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
        h('tbody', null, r.resources.map(row))));
  }

  root.append(
    h('div', { class: 'page-head' },
      h('h1', null, t('res.title')),
      h('label', { class: 'inline' }, h('span', null, t('res.kind')), kind),
      button('', refresh, { icon: 'refresh', kind: 'ghost', ariaLabel: t('common.refresh'), title: t('common.refresh') })),
    h('p', { class: 'muted' }, t('res.lead')),
    tableBox);
  refresh();
}
