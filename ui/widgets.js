// Shared pieces of the page: number and time formatting, badges, toasts, dialogs,
// loading / empty / error states, the copy button.

import { h, icon, clear } from './dom.js';
import { t, locale } from './i18n.js';

// ---- formatting -------------------------------------------------------------------------

export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return t('common.none');
  return new Intl.NumberFormat(locale()).format(n);
}

/** 1234567 → 1.2M */
export function fmtCompact(n) {
  if (n === null || n === undefined) return t('common.none');
  return new Intl.NumberFormat(locale(), { notation: 'compact', maximumFractionDigits: 1 }).format(n);
}

/** A success rate: the API sends a percentage (0..100), or null for no data. */
export function fmtRate(v) {
  if (v === null || v === undefined) return t('common.none');
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(v / 100);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return t('common.none');
  // Under 10 ms two significant digits, so a chart of sub-millisecond latencies reads
  // 0.25, 0.5, 0.75 ms rather than "0 ms" at every tick.
  if (ms < 10) return `${Number(ms.toPrecision(2))} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/** 1536 → `1.5 KiB` (binary units, as upload limits are set). */
export function fmtBytes(n) {
  if (n === null || n === undefined) return t('common.none');
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  const digits = i === 0 || n >= 100 ? 0 : 1;
  return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(n)} ${units[i]}`;
}

/** Seconds → `2h 05m`, `4m 09s`, `12s`. */
export function fmtDuration(sec) {
  sec = Math.max(0, Math.ceil(sec));
  const d = Math.floor(sec / 86400);
  const hh = Math.floor((sec % 86400) / 3600);
  const mm = Math.floor((sec % 3600) / 60);
  const ss = sec % 60;
  const p = (n) => String(n).padStart(2, '0');
  if (d) return `${d}d ${p(hh)}h`;
  if (hh) return `${hh}h ${p(mm)}m`;
  if (mm) return `${mm}m ${p(ss)}s`;
  return `${ss}s`;
}

