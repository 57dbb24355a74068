// Nodes, jobs, appliance pair, audit log, users and tokens.

import { ApiError, del, get, patch, post, put } from './api.js';
import { $, ago, badge, el, number, replaceRows, show, time } from './util.js';

class Page {
  constructor(bus) {
    this.bus = bus;
    this.active = false;
    this.role = 'viewer';
    bus.addEventListener('resync', () => this.active && this.load());
  }

  setRole(role) {
    this.role = role;
  }

  setActive(active) {
    this.active = active;
    if (active) this.load();
  }

  error(node, err) {
    if (err instanceof ApiError && err.status === 401) return;
    node.textContent = err.message;
  }
}

export class NodesPage extends Page {
  constructor(bus) {
    super(bus);
    this.nodes = [];
    bus.addEventListener('node', () => this.active && this.load());
    bus.addEventListener('route', () => this.active && this.load());
    bus.addEventListener('stats', (e) => {
      for (const s of e.detail.nodes) {
        const node = this.nodes.find((n) => n.id === s.id);
        if (node) Object.assign(node, { up: s.up, rtt_micros: s.rtt_micros });
      }
      if (this.active) this.render();
    });
  }

  async load() {
    try {
      const [nodes, banks] = await Promise.all([get('/api/v1/nodes'), get('/api/v1/banks')]);
      this.nodes = nodes.nodes;
      this.banks = banks.banks;
      this.render();
    } catch (err) {
      this.error($('#nodes-error'), err);
    }
  }

  render() {
    replaceRows($('#nodes-table tbody'), this.nodes.map((n) => {
      const on = (this.banks ?? []).filter((b) => b.active_node === n.id).map((b) => b.id);
      const toggle = this.role === 'viewer' ? null : el('button', {
        type: 'button',
        text: n.maintenance ? 'End maintenance' : 'Maintenance',
        onclick: () => this.toggle(n),
      });
      return el('tr', { 'data-node': n.id },
        el('td', {}, el('strong', { text: n.id })),
        el('td', {}, n.up ? badge('up', 'ok') : badge('down', 'bad')),
        el('td', { class: 'num', text: number(n.rtt_micros) }),
        el('td', { text: n.up_for_secs === null ? '—' : ago(n.up_for_secs) }),
        el('td', { text: `${n.recent_down_events} / ${n.down_events}` }),
        el('td', {}, n.flapping ? badge('flapping', 'bad') : 'no'),
        el('td', {}, n.maintenance ? badge('maintenance', 'warn') : 'no'),
        el('td', { text: `${n.banks_active}: ${on.join(', ')}` }),
        el('td', { class: 'operator-only' }, toggle));
    }));
  }

  async toggle(node) {
    const on = !node.maintenance;
    const reason = window.prompt(`Reason for ${on ? 'putting' : 'taking'} node ${node.id} ${on ? 'in' : 'out of'} maintenance:`);
    if (!reason) return;
    try {
      await put(`/api/v1/nodes/${encodeURIComponent(node.id)}/maintenance`,
        { maintenance: on, reason, version: node.version });
      $('#nodes-error').textContent = '';
    } catch (err) {
      this.error($('#nodes-error'), err);
    }
    this.load();
  }
}

export class JobsPage extends Page {
  constructor(bus) {
    super(bus);
    for (const name of ['job_started', 'job_done']) bus.addEventListener(name, () => this.active && this.load());
  }

  async load() {
    try {
      const { jobs } = await get('/api/v1/jobs?limit=100');
      replaceRows($('#jobs-table tbody'), jobs.map((j) => el('tr', { 'data-job': j.id },
        el('td', { text: j.id }),
        el('td', { text: time(j.created_unix_ms) }),
        el('td', { text: j.origin }),
        el('td', { text: j.mode }),
        el('td', { text: j.reason }),
        el('td', {}, badge(j.state, j.state === 'done' ? 'ok' : 'warn')),
        el('td', { class: 'num', text: j.summary.switched }),
        el('td', { class: 'num', text: j.summary.rolled_back }),
        el('td', { class: 'num', text: j.summary.skipped }),
        el('td', { class: 'num', text: `${j.summary.hold_p50_micros} / ${j.summary.hold_max_micros}` }))));
    } catch (err) {
      this.error($('#jobs-error'), err);
    }
  }
}

// Renders any JSON value as nested definition lists, so the page shows every field the
// appliance API reports without this file having to know them all.
function describe(value) {
  if (value === null || value === undefined) return el('span', { class: 'muted', text: '—' });
  if (typeof value !== 'object') return el('span', { text: String(value) });
  if (Array.isArray(value)) return el('ol', {}, value.map((v) => el('li', {}, describe(v))));
  return el('dl', {}, Object.entries(value).flatMap(([k, v]) => [el('dt', { text: k.replaceAll('_', ' ') }),
    el('dd', {}, describe(v))]));
}

