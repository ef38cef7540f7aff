// Upstream keys: bulk add, check, reset, enable/disable, note, project, group, limits, proxy,
// delete, export.
// Each model with state shows its state and its use against its limits (the ledger).
// Cool-down countdowns tick client-side from the `cooling_seconds` each model reported.
// Keys are grouped by Cloud project (keys of one project share its quotas) once any key
// has one; the head says how many independent quotas the pool has.

import { h, clear, replace } from '../dom.js';
import { t } from '../i18n.js';
import { api } from '../api.js';
import {
  button, stateBadge, badge, loading, empty, errorBox, toast, modal, confirmDialog, field,
  fmtNum, fmtDuration, fmtAgo,
} from '../widgets.js';

const STATES = ['active', 'cooling', 'invalid', 'disabled'];

export function render(root) {
  let keys = [];
  let quotas = 0;
  let fetchedAt = 0;
  let filter = '';
  let search = '';
  let refreshSoon = null;

  const summary = h('div', { class: 'chips', role: 'group', 'aria-label': t('keys.col.state') });
  const quotaLine = h('p', { class: 'muted small', id: 'key-quotas' });
  const tableBox = h('div', { class: 'table-box', id: 'keys-table' }, loading());
  const addResult = h('p', { class: 'form-msg', role: 'status', id: 'add-result' });
  const textarea = h('textarea', {
    id: 'bulk-keys', rows: 4, spellcheck: 'false', autocomplete: 'off',
    placeholder: t('keys.add.placeholder'),
  });
  const addBtn = button(t('keys.add.submit'), () => addKeys(), { kind: 'primary', icon: 'plus', dataset: { action: 'add-keys' } });

  async function addKeys() {
    const text = textarea.value.trim();
    if (!text) {
      textarea.focus();
      return;
    }
    addBtn.disabled = true;
    try {
      const r = await api('/api/keys', { method: 'POST', text });
      addResult.className = 'form-msg form-msg-ok';
      addResult.textContent = t('keys.add.result', r);
      textarea.value = '';
      await refresh();
    } catch (err) {
      if (err.unauthorized) return;
      addResult.className = 'form-msg form-msg-error';
      addResult.textContent = err.message;
    } finally {
      addBtn.disabled = false;
    }
  }

  async function refresh() {
    try {
      const r = await api('/api/keys');
      keys = r.keys || [];
      quotas = r.quotas ?? keys.length;
      fetchedAt = Date.now();
      draw();
    } catch (err) {
      if (err.unauthorized) return;
      replace(tableBox, errorBox(err, refresh));
    }
  }

  async function act(fn, okText) {
    try {
      const r = await fn();
      if (okText) toast(typeof okText === 'function' ? okText(r) : okText);
      await refresh();
    } catch (err) {
      if (!err.unauthorized) toast(err.message, 'error');
    }
  }

  const patch = (k, body) => api(`/api/keys/${encodeURIComponent(k.id)}`, { method: 'PATCH', json: body });

  async function toggle(k) {
    const disable = k.state !== 'disabled';
    if (disable && !(await confirmDialog(t('keys.disable.confirm', { key: k.brief }), t('keys.disable')))) return;
    act(() => patch(k, { enabled: !disable }), t('keys.saved'));
  }

  // Edits one text field of a key (`note` or `project`); empty clears it.
  async function editField(k, name, maxlength) {
    const value = await modal(t(`keys.${name}.title`, { key: k.brief }), (close) => {
      const input = h('input', { type: 'text', id: `${name}-input`, maxlength, placeholder: t(`keys.${name}.placeholder`), value: k[name] || '' });
      return h('form', {
        class: 'stack',
        on: { submit: (e) => { e.preventDefault(); close(input.value); } },
      }, field(t(`keys.${name}`), input),
      h('div', { class: 'modal-actions' },
        button(t('common.cancel'), () => close(undefined), { kind: 'ghost' }),
        button(t('common.save'), null, { kind: 'primary', type: 'submit', dataset: { action: `save-${name}` } })));
    });
    if (value === undefined) return;
    act(() => patch(k, { [name]: value.trim() ? value.trim() : null }), t('keys.saved'));
  }

  // Sets or clears the key's own egress proxy. The daemon shows it only masked, so the
  // field starts empty (the masked URL is the placeholder) and a save sends a whole URL.
  async function editProxy(k) {
    const value = await modal(t('keys.proxy.title', { key: k.brief }), (close) => {
      const input = h('input', {
        type: 'text', id: 'proxy-input', maxlength: 500, spellcheck: 'false', autocomplete: 'off',
        placeholder: k.proxy || t('keys.proxy.placeholder'),
      });
      return h('form', {
        class: 'stack',
        on: { submit: (e) => { e.preventDefault(); if (input.value.trim()) close(input.value.trim()); } },
      }, field(t('keys.proxy'), input),
      h('p', { class: 'muted small' }, k.proxy ? t('keys.proxy.current', { proxy: k.proxy }) : t('keys.proxy.none')),
      h('div', { class: 'modal-actions' },
        button(t('common.cancel'), () => close(undefined), { kind: 'ghost' }),
        k.proxy ? button(t('keys.proxy.clear'), () => close(null), { kind: 'danger-ghost', dataset: { action: 'clear-proxy' } }) : null,
        button(t('common.save'), null, { kind: 'primary', type: 'submit', dataset: { action: 'save-proxy' } })));
    });
    if (value === undefined) return;
    act(() => patch(k, { proxy: value }), t('keys.saved'));
  }

  // Edits the key's own limits: a row per model name or glob, each of requests a minute,
  // requests a day and input tokens a minute optional. A row without a model or without
  // a number is left out; no row left clears them. The daemon checks what is sent.
  async function editLimits(k) {
    const rows = h('tbody');
    const addRow = (model = '', l = {}) => {
      const num = (name) => h('input', {
        type: 'number', min: 1, step: 1, name, inputmode: 'numeric',
        'aria-label': t(`keys.limits.${name}`), value: l[name] ?? '',
      });
      rows.appendChild(h('tr', { class: 'limit-row' },
        h('td', null, h('input', {
          type: 'text', name: 'model', maxlength: 200, spellcheck: 'false',
          placeholder: t('keys.limits.model.placeholder'), 'aria-label': t('keys.limits.model'), value: model,
        })),
        ['rpm', 'rpd', 'tpm'].map((n) => h('td', null, num(n)))));
    };
    const read = () => {
      const out = {};
      for (const tr of rows.querySelectorAll('tr')) {
        const model = tr.querySelector('[name=model]').value.trim();
        const l = {};
        for (const n of ['rpm', 'rpd', 'tpm']) {
          const v = tr.querySelector(`[name=${n}]`).value.trim();
          if (v !== '') l[n] = Number(v);
        }
        if (model && Object.keys(l).length) out[model] = l;
      }
      return out;
    };
    for (const [model, l] of Object.entries(k.limits || {})) addRow(model, l);
    addRow();
    const cols = ['keys.limits.model', 'keys.limits.rpm', 'keys.limits.rpd', 'keys.limits.tpm'];
    const value = await modal(t('keys.limits.title', { key: k.brief }), (close) => h('form', {
      class: 'stack', id: 'limits-form',
      on: { submit: (e) => { e.preventDefault(); close(read()); } },
    },
    h('p', { class: 'muted small' }, t('keys.limits.hint')),
    h('table', { class: 'table limits-table' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
      rows),
    h('div', { class: 'modal-actions' },
      button(t('keys.limits.add'), () => addRow(), { kind: 'ghost', icon: 'plus', dataset: { action: 'add-limit' } }),
      button(t('common.cancel'), () => close(undefined), { kind: 'ghost' }),
      button(t('common.save'), null, { kind: 'primary', type: 'submit', dataset: { action: 'save-limits' } }))),
    { wide: true });
    if (value === undefined) return;
    act(() => patch(k, { limits: Object.keys(value).length ? value : null }), t('keys.saved'));
  }

  async function remove(k) {
    if (!(await confirmDialog(t('keys.delete.confirm', { key: k.brief }), t('common.delete')))) return;
    act(() => api(`/api/keys/${encodeURIComponent(k.id)}`, { method: 'DELETE' }), t('keys.deleted'));
  }

  async function check(ids, btn) {
    if (btn) {
      btn.disabled = true;
      btn.lastChild.textContent = t('keys.checking');
    }
    try {
      const r = await api('/api/keys/check', { method: 'POST', json: ids ? { ids } : {} });
      const n = (r.results || []).length;
      const kind = r.invalid || r.suspended ? 'error' : 'ok';
      toast(t('keys.checked', { n, ...r }), kind);
      await refresh();
    } catch (err) {
      if (!err.unauthorized) toast(err.message, 'error');
    } finally {
      if (btn && btn.isConnected) {
        btn.disabled = false;
        btn.lastChild.textContent = ids ? t('keys.check') : t('keys.checkAll');
      }
    }
  }

  async function resetAll() {
    if (!(await confirmDialog(t('keys.resetAll.confirm'), t('keys.resetAll'), 'primary'))) return;
    act(() => api('/api/keys/reset', { method: 'POST' }), (r) => t('keys.resetDone', { n: r.reset }));
  }

  async function exportKeys() {
    try {
      const text = await api('/api/keys/export');
      const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
      const a = h('a', { href: url, download: `gemini-keys-${new Date().toISOString().slice(0, 10)}.txt`, class: 'offscreen' });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (err) {
      if (!err.unauthorized) toast(err.message, 'error');
    }
  }

  // ---- drawing --------------------------------------------------------------------------

  function drawSummary() {
    quotaLine.textContent = keys.length ? t('keys.quotas', { n: quotas }) : '';
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const k of keys) counts[k.state] = (counts[k.state] || 0) + 1;
    const chip = (value, label, n) => h('button', {
      type: 'button', class: ['chip', filter === value && 'chip-on', value && `chip-${value}`],
      'aria-pressed': filter === value ? 'true' : 'false',
      on: { click: () => { filter = value; draw(); } },
    }, label, h('span', { class: 'chip-n' }, fmtNum(n)));
    replace(summary, chip('', t('common.all'), keys.length), STATES.map((s) => chip(s, t(`state.${s}`), counts[s])));
  }

  // Use against the limits that hold (Google's or the admin's, the quota ledger), e.g.
  // "2/5 a minute · 10/250 today · 1,200/250,000 tokens a minute".
  function limitsText(m) {
    const parts = [];
    const part = (key, used, limit) => {
      if (limit != null) parts.push(t(key, { used: fmtNum(used), limit: fmtNum(limit) }));
    };
    part('keys.limit.minute', m.used_last_minute, m.limit_per_minute);
    part('keys.limit.day', m.used_today, m.limit_per_day);
    part('keys.limit.tokens', m.tokens_last_minute, m.limit_tokens_per_minute);
    return parts.join(' · ');
  }

  // One line per model with state: its state, the countdown while it is out, and its use
  // against its limits.
  function modelsCell(k) {
    const models = (k.models || []).filter((m) => m.state !== 'active' || limitsText(m));
    if (!models.length) return h('span', { class: 'muted' }, t('common.none'));
    return h('ul', { class: 'cool-list' }, models.map((m) => {
      const missing = m.state === 'unavailable';
      const until = fetchedAt + (m.cooling_seconds ?? Math.max(0, (m.cooling_until_ms - Date.now()) / 1000)) * 1000;
      return h('li', { title: m.last_error || m.reason || '', dataset: { model: m.model, state: m.state } },
        h('span', { class: 'mono model' }, m.model),
        missing ? h('span', { class: 'muted small' }, t('keys.unavailable')) : stateBadge(m.state),
        m.cooling && !missing ? h('span', { class: 'countdown', dataset: { until: String(until) } }, fmtDuration((until - Date.now()) / 1000)) : null,
        m.cooling && m.reason ? h('span', { class: 'muted small' }, m.reason) : null,
        limitsText(m) ? h('span', { class: 'muted small limits' }, limitsText(m)) : null);
    }));
  }

  function errorCell(k) {
    const parts = [];
    if (k.invalid_reason) {
      parts.push(h('div', { class: 'reason' }, k.invalid_reason,
        k.invalid_since ? h('span', { class: 'muted small' }, ' · ', t('keys.since', { t: fmtAgo(k.invalid_since * 1000) })) : null));
    }
    if (k.last_error && k.last_error !== k.invalid_reason) parts.push(h('div', { class: 'muted small clamp', title: k.last_error }, k.last_error));
    return parts.length ? parts : h('span', { class: 'muted' }, t('common.none'));
  }

  function row(k) {
    const label = (key) => ({ 'data-label': t(key) });
    const disabled = k.state === 'disabled';
    return h('tr', { dataset: { id: k.id, state: k.state } },
      h('td', label('keys.col.key'),
        h('div', { class: 'mono key-brief' }, k.brief),
        k.group && k.group !== 'default' ? h('div', { class: 'muted small key-group' }, t('keys.group.badge', { group: k.group })) : null,
        k.proxy ? h('div', { class: 'muted small mono key-proxy' }, t('keys.proxy.badge', { proxy: k.proxy })) : null,
        k.note ? h('div', { class: 'note' }, k.note) : null),
      h('td', label('keys.col.state'), stateBadge(k.state),
        k.in_flight ? h('div', { class: 'muted small' }, t('keys.inflight', { n: k.in_flight })) : null),
      h('td', label('keys.col.models'), modelsCell(k)),
      h('td', { ...label('keys.col.failures'), class: 'num' },
        k.failure_streak ? badge('cooling', t('keys.streak', { n: k.failure_streak })) : h('span', { class: 'muted' }, '0')),
      h('td', label('keys.col.error'), errorCell(k)),
      h('td', { ...label('keys.col.usage'), class: 'num' }, fmtNum(k.usage_today), h('span', { class: 'muted' }, ' / ', fmtNum(k.requests_total))),
      h('td', { ...label('common.actions'), class: 'actions' },
        h('div', { class: 'btn-row' },
          button(t('keys.check'), (e) => check([k.id], e.currentTarget), { small: true, dataset: { action: 'check' } }),
          button(t('keys.reset'), () => act(() => api(`/api/keys/${encodeURIComponent(k.id)}/reset`, { method: 'POST' }), t('keys.saved')), { small: true, dataset: { action: 'reset' } }),
          button(disabled ? t('keys.enable') : t('keys.disable'), () => toggle(k), { small: true, dataset: { action: 'toggle' } }),
          button(t('keys.note'), () => editField(k, 'note', 200), { small: true, dataset: { action: 'note' } }),
          button(t('keys.project'), () => editField(k, 'project', 100), { small: true, dataset: { action: 'project' } }),
          button(t('keys.group'), () => editField(k, 'group', 40), { small: true, dataset: { action: 'group' } }),
          button(t('keys.limits'), () => editLimits(k), { small: true, dataset: { action: 'limits' } }),
          button(t('keys.proxy'), () => editProxy(k), { small: true, dataset: { action: 'proxy' } }),
          button(t('common.delete'), () => remove(k), { small: true, kind: 'danger-ghost', dataset: { action: 'delete' } }))));
  }

  function draw() {
    drawSummary();
    clear(tableBox);
    if (!keys.length) {
      tableBox.appendChild(empty(t('keys.empty')));
      return;
    }
    const q = search.toLowerCase();
    const shown = keys.filter((k) => (!filter || k.state === filter)
      && (!q || k.brief.toLowerCase().includes(q) || (k.note || '').toLowerCase().includes(q) || k.id.toLowerCase().includes(q)));
    if (!shown.length) {
      tableBox.appendChild(empty(t('keys.nomatch')));
      return;
    }
    const cols = ['keys.col.key', 'keys.col.state', 'keys.col.models', 'keys.col.failures', 'keys.col.error', 'keys.col.usage', 'common.actions'];
    tableBox.appendChild(h('table', { class: 'table responsive', id: 'keys' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
      groups(shown).map(([project, list]) => h('tbody', { dataset: { project: project ?? '' } },
        project === undefined ? null : h('tr', { class: 'group-head' },
          h('th', { colspan: cols.length, scope: 'rowgroup' },
            project ? t('keys.project.group', { project, n: list.length }) : t('keys.project.none', { n: list.length }))),
        list.map(row)))));
  }

  // One group of all keys while no key has a project; else one per project, and keys of
  // no known project last.
  function groups(list) {
    if (!list.some((k) => k.project)) return [[undefined, list]];
    const by = new Map();
    for (const k of list) {
      const p = k.project || '';
      if (!by.has(p)) by.set(p, []);
      by.get(p).push(k);
    }
    return [...by.entries()].sort(([a], [b]) => (a === '') - (b === '') || a.localeCompare(b));
  }

  function tick() {
    let expired = false;
    for (const el of root.querySelectorAll('[data-until]')) {
      const left = (Number(el.dataset.until) - Date.now()) / 1000;
      if (left <= 0) {
        if (el.textContent !== t('keys.ready')) expired = true;
        el.textContent = t('keys.ready');
        el.classList.add('ready');
      } else {
        el.textContent = fmtDuration(left);
      }
    }
    if (expired && !refreshSoon) refreshSoon = setTimeout(() => { refreshSoon = null; refresh(); }, 1500);
  }

  const checkAllBtn = button(t('keys.checkAll'), (e) => check(null, e.currentTarget), { icon: 'check', dataset: { action: 'check-all' } });
  root.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, t('keys.title')), quotaLine),
      h('div', { class: 'btn-row' },
        checkAllBtn,
        button(t('keys.resetAll'), resetAll, { icon: 'refresh', dataset: { action: 'reset-all' } }),
        button(t('keys.export'), exportKeys, { icon: 'download', dataset: { action: 'export' } }))),
    h('section', { class: 'card add-card' },
      h('form', { class: 'stack', on: { submit: (e) => { e.preventDefault(); addKeys(); } } },
        h('label', { for: 'bulk-keys', class: 'card-title' }, t('keys.add')),
        h('p', { class: 'muted small' }, t('keys.add.hint')),
        textarea,
        h('div', { class: 'btn-row' }, addBtn, addResult))),
    h('div', { class: 'toolbar' },
      summary,
      h('input', {
        type: 'search', class: 'search', placeholder: t('keys.search'), 'aria-label': t('keys.search'),
        on: { input: (e) => { search = e.target.value; draw(); } },
      }),
      button('', refresh, { icon: 'refresh', kind: 'ghost', ariaLabel: t('common.refresh'), title: t('common.refresh') })),
    tableBox);

  textarea.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) addKeys();
  });
  refresh();
  const timer = setInterval(tick, 1000);
  return () => {
    clearInterval(timer);
    clearTimeout(refreshSoon);
  };
}
