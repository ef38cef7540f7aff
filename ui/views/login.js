// Login: one password field. On success the daemon sets the session cookie and the app
// returns to the page the user was on.

import { h, icon } from '../dom.js';
import { t, getLang, setLang } from '../i18n.js';
import { api } from '../api.js';

export function render(root, { expired, afterLogin, toggleTheme, route }) {
  const pw = h('input', {
    type: 'password', id: 'password', name: 'password', autocomplete: 'current-password', required: true,
    autofocus: true,
  });
  const msg = h('p', { class: ['form-msg', expired && 'form-msg-info'], role: 'alert', id: 'login-msg' },
    expired ? t('login.expired') : '');
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', id: 'login-submit' }, t('login.submit'));
  let timer = null;

  const form = h('form', {
    class: 'login-card card', novalidate: true,
    on: {
      submit: async (e) => {
        e.preventDefault();
        if (!pw.value) {
          pw.focus();
          return;
        }
        submit.disabled = true;
        submit.textContent = t('login.busy');
        msg.className = 'form-msg';
        msg.textContent = '';
        try {
          await api('/api/login', { method: 'POST', json: { password: pw.value } });
          afterLogin();
        } catch (err) {
          msg.className = 'form-msg form-msg-error';
          if (err.status === 429) {
            let left = err.retryAfter || 60;
            msg.textContent = t('login.throttled', { s: left });
            clearInterval(timer);
            timer = setInterval(() => {
              left -= 1;
              if (left <= 0) {
                clearInterval(timer);
                msg.textContent = '';
              } else {
                msg.textContent = t('login.throttled', { s: left });
              }
            }, 1000);
          } else {
            msg.textContent = err.message;
          }
          pw.select();
        } finally {
          submit.disabled = false;
          submit.textContent = t('login.submit');
        }
      },
    },
  },
  h('div', { class: 'login-brand' },
    h('img', { src: 'favicon.svg', alt: '', width: 40, height: 40 }),
    h('div', null, h('h1', null, t('app.name')), h('p', { class: 'muted' }, t('login.lead')))),
  h('div', { class: 'field' }, h('label', { for: 'password' }, t('login.password')), pw),
  msg,
  submit,
  h('div', { class: 'login-tools' },
    h('button', {
      type: 'button', class: 'btn btn-ghost btn-sm', id: 'lang-toggle',
      on: { click: () => { setLang(getLang() === 'zh' ? 'en' : 'zh'); route(); } },
    }, icon('globe'), h('span', null, t('top.lang'))),
    h('button', {
      type: 'button', class: 'btn btn-ghost btn-sm btn-icon', id: 'theme-toggle', 'aria-label': t('top.theme.dark'),
      on: { click: () => { toggleTheme(); } },
    }, icon('moon'))));
  root.appendChild(form);
  setTimeout(() => pw.focus(), 0);
  return () => clearInterval(timer);
}