const ROLE_NOTE = {
  standalone: 'Standalone: no twin is configured, so there is no planned switchover from here.',
  active: 'Active: this appliance holds the VIP and the bank sessions.',
  standby: 'Standby: the twin serves; this appliance follows its state and can take the sessions over.',
};

function micros(v) {
  return v === null || v === undefined ? '—' : `${number(v / 1000, 1)} ms`;
}

// The fields an operator looks for first, in a fixed table; the raw outcome below it.
function applianceSummary(s) {
  const row = (key, label, value) => el('tr', { 'data-key': key }, el('th', { text: label }),
    el('td', {}, value));
  const twin = s.twin;
  const vrrp = s.vrrp;
  const last = s.last_switchover;
  const outcome = last?.outcome;
  const rows = [
    row('appliance', 'This appliance', `${s.appliance_id}`),
    row('role', 'Role', badge(s.role, s.role === 'standalone' ? 'muted' : 'ok')),
    row('maintenance', 'Maintenance', s.maintenance ? 'yes (refuses to take sessions over)' : 'no'),
    row('vrrp', 'VRRP', vrrp
      ? `${vrrp.instance}: ${vrrp.state}, priority ${vrrp.priority ?? '—'} (configured ${vrrp.configured_priority})${vrrp.fault_set ? ', fault set by us' : ''}`
      : '—'),
    row('twin', 'Twin', twin
      ? `${twin.id ?? '(not yet seen)'}: ${twin.connected ? 'link up' : 'link down'}, rtt ${micros(twin.rtt_micros)}`
      : '—'),
    row('replication', 'Replication', `seq ${s.replication.seq}, acked ${s.replication.acked}, `
      + `lag ${s.replication.lag_changes} change(s) / ${s.replication.lag_ms} ms`),
    row('running', 'Switchover under way', s.switchover
      ? `#${s.switchover.switch_id} (${s.switchover.side}): ${s.switchover.phase}` : 'none'),
    row('last', 'Last switchover', last
      ? `#${outcome.switch_id} as ${last.side} at ${time(last.finished_unix_ms)}: `
        + `${outcome.committed ? 'committed' : `aborted (${outcome.aborted ?? 'unknown'})`}, `
        + `${outcome.sessions} session(s), frozen ${micros(outcome.times.frozen_micros)}, `
        + `total ${micros(outcome.times.total_micros)}${last.reason ? ` — ${last.reason}` : ''}`
      : 'none'),
  ];
  return el('div', {},
    el('p', { class: 'muted', id: 'appliance-role-note', text: ROLE_NOTE[s.role] ?? '' }),
    el('table', { id: 'appliance-table' }, el('tbody', {}, rows)),
    outcome ? el('details', {}, el('summary', { text: 'Last switchover, every step' }), describe(outcome)) : null);
}

export class AppliancePage extends Page {
  constructor(bus) {
    super(bus);
    this.status = null;
    this.lastFetch = 0;
    $('#appliance-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.switchover(e.currentTarget);
    });
    // The appliance state changes with keepalived and the twin, not with bank traffic: the
    // server's periodic stats event is the tick that refreshes it while the page is open.
    bus.addEventListener('stats', () => {
      if (this.active && Date.now() - this.lastFetch > 900) this.load();
    });
  }

  async load() {
    this.lastFetch = Date.now();
    const info = $('#appliance-info');
    try {
      this.status = await get('/api/v1/appliance');
      info.replaceChildren(el('h2', { text: 'Appliance pair' }), applianceSummary(this.status));
      $('#appliance-error').textContent = '';
    } catch (err) {
      this.status = null;
      if (err instanceof ApiError && err.status === 404) {
        info.replaceChildren(el('h2', { text: 'Appliance pair' }),
          el('p', { class: 'muted', id: 'appliance-unavailable',
            text: 'Not available: this mups does not run an appliance pair (no /api/v1/appliance).' }));
      } else {
        this.error($('#appliance-error'), err);
      }
    }
    // Only the active side of a pair hands over; a standby or a standalone has nothing to give.
    const canSwitch = this.status?.role === 'active' && !this.status.switchover && this.role !== 'viewer';
    show($('#appliance-form'), canSwitch);
    if (canSwitch) {
      const { banks } = await get('/api/v1/banks');
      const sessions = banks.reduce((n, b) => n + b.sessions.length, 0);
      const rate = banks.reduce((n, b) => n + b.rate_per_s, 0);
      const inflight = banks.reduce((n, b) => n + b.inflight, 0);
      $('#appliance-impact').textContent =
        `${banks.length} bank(s), ${sessions} session(s), ${number(rate, 1)} msg/s now, ${inflight} in flight.`;
    }
  }

  async switchover(form) {
    const err = $('#appliance-error');
    err.textContent = '';
    const reason = form.reason.value.trim();
    if (!reason) {
      err.textContent = 'Give a reason (change ticket).';
      return;
    }
    if (form.confirm.value.trim() !== 'switchover') {
      err.textContent = 'Type switchover to confirm.';
      return;
    }
    try {
      await post('/api/v1/appliance/switchover', { reason });
      form.reset();
      this.load();
    } catch (e) {
      err.textContent = e.status === 404 ? 'Not available on this mups.' : e.message;
    }
  }
}

