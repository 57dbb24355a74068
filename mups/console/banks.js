// Banks page: every bank with its sessions (transport and application level apart),
// route vs admin intent, load; filter, sort, select; switch the selection with the
// dangerous-action guard; the job's progress live from the event stream.

import { ApiError, get, post, put } from './api.js';
import { $, ago, badge, el, number, replaceRows, show } from './util.js';

const APP_STATE = {
  signed_on: ['signed on', 'ok'],
  signed_off: ['signed off', 'bad'],
  echo_failing: ['echo failing', 'bad'],
  unknown: ['not signed on yet', 'muted'],
};

export class BanksPage {
  constructor(bus) {
    this.bus = bus;
    this.active = false;
    this.banks = [];
    this.stats = new Map();
    this.selected = new Set();
    this.sort = { key: 'id', dir: 1 };
    this.job = null;
    this.role = 'viewer';
    this.tbody = $('#banks-table tbody');
    this.form = $('#switch-form');

    $('#bank-filter').addEventListener('input', () => this.render());
    $('#only-mismatch').addEventListener('change', () => this.render());
    $('#select-all').addEventListener('change', (e) => {
      for (const b of this.visible()) {
        if (e.target.checked) this.selected.add(b.id);
        else this.selected.delete(b.id);
      }
      this.render();
    });
    for (const th of document.querySelectorAll('#banks-table th[data-sort]')) {
      th.addEventListener('click', () => {
        const key = th.dataset.sort;
        this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
        this.render();
      });
    }
    for (const name of ['to', 'mode']) this.form[name].addEventListener('change', () => this.renderGuard());
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });

    let refetch = null;
    const soon = () => {
      clearTimeout(refetch);
      refetch = setTimeout(() => this.active && this.load(), 150);
    };
    bus.addEventListener('resync', () => this.active && this.load());
    bus.addEventListener('route', soon);
    bus.addEventListener('stats', (e) => this.onStats(e.detail, soon));
    bus.addEventListener('job_bank', (e) => this.onJobBank(e.detail));
    bus.addEventListener('job_done', (e) => this.onJobDone(e.detail));
    bus.addEventListener('lagged', () => this.job && this.loadJob(this.job.id));
  }

  setRole(role) {
    this.role = role;
  }

  setActive(active) {
    this.active = active;
    if (active) this.load();
  }

  async load() {
    try {
      const [data, nodes] = await Promise.all([get('/api/v1/banks'), get('/api/v1/nodes')]);
      this.banks = data.banks;
      this.fillNodes(nodes.nodes);
      this.stats.clear();
      const ids = new Set(this.banks.map((b) => b.id));
      for (const id of this.selected) if (!ids.has(id)) this.selected.delete(id);
      this.render();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) $('#switch-error').textContent = err.message;
    }
  }

  // The target list comes from the configuration's nodes, marking those that cannot take banks.
  fillNodes(nodes) {
    const select = this.form.to;
    const chosen = select.value;
    select.replaceChildren(...nodes.map((n) => el('option', {
      value: n.id,
      text: `${n.id}${n.up ? '' : ' (down)'}${n.maintenance ? ' (maintenance)' : ''}`,
    })));
    if (nodes.some((n) => n.id === chosen)) select.value = chosen;
  }

  onStats(stats, refetch) {
    for (const s of stats.banks) {
      const bank = this.banks.find((b) => b.id === s.id);
      if (!bank) continue;
      // A session came or went, or changed state: the per-session detail is re-read.
      const known = this.stats.get(s.id) ?? summarize(bank);
      if (known.sessions_up !== s.sessions_up || known.signed_on !== s.signed_on ||
          known.echo_failing !== s.echo_failing) {
        refetch();
      }
      this.stats.set(s.id, s);
      bank.rate_per_s = s.rate_per_s;
      bank.inflight = s.inflight;
    }
    if (this.active) this.render();
  }

  visible() {
    const words = $('#bank-filter').value.toLowerCase().split(/\s+/).filter(Boolean);
    const mismatch = $('#only-mismatch').checked;
    const list = this.banks.filter((b) => {
      if (mismatch && b.active_node === b.intent_node) return false;
      const states = b.sessions.map((s) => s.application).join(' ');
      const hay = `${b.id} ${b.name} node:${b.active_node} intent:${b.intent_node} ${states} ${
        b.maintenance ? 'maintenance' : ''}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
    const { key, dir } = this.sort;
    const value = (b) => (key === 'idle' ? (this.stats.get(b.id)?.idle_secs ?? minIdle(b) ?? Infinity) : b[key]);
    return list.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * dir || a.id.localeCompare(b.id);
    });
  }

  render() {
    const list = this.visible();
    replaceRows(this.tbody, list.map((b) => this.row(b)));
    $('#bank-count').textContent = `${list.length} of ${this.banks.length} banks, ${this.selected.size} selected`;
    $('#select-all').checked = list.length > 0 && list.every((b) => this.selected.has(b.id));
    this.renderGuard();
  }

  row(b) {
    const live = this.stats.get(b.id);
    const sessions = b.sessions.length
      ? b.sessions.map((s) => {
        const [label, kind] = APP_STATE[s.application] ?? [s.application, 'muted'];
        return el('div', { class: 'session' },
          el('span', { class: 'muted', text: `#${s.id} ${s.peer}` }), ' ',
          badge(s.transport === 'up' ? 'TCP up' : 'TCP down', s.transport === 'up' ? 'ok' : 'bad'), ' ',
          badge(label, kind),
          s.inflight ? el('span', { class: 'muted', text: ` ${s.inflight} in flight` }) : null);
      })
      : [badge('no session', 'bad')];
    const away = b.active_node !== b.intent_node;
    const checkbox = el('input', {
      type: 'checkbox',
      id: `sel-${b.id}`,
      'aria-label': `select ${b.id}`,
      checked: this.selected.has(b.id),
      onchange: (e) => {
        if (e.target.checked) this.selected.add(b.id);
        else this.selected.delete(b.id);
        this.render();
      },
    });
    const maint = el('input', {
      type: 'checkbox',
      'aria-label': `maintenance of ${b.id}`,
      checked: b.maintenance,
      disabled: this.role === 'viewer',
      onchange: (e) => this.setMaintenance(b, e.target),
    });
    return el('tr', { 'data-bank': b.id, class: this.selected.has(b.id) ? 'selected' : '' },
      el('td', {}, checkbox),
      el('td', {}, el('strong', { text: b.id }), el('div', { class: 'muted', text: b.name })),
      el('td', { class: 'node' }, badge(b.active_node, 'node'),
        b.switching_job ? el('span', { class: 'muted', text: ` switching (job ${b.switching_job})` }) : null),
      el('td', {}, away ? badge(`${b.intent_node} (away)`, 'warn') : b.intent_node),
      el('td', {}, sessions),
      el('td', { class: 'num' }, number(b.inflight)),
      el('td', { class: 'num' }, number(b.rate_per_s, 1)),
      el('td', { class: 'num' }, ago(live ? live.idle_secs : minIdle(b))),
      el('td', { class: 'num' }, ago(live ? live.since_echo_secs : minEcho(b))),
      el('td', {}, maint));
  }

  async setMaintenance(bank, box) {
    const on = box.checked;
    const reason = window.prompt(`Reason for ${on ? 'setting' : 'clearing'} maintenance on ${bank.id}:`);
    if (!reason) {
      box.checked = !on;
      return;
    }
    try {
      await put(`/api/v1/banks/${encodeURIComponent(bank.id)}/maintenance`,
        { maintenance: on, reason, version: bank.version });
    } catch (err) {
      box.checked = !on;
      $('#switch-error').textContent = err.code === 'conflict'
        ? `${bank.id} was changed by someone else meanwhile; the table is re-read. ${err.message}`
        : err.message;
    }
    this.load();
  }

  selection() {
    return this.banks.filter((b) => this.selected.has(b.id));
  }

  impact() {
    const banks = this.selection();
    const to = this.form.to.value;
    const moving = banks.filter((b) => b.active_node !== to);
    let sessions = 0;
    let signedOn = 0;
    let rate = 0;
    let inflight = 0;
    for (const b of moving) {
      sessions += b.sessions.length;
      signedOn += b.sessions.filter((s) => s.application === 'signed_on').length;
      rate += b.rate_per_s;
      inflight += b.inflight;
    }
    return { banks, moving, sessions, signedOn, rate, inflight };
  }

  dangerous() {
    const all = this.banks.length > 1 && this.selected.size === this.banks.length;
    return all || this.form.mode.value === 'force';
  }

  renderGuard() {
    const { banks, moving, sessions, signedOn, rate, inflight } = this.impact();
    const to = this.form.to.value;
    $('#switch-selection').textContent = banks.length
      ? `${banks.length} selected: ${banks.map((b) => b.id).join(', ')}`
      : 'No bank selected.';
    $('#impact').textContent = `${moving.length} bank(s) move to node ${to} ` +
      `(${banks.length - moving.length} already there), ${sessions} session(s) of which ${signedOn} signed on, ` +
      `${number(rate, 1)} msg/s now, ${inflight} request(s) in flight.`;
    const danger = this.dangerous();
    show($('#switch-guard'), danger);
    $('#guard-why').textContent = this.selected.size === this.banks.length && this.banks.length > 1
      ? 'every bank is selected'
      : 'force cuts over without waiting for requests in flight';
    $('#confirm-target').textContent = to;
    this.form.querySelector('button[type=submit]').disabled = banks.length === 0;
  }

  async submit() {
    const err = $('#switch-error');
    err.textContent = '';
    const banks = this.selection();
    const to = this.form.to.value;
    const mode = this.form.mode.value;
    const reason = this.form.reason.value.trim();
    if (!banks.length) return;
    if (!reason) {
      err.textContent = 'Give a reason (change ticket).';
      return;
    }
    if (this.dangerous() && this.form.confirm.value.trim() !== to) {
      err.textContent = `Type ${to} to confirm.`;
      return;
    }
    try {
      let accepted;
      if (this.selected.size === this.banks.length && this.banks.length > 1) {
        accepted = await post('/api/v1/switch', { banks: 'all', to, mode, reason });
      } else if (banks.length === 1) {
        accepted = await post(`/api/v1/banks/${encodeURIComponent(banks[0].id)}/switch`, { to, mode, reason });
      } else {
        accepted = await post('/api/v1/switch', { banks: banks.map((b) => b.id), to, mode, reason });
      }
      this.form.confirm.value = '';
      this.form.reason.value = '';
      await this.loadJob(accepted.job_id);
      $('#job-progress').scrollIntoView({ block: 'nearest' });
    } catch (e) {
      err.textContent = e.message;
    }
  }

  async loadJob(id) {
    this.job = await get(`/api/v1/jobs/${id}`);
    this.renderJob();
  }

  onJobBank(ev) {
    if (!this.job || ev.job !== this.job.id) return;
    const bank = this.job.banks[ev.bank];
    if (!bank) return;
    bank.phase = ev.phase;
    if (ev.outcome) bank.outcome = ev.outcome;
    this.renderJob();
  }

  onJobDone(ev) {
    if (!this.job || ev.job !== this.job.id) return;
    this.job.state = 'done';
    this.job.summary = ev.summary;
    this.renderJob();
    this.load();
  }

  renderJob() {
    const job = this.job;
    show($('#job-progress'), true);
    $('#job-id').textContent = String(job.id);
    const stateNode = $('#job-state');
    stateNode.textContent = job.state;
    stateNode.className = `badge ${job.state === 'done' ? 'ok' : 'warn'}`;
    const s = job.summary;
    $('#job-summary').textContent = job.state === 'done'
      ? `${s.switched} switched, ${s.rolled_back} rolled back, ${s.skipped} skipped of ${s.banks}; ` +
        `${s.held_messages} message(s) held, hold p50 ${s.hold_p50_micros} µs, max ${s.hold_max_micros} µs. ` +
        `Reason: ${job.reason}`
      : `${Object.keys(job.banks).length} bank(s), ${job.mode}. Reason: ${job.reason}`;
    replaceRows($('#job-banks'), Object.entries(job.banks).map(([id, r]) => {
      let outcome = '…';
      let kind = 'muted';
      if (r.skipped) [outcome, kind] = [`skipped: ${r.skipped}`, 'muted'];
      else if (r.outcome?.switched) [outcome, kind] = ['switched', 'ok'];
      else if (r.outcome) [outcome, kind] = [`rolled back: ${r.outcome.aborted ?? ''}`, 'bad'];
      return el('tr', { 'data-job-bank': id },
        el('td', { text: id }), el('td', { text: r.from }), el('td', { text: r.to }),
        el('td', { class: 'phase', text: r.phase }), el('td', {}, badge(outcome, kind)),
        el('td', { class: 'num', text: r.held_max ?? 0 }),
        el('td', { class: 'num', text: r.outcome ? r.outcome.hold_micros : '—' }));
    }));
  }
}

function summarize(bank) {
  const count = (state) => bank.sessions.filter((s) => s.application === state).length;
  return { sessions_up: bank.sessions.length, signed_on: count('signed_on'), echo_failing: count('echo_failing') };
}

function minIdle(bank) {
  const v = bank.sessions.map((s) => s.idle_secs);
  return v.length ? Math.min(...v) : null;
}

function minEcho(bank) {
  const v = bank.sessions.map((s) => s.since_echo_secs).filter((x) => x !== null && x !== undefined);
  return v.length ? Math.min(...v) : null;
}
