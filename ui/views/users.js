// User keys: create with limits (the secret is shown once, with a copy button), edit,
// enable/disable, rotate, delete, and today's usage against the daily budget.

import { h, clear, replace } from '../dom.js';
import { t } from '../i18n.js';
import { api } from '../api.js';
import {
  button, badge, loading, empty, errorBox, toast, modal, confirmDialog, field,
  fmtNum, fmtCompact, fmtAgo, fmtTime, copyButton,
} from '../widgets.js';

function toLocalInput(unixS) {
  if (!unixS) return '';
  const d = new Date(unixS * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function intOrNull(v) {
  const s = String(v).trim();
  if (!s) return null;
  const n = Number(s);
  return Number.isFinite(n) && n >= 0 ? Math.floor(n) : null;
}

/** The create / edit form; `user` pre-fills it. Returns { el, read() }. */
function userForm(user) {
  const u = user || {};
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 64, autocomplete: 'off', value: u.name || '' });
  const models = h('input', { type: 'text', name: 'models', placeholder: 'gemini-2.5-*', value: (u.models || []).join(', ') });
  const rpm = h('input', { type: 'number', name: 'rpm', min: 0, inputmode: 'numeric', placeholder: t('common.unlimited'), value: u.rpm ?? '' });
  const daily = h('input', { type: 'number', name: 'daily_tokens', min: 0, inputmode: 'numeric', placeholder: t('common.unlimited'), value: u.daily_tokens ?? '' });
  const conc = h('input', { type: 'number', name: 'max_concurrent', min: 0, inputmode: 'numeric', placeholder: t('common.unlimited'), value: u.max_concurrent ?? '' });
  const expires = h('input', { type: 'datetime-local', name: 'expires_at', value: toLocalInput(u.expires_at) });
  const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: u.enabled !== false });
  const el = h('div', { class: 'form-grid' },
    field(t('users.name'), name),
    field(t('users.models'), models, t('users.models.hint')),
    field(t('users.rpm'), rpm),
    field(t('users.daily'), daily),
    field(t('users.concurrent'), conc),
    field(t('users.expires'), expires, t('users.expires.hint')),
    h('label', { class: 'check' }, enabled, h('span', null, t('users.enabled'))));
  const read = () => ({
    name: name.value.trim(),
    enabled: enabled.checked,
    models: models.value.split(/[\s,]+/).map((m) => m.trim()).filter(Boolean),
    rpm: intOrNull(rpm.value),
    daily_tokens: intOrNull(daily.value),
    max_concurrent: intOrNull(conc.value),
    expires_at: expires.value ? Math.floor(new Date(expires.value).getTime() / 1000) : null,
  });
  return { el, read, name };
}

function secretPanel(user) {
  const code = h('code', { class: 'secret', id: 'user-secret' }, user.key);
  return h('div', { class: 'secret-panel', role: 'status' },
    h('strong', null, t('users.secret.title', { name: user.name })),
    h('p', { class: 'small' }, t('users.secret.lead')),
    h('div', { class: 'secret-row' }, code, copyButton(() => user.key)));
}

