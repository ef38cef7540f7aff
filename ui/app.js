// The admin page: app shell (top bar, navigation, language and theme), hash routing, and
// the session rule: any 401 from /api/* shows the login view, then returns where the
// user was. Views live in views/*.js and export `render(root, params) → cleanup?`.

import { h, icon, clear } from './dom.js';
import { t, getLang, setLang } from './i18n.js';
import { api, onUnauthorized } from './api.js';
import { errorBox } from './widgets.js';
import * as dashboard from './views/dashboard.js';
import * as keys from './views/keys.js';
import * as users from './views/users.js';
import * as logs from './views/logs.js';
import * as live from './views/live.js';
import * as resources from './views/resources.js';
import * as login from './views/login.js';

const VIEWS = { dashboard, keys, users, resources, logs, live };
const NAV = ['dashboard', 'keys', 'users', 'resources', 'logs', 'live'];
const RETURN = 'gb.return';

let cleanup = null;
let expired = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const [name, ...rest] = path.split('/');
  return { name: name || 'dashboard', rest, params: new URLSearchParams(qs || '') };
}

// ---- theme ------------------------------------------------------------------------------

function effectiveTheme() {
  const set = document.documentElement.dataset.theme;
  if (set) return set;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function toggleTheme() {
  const next = effectiveTheme() === 'dark' ? 'light' : 'dark';
  document.documentElement.dataset.theme = next;
  localStorage.setItem('gb.theme', next);
  renderShell();
}

// ---- session ----------------------------------------------------------------------------

onUnauthorized(() => {
  const { name } = parseHash();
  if (name === 'login') return;
  sessionStorage.setItem(RETURN, location.hash || '#/dashboard');
  expired = true;
  location.hash = '#/login';
});

export function afterLogin() {
  const back = sessionStorage.getItem(RETURN);
  sessionStorage.removeItem(RETURN);
  expired = false;
  location.hash = back && !back.startsWith('#/login') ? back : '#/dashboard';
}

async function logout() {
  try {
    await api('/api/logout', { method: 'POST' });
  } catch {
    // The cookie is gone or the daemon is down; either way show the login view.
  }
  sessionStorage.removeItem(RETURN);
  expired = false;
  location.hash = '#/login';
}

// ---- shell ------------------------------------------------------------------------------

function topbar(active) {
  const dark = effectiveTheme() === 'dark';
  return h('header', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/dashboard' },
      h('img', { src: 'favicon.svg', alt: '', width: 24, height: 24 }),
      h('span', null, t('app.name'))),
    h('nav', { class: 'nav', 'aria-label': t('nav.main') },
      NAV.map((n) => h('a', {
        href: `#/${n}`,
        class: ['nav-link', n === active && 'active'],
        'aria-current': n === active ? 'page' : null,
        dataset: { nav: n },
      }, t(`nav.${n}`)))),
    h('div', { class: 'tools' },
      h('button', {
        type: 'button', class: 'btn btn-ghost btn-sm', id: 'lang-toggle', title: t('top.lang.title'),
        on: { click: () => { setLang(getLang() === 'zh' ? 'en' : 'zh'); route(); } },
      }, icon('globe'), h('span', null, t('top.lang'))),
      h('button', {
        type: 'button', class: 'btn btn-ghost btn-sm btn-icon', id: 'theme-toggle',
        title: dark ? t('top.theme.light') : t('top.theme.dark'),
        'aria-label': dark ? t('top.theme.light') : t('top.theme.dark'),
        on: { click: toggleTheme },
      }, icon(dark ? 'sun' : 'moon')),
      h('button', {
        type: 'button', class: 'btn btn-ghost btn-sm', id: 'logout', on: { click: logout },
      }, icon('logout'), h('span', { class: 'hide-narrow' }, t('top.logout')))));
}

function renderShell() {
  const { name } = parseHash();
  const app = document.getElementById('app');
  const bar = app.querySelector('.topbar');
  if (bar) bar.replaceWith(topbar(name));
}

function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A view's cleanup must never stop navigation.
    }
    cleanup = null;
  }
  for (const d of document.querySelectorAll('dialog.modal')) d.remove();
  const { name, rest, params } = parseHash();
  const app = clear(document.getElementById('app'));
  if (name === 'login') {
    document.title = `${t('login.title')} · gemini-balance`;
    const root = h('main', { class: 'login-page', id: 'main' });
    app.appendChild(root);
    cleanup = login.render(root, { expired, afterLogin, toggleTheme, route });
    return;
  }
  const view = VIEWS[name];
  const main = h('main', { class: 'content', id: 'main', tabindex: '-1', dataset: { view: name } });
  app.append(topbar(name), main);
  document.title = `${t(`nav.${view ? name : 'dashboard'}`)} · gemini-balance`;
  if (!view) {
    main.appendChild(errorBox({ unavailable: true }));
    return;
  }
  try {
    cleanup = view.render(main, { rest, params }) || null;
  } catch (err) {
    main.appendChild(errorBox(err));
  }
}

window.addEventListener('hashchange', route);
if (!location.hash) history.replaceState(null, '', '#/dashboard');
route();
