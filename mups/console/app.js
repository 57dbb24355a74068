// Console entry point: login, navigation, and the one live event stream every page
// listens to (server-sent events: no polling).

import { api, get, onUnauthorized, post, setCsrf } from './api.js';
import { BanksPage } from './banks.js';
import { AppliancePage, AuditPage, JobsPage, NodesPage, UsersPage } from './pages.js';
import { $, $$, show } from './util.js';

const ROLES = ['viewer', 'operator', 'admin'];
const state = { me: null, stream: null };
const bus = new EventTarget();

const pages = {
  banks: new BanksPage(bus),
  nodes: new NodesPage(bus),
  jobs: new JobsPage(bus),
  appliance: new AppliancePage(bus),
  audit: new AuditPage(bus),
  users: new UsersPage(bus),
};

function atLeast(role) {
  return state.me && ROLES.indexOf(state.me.role) >= ROLES.indexOf(role);
}

function showLogin(message) {
  state.me = null;
  state.stream?.close();
  state.stream = null;
  show($('#top'), false);
  $$('.page').forEach((p) => show(p, false));
  show($('#login-page'), true);
  $('#login-error').textContent = message ?? '';
  $('#login-form input[name=user]').focus();
}

function connectEvents() {
  state.stream?.close();
  const live = $('#live');
  const stream = new EventSource('/api/v1/events');
  state.stream = stream;
  stream.addEventListener('open', () => {
    live.classList.replace('off', 'on');
    // Anything missed while disconnected: pages re-read their state.
    bus.dispatchEvent(new CustomEvent('resync'));
  });
  stream.addEventListener('error', async () => {
    live.classList.replace('on', 'off');
    if (stream.readyState === EventSource.CLOSED) {
      // Closed for good (401 after the session expired, or the server went away).
      try {
        await get('/api/v1/me');
        setTimeout(() => state.stream === stream && connectEvents(), 2000);
      } catch {
        /* onUnauthorized shows the login form */
      }
    }
  });
  for (const name of ['stats', 'route', 'node', 'job_started', 'job_bank', 'job_done', 'lagged']) {
    stream.addEventListener(name, (e) => {
      bus.dispatchEvent(new CustomEvent(name, { detail: JSON.parse(e.data) }));
    });
  }
}

function route() {
  if (!state.me) return;
  let name = location.hash.replace(/^#\//, '') || 'banks';
  if (!(name in pages) || (name === 'users' && !atLeast('admin')) || (name === 'audit' && !atLeast('admin'))) {
    name = 'banks';
  }
  $$('.page').forEach((p) => show(p, p.id === `${name}-page`));
  $$('nav a').forEach((a) => a.classList.toggle('active', a.dataset.page === name));
  for (const [key, page] of Object.entries(pages)) page.setActive(key === name);
}

function enter(me) {
  state.me = me;
  setCsrf(me.csrf_token);
  $('#whoami').textContent = `${me.user ?? me.actor} (${me.role})`;
  document.body.dataset.role = me.role;
  $$('.operator-only').forEach((n) => show(n, atLeast('operator')));
  $$('.admin-only').forEach((n) => show(n, atLeast('admin')));
  show($('#login-page'), false);
  show($('#top'), true);
  for (const page of Object.values(pages)) page.setRole?.(me.role);
  connectEvents();
  route();
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  const button = $('button', form);
  button.disabled = true;
  $('#login-error').textContent = '';
  try {
    await api('POST', '/api/v1/login', { user: form.user.value, password: form.password.value });
    form.password.value = '';
    enter(await get('/api/v1/me'));
  } catch (err) {
    $('#login-error').textContent =
      err.code === 'rate_limited' ? err.message : 'Wrong user name or password.';
  } finally {
    button.disabled = false;
  }
});

$('#logout').addEventListener('click', async () => {
  try {
    await post('/api/v1/logout');
  } finally {
    showLogin('Logged out.');
  }
});

onUnauthorized(() => showLogin('Your session has ended. Log in again.'));
window.addEventListener('hashchange', route);

get('/api/v1/me').then(enter, () => showLogin());