/** unix ms → local date and time. */
export function fmtTime(ms, opts) {
  if (!ms) return t('common.none');
  return new Intl.DateTimeFormat(locale(), opts || {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).format(new Date(ms));
}

export function fmtClock(ms) {
  return new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
    .format(new Date(ms));
}

/** unix ms → "3 minutes ago". */
export function fmtAgo(ms) {
  if (!ms) return t('common.never');
  const diff = (ms - Date.now()) / 1000;
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto' });
  const abs = Math.abs(diff);
  if (abs < 60) return rtf.format(Math.round(diff), 'second');
  if (abs < 3600) return rtf.format(Math.round(diff / 60), 'minute');
  if (abs < 86400) return rtf.format(Math.round(diff / 3600), 'hour');
  return rtf.format(Math.round(diff / 86400), 'day');
}

// ---- small elements ---------------------------------------------------------------------

export function badge(kind, text) {
  return h('span', { class: `badge badge-${kind}` }, text);
}

export function stateBadge(state) {
  return badge(state, t(`state.${state}`));
}

const OUTCOME_KIND = {
  ok: 'active', client_error: 'cooling', upstream_error: 'invalid', no_key: 'invalid',
  truncated: 'cooling', cancelled: 'disabled',
};

export function outcomeBadge(outcome) {
  return badge(OUTCOME_KIND[outcome] || 'disabled', t(`outcome.${outcome}`));
}

export function button(label, onClick, opts = {}) {
  return h('button', {
    type: opts.type || 'button',
    class: ['btn', opts.kind && `btn-${opts.kind}`, opts.small && 'btn-sm', opts.class],
    title: opts.title,
    'aria-label': opts.ariaLabel,
    disabled: opts.disabled,
    dataset: opts.dataset,
    on: onClick ? { click: onClick } : undefined,
  }, opts.icon ? icon(opts.icon) : null, label ? h('span', null, label) : null);
}

export function loading() {
  return h('div', { class: 'state state-loading', role: 'status' }, h('span', { class: 'spinner' }), t('common.loading'));
}

export function empty(text) {
  return h('div', { class: 'state state-empty' }, text);
}

/** A friendly box for a failed load; "not available" for endpoints the daemon lacks. */
export function errorBox(err, retry) {
  if (err && err.unavailable) {
    return h('div', { class: 'state state-unavailable' },
      h('strong', null, t('common.unavailable')), h('span', null, t('common.unavailable.long')));
  }
  return h('div', { class: 'state state-error', role: 'alert' },
    h('strong', null, t('common.error')),
    h('span', null, (err && err.message) || String(err)),
    retry ? button(t('common.retry'), retry, { small: true }) : null);
}

/** Copies text to the clipboard; falls back to selecting a hidden field. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = h('textarea', { class: 'offscreen', readonly: true });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    ta.remove();
    return ok;
  }
}

export function copyButton(getText) {
  const b = button(t('common.copy'), async () => {
    const ok = await copyText(getText());
    b.lastChild.textContent = ok ? t('common.copied') : t('common.copy');
    b.classList.toggle('copied', ok);
    setTimeout(() => {
      b.lastChild.textContent = t('common.copy');
      b.classList.remove('copied');
    }, 2000);
  }, { icon: 'copy', class: 'copy-btn', small: true });
  return b;
}

// ---- toasts -----------------------------------------------------------------------------

export function toast(text, kind = 'ok') {
  const region = document.getElementById('toasts');
  if (!region) return;
  const el = h('div', { class: `toast toast-${kind}` }, text);
  region.appendChild(el);
  setTimeout(() => el.classList.add('toast-out'), 4200);
  setTimeout(() => el.remove(), 4600);
}

// ---- dialogs ----------------------------------------------------------------------------

/**
 * A modal <dialog>. `build(close)` returns the body; resolves with the value passed to close.
 */
export function modal(title, build, opts = {}) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: ['modal', opts.wide && 'modal-wide'], 'aria-label': title });
    let done = false;
    const close = (v) => {
      if (done) return;
      done = true;
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    dlg.addEventListener('cancel', (e) => {
      e.preventDefault();
      close(undefined);
    });
    dlg.addEventListener('click', (e) => {
      if (e.target === dlg) close(undefined);
    });
    const head = h('div', { class: 'modal-head' },
      h('h2', null, title),
      button('', () => close(undefined), { icon: 'x', kind: 'ghost', ariaLabel: t('common.close'), class: 'modal-x' }));
    dlg.append(head, h('div', { class: 'modal-body' }, build(close)));
    document.body.appendChild(dlg);
    dlg.showModal();
    const focus = dlg.querySelector('[autofocus], input, textarea, select, .btn-primary, .btn-danger');
    if (focus) focus.focus();
  });
}

/** Yes/no confirmation for destructive actions. */
export function confirmDialog(message, okLabel, kind = 'danger') {
  return modal(t('common.confirm'), (close) => h('div', { class: 'confirm' },
    h('p', null, message),
    h('div', { class: 'modal-actions' },
      button(t('common.cancel'), () => close(false), { kind: 'ghost' }),
      button(okLabel, () => close(true), { kind }))));
}

export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div', { class: 'field' },
    h('label', { for: id }, label), control, hint ? h('small', { class: 'hint' }, hint) : null);
}

export function section(title, ...body) {
  return h('section', { class: 'card' }, title ? h('h2', { class: 'card-title' }, title) : null, ...body);
}

/** Replaces the contents of `el` with a loading state, then with `render(data)` or an error. */
export async function load(el, fetcher, render) {
  clear(el).appendChild(loading());
  try {
    const data = await fetcher();
    clear(el);
    const out = render(data);
    if (out) el.appendChild(out);
  } catch (err) {
    if (err && err.unauthorized) return;
    clear(el).appendChild(errorBox(err, () => load(el, fetcher, render)));
  }
}