export class AuditPage extends Page {
  constructor(bus) {
    super(bus);
    const form = $('#audit-filter');
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.load();
    });
    form.addEventListener('change', () => this.updateExport());
    // A switch job's `switch.done` entry is written when the job ends.
    bus.addEventListener('job_done', () => this.active && setTimeout(() => this.load(), 300));
  }

  query() {
    const form = $('#audit-filter');
    const q = new URLSearchParams();
    for (const name of ['actor', 'action', 'result']) {
      const v = form[name].value.trim();
      if (v) q.set(name, v);
    }
    if (form.since.value) q.set('since', new Date(form.since.value).toISOString());
    return q;
  }

  updateExport() {
    for (const format of ['csv', 'jsonl']) {
      const q = this.query();
      q.set('format', format);
      $(`#export-${format}`).href = `/api/v1/audit/export?${q}`;
    }
  }

  async load() {
    this.updateExport();
    const q = this.query();
    q.set('limit', '500');
    try {
      const { entries } = await get(`/api/v1/audit?${q}`);
      entries.reverse();
      replaceRows($('#audit-table tbody'), entries.map((e) => el('tr', { 'data-seq': e.seq, class: `result-${e.result}` },
        el('td', { text: e.seq }),
        el('td', { text: time(e.time) }),
        el('td', { text: e.role ? `${e.actor} (${e.role})` : e.actor }),
        el('td', { text: e.source ?? '—' }),
        el('td', { class: 'action', text: e.action }),
        el('td', { text: e.target ?? '' }),
        el('td', { text: e.reason ?? '' }),
        el('td', {}, badge(e.result, e.result === 'ok' ? 'ok' : 'bad')),
        el('td', { class: 'message', text: e.message ?? '' }))));
      $('#audit-error').textContent = '';
    } catch (err) {
      this.error($('#audit-error'), err);
    }
  }
}

export class UsersPage extends Page {
  constructor(bus) {
    super(bus);
    $('#user-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.currentTarget;
      await this.act(async () => {
        await post('/api/v1/users', { name: f.name.value.trim(), role: f.role.value, password: f.password.value });
        f.reset();
      });
    });
    $('#token-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = e.currentTarget;
      await this.act(async () => {
        const t = await post('/api/v1/tokens', {
          label: f.label.value.trim(), role: f.role.value, expires_in_days: Number(f.expires_in_days.value),
        });
        f.reset();
        const note = $('#new-token');
        note.replaceChildren('New token (shown once, copy it now): ', el('code', { text: t.token }));
        show(note, true);
      });
    });
  }

  async act(fn) {
    $('#users-error').textContent = '';
    try {
      await fn();
    } catch (err) {
      this.error($('#users-error'), err);
    }
    this.load();
  }

  async load() {
    try {
      const [{ users }, { tokens }] = await Promise.all([get('/api/v1/users'), get('/api/v1/tokens')]);
      replaceRows($('#users-table tbody'), users.map((u) => {
        const role = el('select', { 'aria-label': `role of ${u.name}`,
          onchange: (e) => this.act(() => patch(`/api/v1/users/${u.name}`, { version: u.version, role: e.target.value })) },
        ['viewer', 'operator', 'admin'].map((r) => el('option', { value: r, text: r, selected: r === u.role })));
        return el('tr', { 'data-user': u.name },
          el('td', { text: u.name }),
          el('td', {}, role),
          el('td', {}, u.disabled ? badge('disabled', 'bad') : 'no'),
          el('td', { text: time(u.updated) }),
          el('td', {},
            el('button', { type: 'button', text: u.disabled ? 'Enable' : 'Disable',
              onclick: () => this.act(() => patch(`/api/v1/users/${u.name}`, { version: u.version, disabled: !u.disabled })) }),
            ' ',
            el('button', { type: 'button', class: 'danger', text: 'Delete',
              onclick: () => window.confirm(`Delete user ${u.name} and their tokens?`) &&
                this.act(() => del(`/api/v1/users/${u.name}?version=${u.version}`)) })));
      }));
      replaceRows($('#tokens-table tbody'), tokens.map((t) => el('tr', { 'data-token': t.id },
        el('td', {}, el('code', { text: t.id })),
        el('td', { text: t.label }),
        el('td', { text: t.owner }),
        el('td', { text: t.role }),
        el('td', { text: time(t.expires) }),
        el('td', { text: time(t.last_used) }),
        el('td', {}, t.revoked ? badge('revoked', 'muted') : el('button', { type: 'button', class: 'danger', text: 'Revoke',
          onclick: () => window.confirm(`Revoke token ${t.label}?`) && this.act(() => del(`/api/v1/tokens/${t.id}`)) })))));
    } catch (err) {
      this.error($('#users-error'), err);
    }
  }
}
