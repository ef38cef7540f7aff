// Live feed: finished requests, opened Live API sessions (their record follows when
// they close) and key state changes from /api/events (Server-Sent Events, cookie auth). Pausable: while paused, events wait in a bounded buffer.

import { h, clear, replace, icon } from '../dom.js';
import { t } from '../i18n.js';
import { api } from '../api.js';
import { button, badge, outcomeBadge, empty, errorBox, fmtMs, fmtNum, fmtClock, fmtDuration } from '../widgets.js';
import { showDetail } from './logs.js';

const MAX_ROWS = 200;
const KEY_KIND = {
  retired: 'invalid', cooled: 'cooling', revived: 'active', disabled: 'disabled', enabled: 'active',
  added: 'active', removed: 'disabled',
};

export function render(root) {
  let paused = false;
  let waiting = [];
  let es = null;
  let probe = null;
  const list = h('ol', { class: 'feed', id: 'feed', 'aria-live': 'off' });
  const status = h('span', { class: 'live-status', id: 'live-status' });
  const notice = h('div', { class: 'feed-notice', role: 'status' });
  const box = h('div', { class: 'feed-box' }, empty(t('live.empty')));

  function setStatus(kind, text) {
    status.className = `live-status live-${kind}`;
    replace(status, h('span', { class: 'dot' }), text);
  }

  function requestItem(r) {
    return h('li', { class: ['feed-item', r.outcome === 'ok' ? 'feed-ok' : 'feed-bad'], dataset: { kind: 'request', id: r.request_id } },
      h('span', { class: 'feed-time mono' }, fmtClock(r.time || Date.now())),
      h('button', { type: 'button', class: 'link feed-main', on: { click: () => showDetail(r.request_id) } },
        h('span', { class: 'mono model' }, r.model || r.route), r.stream ? h('span', { class: 'tag' }, 'stream') : null),
      h('span', { class: 'feed-meta' },
        outcomeBadge(r.outcome),
        h('span', { class: 'muted small' }, String(r.status)),
        h('span', { class: 'muted small' }, r.user || t('common.none')),
        h('span', { class: 'muted small' }, fmtMs(r.latency_ms)),
        r.tokens && r.tokens.total ? h('span', { class: 'muted small' }, `${fmtNum(r.tokens.total)} tok`) : null,
        r.key ? h('span', { class: 'mono small muted' }, r.key) : null));
  }

  function sessionItem(s) {
    return h('li', { class: 'feed-item feed-ok', dataset: { kind: 'session', id: s.request_id } },
      h('span', { class: 'feed-time mono' }, fmtClock(s.time || Date.now())),
      h('span', { class: 'feed-main' }, h('span', { class: 'mono model' }, s.model || s.route), h('span', { class: 'tag' }, 'live')),
      h('span', { class: 'feed-meta' },
        badge('active', t('live.session_open')),
        h('span', { class: 'muted small' }, s.user || t('common.none')),
        s.key ? h('span', { class: 'mono small muted' }, s.key) : null));
  }

  function keyItem(k) {
    const left = k.until_ms ? (k.until_ms - Date.now()) / 1000 : 0;
    return h('li', { class: 'feed-item feed-key', dataset: { kind: 'key' } },
      h('span', { class: 'feed-time mono' }, fmtClock(Date.now())),
      h('span', { class: 'feed-main' }, h('span', { class: 'mono' }, k.brief || k.id),
        k.model ? h('span', { class: 'mono muted small' }, ` · ${k.model}`) : null),
      h('span', { class: 'feed-meta' },
        badge(KEY_KIND[k.change] || 'disabled', t(`change.${k.change}`)),
        left > 0 ? h('span', { class: 'muted small' }, fmtDuration(left)) : null,
        k.reason ? h('span', { class: 'muted small' }, k.reason) : null));
  }

  function show(items) {
    if (!items.length) return;
    if (!list.isConnected) replace(box, list);
    for (const el of items) list.insertBefore(el, list.firstChild);
    while (list.childNodes.length > MAX_ROWS) list.removeChild(list.lastChild);
  }

  function push(el) {
    if (paused) {
      waiting.push(el);
      if (waiting.length > MAX_ROWS) waiting.shift();
      setStatus('paused', t('live.paused', { n: waiting.length }));
    } else {
      show([el]);
    }
  }

  function parse(e) {
    try {
      return JSON.parse(e.data);
    } catch {
      return null;
    }
  }

  // EventSource hides the HTTP status; when it fails, ask once with fetch to tell
  // "not implemented" and "session expired" apart from a network hiccup.
  async function diagnose() {
    probe = new AbortController();
    try {
      const res = await api('/api/events', { raw: true, signal: probe.signal });
      if (res.body) res.body.cancel();
    } catch (err) {
      if (err.name === 'AbortError') return;
      if (err.unauthorized) return;
      if (err.unavailable) {
        if (es) es.close();
        setStatus('off', t('common.unavailable'));
        replace(box, errorBox(err));
      }
    } finally {
      probe = null;
    }
  }

  function connect() {
    setStatus('connecting', t('live.connecting'));
    es = new EventSource('/api/events', { withCredentials: true });
    es.addEventListener('open', () => { if (!paused) setStatus('on', t('live.connected')); });
    es.addEventListener('request', (e) => { const r = parse(e); if (r) push(requestItem(r)); });
    es.addEventListener('session', (e) => { const s = parse(e); if (s) push(sessionItem(s)); });
    es.addEventListener('key', (e) => { const k = parse(e); if (k) push(keyItem(k)); });
    es.addEventListener('dropped', (e) => {
      const d = parse(e) || {};
      replace(notice, t('live.dropped', { n: fmtNum(d.missed) }));
    });
    es.addEventListener('error', () => {
      setStatus('connecting', t('live.reconnecting'));
      if (!probe) diagnose();
    });
  }

  const pauseBtn = button(t('live.pause'), () => {
    paused = !paused;
    replace(pauseBtn, icon(paused ? 'play' : 'pause'), h('span', null, paused ? t('live.resume') : t('live.pause')));
    pauseBtn.setAttribute('aria-pressed', paused ? 'true' : 'false');
    if (!paused) {
      show(waiting);
      waiting = [];
      setStatus(es && es.readyState === 1 ? 'on' : 'connecting', es && es.readyState === 1 ? t('live.connected') : t('live.connecting'));
    } else {
      setStatus('paused', t('live.paused', { n: 0 }));
    }
  }, { icon: 'pause', dataset: { action: 'pause' } });
  pauseBtn.setAttribute('aria-pressed', 'false');

  root.append(
    h('div', { class: 'page-head' },
      h('h1', null, t('live.title'), ' ', status),
      h('div', { class: 'btn-row' }, pauseBtn,
        button(t('live.clear'), () => { clear(list); clear(notice); replace(box, empty(t('live.empty'))); waiting = []; }, { kind: 'ghost' }))),
    notice, box);
  connect();
  return () => {
    if (es) es.close();
    if (probe) probe.abort();
  };
}