export function render(root) {
  let users = [];
  const tableBox = h('div', { class: 'table-box', id: 'users-table' }, loading());
  const secretBox = h('div', { id: 'secret-box' });
  const formMsg = h('p', { class: 'form-msg', role: 'alert' });

  async function refresh() {
    try {
      users = (await api('/api/users')).users || [];
      draw();
    } catch (err) {
      if (!err.unauthorized) replace(tableBox, errorBox(err, refresh));
    }
  }

  function showSecret(user) {
    replace(secretBox, secretPanel(user));
    secretBox.scrollIntoView({ block: 'nearest' });
  }

  const create = userForm(null);
  const createBtn = button(t('users.submit'), null, { kind: 'primary', type: 'submit', icon: 'plus', dataset: { action: 'create-user' } });
  const createForm = h('form', {
    class: 'stack', id: 'create-user', novalidate: true,
    on: {
      submit: async (e) => {
        e.preventDefault();
        const body = create.read();
        if (!body.name) {
          create.name.focus();
          return;
        }
        createBtn.disabled = true;
        formMsg.textContent = '';
        try {
          const u = await api('/api/users', { method: 'POST', json: body });
          showSecret(u);
          createForm.reset();
          toast(t('users.created'));
          await refresh();
        } catch (err) {
          if (!err.unauthorized) formMsg.textContent = err.status === 409 ? t('users.dup') : err.message;
        } finally {
          createBtn.disabled = false;
        }
      },
    },
  }, create.el, h('div', { class: 'btn-row' }, createBtn, formMsg));

  async function act(fn, after) {
    try {
      const r = await fn();
      if (after) after(r);
      await refresh();
    } catch (err) {
      if (!err.unauthorized) toast(err.message, 'error');
    }
  }

  const path = (u, tail = '') => `/api/users/${encodeURIComponent(u.id)}${tail}`;

  async function edit(u) {
    const body = await modal(t('users.edit.title', { name: u.name }), (close) => {
      const f = userForm(u);
      return h('form', { class: 'stack', on: { submit: (e) => { e.preventDefault(); close(f.read()); } } },
        f.el,
        h('div', { class: 'modal-actions' },
          button(t('common.cancel'), () => close(undefined), { kind: 'ghost' }),
          button(t('common.save'), null, { kind: 'primary', type: 'submit' })));
    }, { wide: true });
    if (!body) return;
    act(() => api(path(u), { method: 'PATCH', json: body }), () => toast(t('keys.saved')));
  }

  async function rotate(u) {
    if (!(await confirmDialog(t('users.rotate.confirm', { name: u.name }), t('users.rotate')))) return;
    act(() => api(path(u, '/rotate'), { method: 'POST' }), showSecret);
  }

  async function remove(u) {
    if (!(await confirmDialog(t('users.delete.confirm', { name: u.name }), t('common.delete')))) return;
    act(() => api(path(u), { method: 'DELETE' }), () => toast(t('keys.deleted')));
  }

  function limits(u) {
    const parts = [];
    if (u.rpm) parts.push(t('users.limit.rpm', { n: fmtNum(u.rpm) }));
    if (u.daily_tokens) parts.push(t('users.limit.daily', { n: fmtCompact(u.daily_tokens) }));
    if (u.max_concurrent) parts.push(t('users.limit.conc', { n: u.max_concurrent }));
    if (u.models && u.models.length) parts.push(t('users.limit.models', { m: u.models.join(', ') }));
    if (!parts.length) return h('span', { class: 'muted' }, t('common.unlimited'));
    return h('ul', { class: 'plain-list small' }, parts.map((p) => h('li', null, p)));
  }

  function usage(u) {
    const out = [h('div', null, t('users.usage', { r: fmtNum(u.requests_today), t: fmtCompact(u.tokens_today) }))];
    if (u.daily_tokens) {
      const pct = Math.min(100, (100 * (u.tokens_today || 0)) / u.daily_tokens);
      const bar = h('div', { class: ['meter', pct >= 90 && 'meter-hot'], title: `${Math.round(pct)} %` }, h('span'));
      bar.firstChild.style.width = `${pct}%`;
      out.push(bar);
    }
    return out;
  }

  function row(u) {
    const label = (key) => ({ 'data-label': t(key) });
    const expired = u.expires_at && u.expires_at * 1000 < Date.now();
    const state = !u.enabled ? 'disabled' : expired ? 'expired' : 'enabled';
    return h('tr', { dataset: { id: u.id } },
      h('td', label('users.col.name'), h('strong', { class: 'user-name' }, u.name),
        u.expires_at ? h('div', { class: 'muted small' }, t('users.expires'), ': ', fmtTime(u.expires_at * 1000, { dateStyle: 'medium', timeStyle: 'short' })) : null),
      h('td', label('users.col.key'), h('span', { class: 'mono' }, u.key_prefix)),
      h('td', label('users.col.state'), badge({ enabled: 'active', expired: 'invalid', disabled: 'disabled' }[state], t(`state.${state}`)),
        u.in_flight ? h('div', { class: 'muted small' }, t('keys.inflight', { n: u.in_flight })) : null),
      h('td', label('users.col.limits'), limits(u)),
      h('td', label('users.col.usage'), usage(u)),
      h('td', label('users.col.last'), h('span', { title: u.last_used_at ? fmtTime(u.last_used_at * 1000) : '' }, fmtAgo(u.last_used_at ? u.last_used_at * 1000 : 0))),
      h('td', { ...label('common.actions'), class: 'actions' },
        h('div', { class: 'btn-row' },
          button(t('users.edit'), () => edit(u), { small: true, dataset: { action: 'edit' } }),
          button(u.enabled ? t('keys.disable') : t('keys.enable'),
            () => act(() => api(path(u), { method: 'PATCH', json: { enabled: !u.enabled } })), { small: true, dataset: { action: 'toggle' } }),
          button(t('users.rotate'), () => rotate(u), { small: true, dataset: { action: 'rotate' } }),
          button(t('common.delete'), () => remove(u), { small: true, kind: 'danger-ghost', dataset: { action: 'delete' } }))));
  }

  function draw() {
    clear(tableBox);
    if (!users.length) {
      tableBox.appendChild(empty(t('users.empty')));
      return;
    }
    const cols = ['users.col.name', 'users.col.key', 'users.col.state', 'users.col.limits', 'users.col.usage', 'users.col.last', 'common.actions'];
    tableBox.appendChild(h('table', { class: 'table responsive', id: 'users' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
      h('tbody', null, users.map(row))));
  }

  root.append(
    h('div', { class: 'page-head' },
      h('h1', null, t('users.title')),
      button('', refresh, { icon: 'refresh', kind: 'ghost', ariaLabel: t('common.refresh'), title: t('common.refresh') })),
    h('section', { class: 'card' }, h('h2', { class: 'card-title' }, t('users.create')), createForm, secretBox),
    tableBox);
  refresh();
}
