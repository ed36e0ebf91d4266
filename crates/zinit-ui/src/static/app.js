// zinit_ui's page: plain JavaScript, no build step. Live state comes from two
// server-sent event streams (/api/stream and /api/logs); actions are POSTs
// carrying the anti-CSRF token. Text from the server only ever goes into
// textContent, never into HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF = meta('csrf-token');
const MAX_LOG_LINES = 3000;

// ---------------------------------------------------------------- helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'style') Object.assign(node.style, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': CSRF },
    body: JSON.stringify(body || {}),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* no body */ }
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

const secs = (s) => (s >= 10 ? s.toFixed(1) : s.toFixed(2)) + ' s';

function age(ms) {
  if (ms == null || ms < 0) return '';
  let s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return `${m}m ${String(s).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function bytes(n) {
  if (n == null) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function clock(ms) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// ------------------------------------------------------------------ state

const state = {
  conn: null,          // {up, message, denied, server, socket}
  units: new Map(),    // name -> unit
  stats: {},           // name -> {cpu_percent, memory_bytes, processes}
  offset: 0,           // server clock minus ours, ms
  pending: new Set(),  // "unit/action" in flight
  streamUp: false,
  shutdown: null,      // {id, origin, server_pid, events, done, cut, lastAt, lastRecv}
  dismissed: null,     // id of a shutdown whose panel was closed
};
const now = () => Date.now() + state.offset;

// ----------------------------------------------------------- connection

function renderConnection() {
  const banner = $('banner');
  const dot = $('conn-dot');
  const conn = state.conn;
  let text = null;
  let denied = false;
  if (!state.streamUp) {
    text = 'zinit_ui unreachable, reconnecting…';
  } else if (conn && !conn.up) {
    denied = !!conn.denied;
    text = denied ? conn.message : `server unreachable, reconnecting… — ${conn.message}`;
  }
  banner.hidden = text === null;
  banner.textContent = text || '';
  banner.classList.toggle('denied', denied);
  const up = state.streamUp && conn && conn.up;
  dot.className = 'dot ' + (up ? 'up' : 'down');
  $('units-panel').classList.toggle('stale', !up);
  $('shutdown-btn').disabled = !up;
  if (up) {
    const s = conn.server;
    $('server').textContent =
      `zinit_server ${s.version} · pid ${s.pid} · ${s.socket || conn.socket} · ${s.cgroups ? 'cgroups v2' : 'process groups'}`;
  } else if (conn) {
    $('server').textContent = conn.socket || '';
  }
}

// ------------------------------------------------------------ units table

const COLUMNS = ['name', 'kind', 'state', 'pid', 'uptime', 'restarts', 'reason', 'cpu', 'mem', 'actions'];
const rows = new Map(); // name -> {tr, cells, buttons}

function makeRow(name) {
  const tr = el('tr', { 'data-unit': name });
  const cells = {};
  for (const column of COLUMNS) {
    const td = el('td', { 'data-col': column });
    if (['pid', 'uptime', 'restarts', 'cpu', 'mem'].includes(column)) td.className = 'num';
    if (column === 'reason') td.className = 'reason';
    if (column === 'name') td.className = 'name';
    if (column === 'actions') td.className = 'actions';
    cells[column] = td;
    tr.append(td);
  }
  const buttons = {};
  for (const action of ['start', 'stop', 'restart']) {
    buttons[action] = el('button', {
      class: 'small', type: 'button', 'data-action': action, text: action[0].toUpperCase() + action.slice(1),
      onclick: () => act(name, action),
    });
    cells.actions.append(buttons[action]);
  }
  buttons.logs = el('button', {
    class: 'small', type: 'button', 'data-action': 'logs', text: 'Logs',
    onclick: () => { $('log-unit').value = name; openLogs(name); },
  });
  cells.actions.append(buttons.logs);
  const badge = el('span', { class: 'state' });
  cells.state.append(badge);
  return { tr, cells, buttons, badge };
}

function fillRow(row, unit) {
  const c = row.cells;
  c.name.textContent = unit.name;
  c.name.title = unit.command || '';
  c.kind.textContent = unit.kind + (unit.oneshot && unit.kind === 'service' ? ' (oneshot)' : '');
  row.badge.textContent = unit.state;
  row.badge.className = 'state ' + unit.state;
  row.tr.dataset.state = unit.state;
  c.pid.textContent = unit.pid ? unit.pid : '';
  c.restarts.textContent = unit.restarts;
  let reason = unit.reason || '';
  if (unit.last_exit && !['running', 'starting'].includes(unit.state)) reason += ` (last: ${unit.last_exit})`;
  if (unit.config_errors && unit.config_errors.length) reason = unit.config_errors.join('; ');
  c.reason.textContent = reason;
  c.reason.title = reason;
  // Resource use of units that have processes (the last sample of a
  // stopped unit would be stale).
  const alive = ['running', 'starting', 'stopping'].includes(unit.state) || unit.processes_alive;
  const stats = alive ? state.stats[unit.name] : null;
  c.cpu.textContent = stats ? `${stats.cpu_percent.toFixed(1)} %` : '';
  c.mem.textContent = stats ? bytes(stats.memory_bytes) : '';
  c.mem.title = stats ? `${stats.processes} process(es)` : '';
  const busy = (a) => state.pending.has(`${unit.name}/${a}`);
  const invalid = unit.state === 'invalid';
  row.buttons.start.disabled = invalid || busy('start') || ['running', 'starting'].includes(unit.state);
  row.buttons.stop.disabled = invalid || busy('stop') || ['stopped', 'exited', 'failed'].includes(unit.state) && !unit.processes_alive;
  row.buttons.restart.disabled = invalid || busy('restart') || unit.kind === 'job';
  fillUptime(row, unit);
}

function fillUptime(row, unit) {
  const live = ['running', 'starting', 'stopping'].includes(unit.state) && unit.since;
  row.cells.uptime.textContent = live ? age(now() - unit.since) : '';
}

function renderUnits() {
  const tbody = $('units').tBodies[0];
  const names = [...state.units.keys()].sort();
  for (const [name, row] of rows) {
    if (!state.units.has(name)) { row.tr.remove(); rows.delete(name); }
  }
  let before = null;
  for (let i = names.length - 1; i >= 0; i--) {
    const name = names[i];
    let row = rows.get(name);
    if (!row) { row = makeRow(name); rows.set(name, row); }
    fillRow(row, state.units.get(name));
    if (row.tr.nextSibling !== before || row.tr.parentNode !== tbody) tbody.insertBefore(row.tr, before);
    before = row.tr;
  }
  renderCount();
  renderLogChoices();
}

function renderCount() {
  const units = [...state.units.values()];
  const running = units.filter((u) => u.state === 'running').length;
  $('units-count').textContent = `${units.length} unit(s), ${running} running`;
}

function renderUnit(name) {
  const unit = state.units.get(name);
  const row = rows.get(name);
  if (unit && row) { fillRow(row, unit); renderCount(); } else renderUnits();
}

function result(text, detail, failed) {
  const list = $('results');
  list.prepend(el('li', { class: failed ? 'fail' : 'ok' },
    el('span', { class: 'when', text: clock(Date.now()) }),
    el('span', { class: 'what', text }), ' ', detail));
  while (list.children.length > 6) list.lastChild.remove();
}

function describe(action, data) {
  if (action === 'stop') {
    let text = data.outcome === 'nothing_running'
      ? 'nothing was running'
      : `stopped in ${secs(data.duration)}: ${data.outcome} (${data.processes_exited} exited, ${data.processes_killed} killed)`;
    if (data.leftovers.length) text += `; left: ${data.leftovers.map((l) => `${l.pid} (${l.name}): ${l.reason}`).join(', ')}`;
    if (data.running_dependents.length) text += `; still running, depending on it: ${data.running_dependents.join(', ')}`;
    return text;
  }
  const unit = data.unit;
  if (!unit) return 'done';
  const reason = unit.reason && !unit.reason.startsWith(unit.state) ? ` (${unit.reason})` : '';
  return `${unit.state}${unit.pid ? `, pid ${unit.pid}` : ''}${reason}`;
}

async function act(name, action) {
  const key = `${name}/${action}`;
  state.pending.add(key);
  renderUnit(name);
  try {
    const data = await post(`/api/units/${encodeURIComponent(name)}/${action}`);
    result(`${action} ${name}:`, describe(action, data), false);
  } catch (e) {
    result(`${action} ${name} failed:`, e.message, true);
  } finally {
    state.pending.delete(key);
    renderUnit(name);
  }
}

// --------------------------------------------------------------- the stream

function applySnapshot(snapshot) {
  state.offset = snapshot.now - Date.now();
  state.conn = snapshot.conn;
  state.units = new Map(snapshot.units.map((u) => [u.name, u]));
  state.stats = snapshot.stats || {};
  setShutdown(snapshot.shutdown);
  renderConnection();
  renderUnits();
}

function openStream() {
  const source = new EventSource('/api/stream');
  const on = (name, handler) => source.addEventListener(name, (e) => handler(JSON.parse(e.data)));
  source.onopen = () => { state.streamUp = true; renderConnection(); };
  source.onerror = () => {
    state.streamUp = false;
    renderConnection();
    // CLOSED means zinit_ui answered with an error (a login is needed, say):
    // load the page again. Otherwise the browser reconnects by itself.
    if (source.readyState === EventSource.CLOSED) setTimeout(() => window.location.reload(), 2000);
  };
  on('snapshot', (s) => {
    // Another zinit_ui process: this page's CSRF token and session are void.
    if (s.instance !== meta('instance')) { window.location.reload(); return; }
    state.streamUp = true;
    applySnapshot(s);
  });
  on('connection', (conn) => {
    state.conn = conn;
    if (!conn.up) {
      state.stats = {};
      for (const [name, row] of rows) fillRow(row, state.units.get(name));
    }
    renderConnection();
    renderShutdown();
  });
  on('units', (list) => { state.units = new Map(list.map((u) => [u.name, u])); renderUnits(); });
  on('unit', (unit) => {
    const known = state.units.has(unit.name);
    state.units.set(unit.name, unit);
    if (known) renderUnit(unit.name); else renderUnits();
  });
  on('unit_removed', ({ name }) => { state.units.delete(name); renderUnits(); });
  on('stats', (stats) => {
    state.stats = stats;
    for (const [name, row] of rows) fillRow(row, state.units.get(name));
  });
  on('warning', (w) => result(`warning ${w.unit}:`, w.text, true));
  on('shutdown_begin', (view) => setShutdown(view));
  on('shutdown_event', ({ id, event }) => {
    const sd = state.shutdown;
    if (!sd || sd.id !== id) return;
    sd.events.push(event);
    sd.lastAt = Math.max(sd.lastAt, event.at);
    sd.lastRecv = performance.now();
    scheduleShutdown();
  });
  on('shutdown_end', ({ id, cut }) => {
    const sd = state.shutdown;
    if (!sd || sd.id !== id) return;
    sd.done = true;
    sd.cut = cut;
    scheduleShutdown();
  });
}

// ------------------------------------------------------------------- logs

let logSource = null;
let logQueue = [];
let logTimer = null;
let logOpens = 0;
let logMissed = 0;
let logLabel = '';

function logStatus(text) {
  const missed = logMissed ? ` · ${logMissed} line(s) missed` : '';
  $('log-status').textContent = text + missed;
}

function renderLogChoices() {
  const select = $('log-unit');
  const chosen = select.value;
  const names = [...state.units.keys()].sort();
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join('\n') === names.join('\n')) return;
  while (select.options.length > 1) select.remove(1);
  for (const name of names) select.add(new Option(name, name));
  select.value = names.includes(chosen) ? chosen : '';
}

function logNotice(text, cls) {
  logQueue.push({ notice: text, cls: cls || 'notice' });
  flushSoon();
}

function flushSoon() {
  if (logTimer === null) logTimer = setTimeout(flushLog, 40);
}

function flushLog() {
  logTimer = null;
  const pane = $('log');
  const fragment = document.createDocumentFragment();
  for (const item of logQueue) {
    if (item.notice) {
      fragment.append(el('div', { class: item.cls, text: item.notice }));
    } else if (item.missed) {
      logMissed += item.missed;
      logStatus(`following ${logLabel}`);
      const who = item.by === 'ui' ? 'zinit_ui' : 'zinit_server';
      fragment.append(el('div', { class: 'missed', text: `⚠ ${item.missed} line(s) missed (dropped by ${who}: this reader fell behind)` }));
    } else {
      fragment.append(el('div', { class: `l ${item.stream}` },
        el('span', { class: 't', text: clock(item.time) + ' ' }),
        el('span', { class: 'u', text: item.unit + ' ' }),
        el('span', { class: 'x', text: item.text })));
    }
  }
  logQueue = [];
  pane.append(fragment);
  while (pane.childElementCount > MAX_LOG_LINES) pane.firstElementChild.remove();
  if ($('log-follow').checked) pane.scrollTop = pane.scrollHeight;
}

function openLogs(unit) {
  if (logSource) logSource.close();
  logQueue = [];
  $('log').replaceChildren();
  const label = unit || 'all units';
  logLabel = label;
  logMissed = 0;
  const source = new EventSource(`/api/logs?unit=${encodeURIComponent(unit)}&last=200`);
  logSource = source;
  const opened = ++logOpens;
  const again = (ms) => setTimeout(() => { if (logSource === source) openLogs(unit); }, ms);
  logStatus(`connecting to ${label}…`);
  source.onopen = () => {
    if (logSource !== source) return;
    if (source.seen) { $('log').replaceChildren(); logNotice(`reconnected: ${label}`); }
    source.seen = true;
    logStatus(`following ${label}`);
  };
  source.onerror = () => {
    if (logSource !== source) return;
    logStatus('log stream lost, reconnecting…');
    if (source.readyState === EventSource.CLOSED) again(2000);
  };
  source.addEventListener('line', (e) => { logQueue.push(JSON.parse(e.data)); flushSoon(); });
  source.addEventListener('missed', (e) => { logQueue.push(JSON.parse(e.data)); flushSoon(); });
  source.addEventListener('end', (e) => {
    source.close();
    logNotice(`${JSON.parse(e.data).message}; reconnecting…`);
    logStatus('log stream ended, reconnecting…');
    again(2000);
  });
  source.addEventListener('failure', (e) => {
    source.close();
    logNotice(`cannot follow ${label}: ${JSON.parse(e.data).error}`, 'notice');
    logStatus('not following');
    again(3000);
  });
  return opened;
}

// ---------------------------------------------------------------- shutdown

function setShutdown(view) {
  if (!view) { state.shutdown = null; renderShutdown(); return; }
  const events = view.events || [];
  state.shutdown = {
    id: view.id, origin: view.origin, server_pid: view.server_pid, events,
    done: view.done, cut: view.cut,
    lastAt: events.reduce((m, e) => Math.max(m, e.at), 0), lastRecv: performance.now(),
  };
  renderShutdown();
}

let shutdownFrame = null;
function scheduleShutdown() {
  if (shutdownFrame === null) shutdownFrame = setTimeout(() => { shutdownFrame = null; renderShutdown(); }, 30);
}

// What the events say so far.
function shutdownModel(sd) {
  const units = new Map();
  const get = (name) => {
    if (!units.has(name)) units.set(name, { name, signals: [], start: null, end: null });
    return units.get(name);
  };
  const m = { units, plan: null, blockers: [], blockersAt: 0, swept: [], sweepSignals: 0, verification: null, summary: null };
  for (const e of sd.events) {
    switch (e.kind) {
      case 'plan':
        m.plan = e;
        for (const u of e.units) get(u.name).planned = u;
        break;
      case 'unit_stopping': {
        const u = get(e.unit);
        Object.assign(u, { start: e.at, budget: e.budget, signal: e.signal, mode: e.mode });
        break;
      }
      case 'signal_sent':
        if (e.unit) get(e.unit).signals.push(e); else m.sweepSignals++;
        break;
      case 'unit_stopped': {
        const u = get(e.unit);
        Object.assign(u, { end: e.at, outcome: e.outcome, duration: e.duration, exit: e.exit_status,
          exited: e.processes_exited, killed: e.processes_killed });
        if (u.start === null) u.start = Math.max(0, e.at - e.duration);
        break;
      }
      case 'still_waiting': m.blockers = e.blockers; m.blockersAt = e.at; break;
      case 'process_swept': m.swept.push(e); break;
      case 'verification': m.verification = e; break;
      case 'summary': m.summary = e; break;
      default: break;
    }
  }
  m.blockers = m.blockers.filter((b) => !(units.get(b.unit) && units.get(b.unit).end !== null));
  return m;
}

function niceStep(total) {
  const raw = total / 8;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const f of [1, 2, 5, 10]) if (f * pow >= raw) return f * pow;
  return 10 * pow;
}

function eventLine(e) {
  const at = e.at.toFixed(2).padStart(6) + 's ';
  const pad = (s) => (s || 'sweep').padEnd(16);
  switch (e.kind) {
    case 'plan': return `${at}${e.dry_run ? 'dry run: would stop' : 'plan: stopping'} ${e.units.length} unit(s) within ${e.deadline.toFixed(0)}s`;
    case 'unit_stopping': return `${at}${pad(e.unit)} stopping: ${e.signal} (${e.mode}), budget ${e.budget.toFixed(1)}s`;
    case 'signal_sent': return `${at}${pad(e.unit)} ${e.signal} -> pid ${e.pid} (${e.name}, depth ${e.depth})`;
    case 'unit_stopped': return `${at}${pad(e.unit)} stopped in ${e.duration.toFixed(2)}s: ${e.outcome} (${e.processes_exited} exited, ${e.processes_killed} killed, main ${e.exit_status || '-'})`;
    case 'still_waiting': {
      const b = e.blockers[0];
      if (!b) return null;
      const more = e.blockers.length > 1 ? ` and ${e.blockers.length - 1} more` : '';
      return `${at}${pad(b.unit)} waiting for pid ${b.pid} (${b.name}), ${b.waiting.toFixed(1)}s of ${b.budget.toFixed(1)}s${more}`;
    }
    case 'process_swept': return `${at}sweep            killed pid ${e.pid} (${e.name}) with ${e.signal}: ${e.reason}`;
    case 'verification': return e.clean ? `${at}verified: no process left`
      : e.leftovers.map((l) => `${at}LEFT: pid ${l.pid} (${l.name}): ${l.reason}`).join('\n');
    case 'summary': return `${at}summary: ${e.clean ? 'clean' : 'NOT clean'} in ${e.duration.toFixed(2)}s; units ${e.units_graceful} graceful, ${e.units_killed} killed; processes ${e.processes_graceful} graceful, ${e.processes_killed} killed, ${e.processes_swept} swept, ${e.leftovers.length} left${e.deadline_hit ? '; the deadline cut in' : ''}`;
    default: return null;
  }
}

function table(headers, rowsData) {
  return el('table', { class: 'grid' },
    el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { text: h })))),
    el('tbody', {}, ...rowsData.map((r) => el('tr', {}, ...r.map((v) => el('td', { text: v }))))));
}

function renderShutdown() {
  const panel = $('shutdown-panel');
  const sd = state.shutdown;
  if (!sd || state.dismissed === sd.id) { panel.hidden = true; return; }
  panel.hidden = false;
  panel.dataset.id = sd.id;
  const m = shutdownModel(sd);
  const running = !sd.done;
  const liveAt = running ? sd.lastAt + (performance.now() - sd.lastRecv) / 1000 : sd.lastAt;
  const nowAt = m.summary ? m.summary.duration : liveAt;

  // State pill and meta line.
  const pill = $('sd-state');
  const serverGone = sd.done && state.conn && !state.conn.up;
  if (sd.cut) { pill.textContent = 'stream cut'; pill.className = 'pill cut'; }
  else if (m.summary) {
    pill.textContent = m.summary.clean ? 'clean' : 'not clean';
    pill.className = 'pill ' + (m.summary.clean ? 'clean' : 'unclean');
  } else { pill.textContent = 'running'; pill.className = 'pill'; }
  panel.dataset.state = sd.cut ? 'cut' : m.summary ? 'done' : 'running';
  const bits = [];
  bits.push(m.summary ? `finished in ${secs(m.summary.duration)}` : `${secs(nowAt)} so far`);
  if (m.plan) bits.push(`deadline ${m.plan.deadline.toFixed(0)} s`);
  bits.push(sd.origin === 'ui' ? 'started from this page' : 'joined (started elsewhere)');
  if (serverGone) bits.push('zinit_server has exited');
  if (sd.cut) bits.push(sd.cut);
  $('sd-meta').textContent = bits.join(' · ');
  $('sd-force').hidden = !running;

  // The time axis: what has happened, and the budgets of units still stopping.
  const units = [...m.units.values()];
  let total = Math.max(nowAt, 0.1);
  for (const u of units) {
    if (u.end !== null) total = Math.max(total, u.end);
    else if (u.start !== null && u.budget !== undefined) total = Math.max(total, u.start + u.budget);
  }
  total *= 1.04;
  const pct = (t) => `${Math.min(100, Math.max(0, (t / total) * 100))}%`;
  const box = $('sd-timeline');
  const step = niceStep(total);
  const scale = el('div', { class: 'scale' });
  for (let t = 0; t <= total + 1e-9; t += step) {
    scale.append(el('span', { style: { left: pct(t) }, text: `${+t.toFixed(2)}s` }));
  }
  const order = m.plan ? m.plan.units.map((u) => u.name) : [];
  for (const u of units) if (!order.includes(u.name)) order.push(u.name);
  const out = [];
  for (const name of order) {
    const u = m.units.get(name);
    const track = el('div', { class: 'track' });
    let status = '';
    let cls = 'pending';
    if (u.start !== null) {
      const end = u.end !== null ? u.end : nowAt;
      cls = u.end !== null ? u.outcome : 'stopping';
      track.append(el('div', {
        class: `bar ${cls}`, 'data-outcome': cls,
        style: { left: pct(u.start), width: `calc(${pct(end)} - ${pct(u.start)})` },
        title: `${name}: ${u.signal} (${u.mode}), budget ${u.budget.toFixed(1)}s`,
      }));
      if (u.budget !== undefined && u.start + u.budget <= total) {
        track.append(el('div', { class: 'budget', style: { left: pct(u.start + u.budget) }, title: `budget ends at ${(u.start + u.budget).toFixed(2)}s` }));
      }
      // One tick per distinct position, SIGKILL drawn over the others.
      const seen = new Map();
      for (const s of u.signals) {
        const key = `${Math.round((s.at / total) * 400)}`;
        const kill = s.signal === 'SIGKILL';
        const prev = seen.get(key);
        if (!prev || (kill && !prev.kill)) seen.set(key, { at: s.at, kill, n: (prev ? prev.n : 0) + 1, signal: s.signal });
        else prev.n++;
      }
      for (const t of seen.values()) {
        track.append(el('div', {
          class: t.kill ? 'sig kill' : 'sig', style: { left: pct(t.at) },
          title: `${t.signal} at ${t.at.toFixed(2)}s (${t.n} process(es))`,
        }));
      }
      if (u.end !== null) {
        status = `${u.outcome} in ${secs(u.duration)} · ${u.exited} exited · ${u.killed} killed`;
      } else {
        status = `stopping ${secs(Math.max(0, nowAt - u.start))} of ${secs(u.budget)}`;
      }
    } else if (u.planned) {
      status = u.planned.waits_for.length ? `waits for ${waitsFor(u.planned)}` : 'about to stop';
    }
    if (running && u.end === null) track.append(el('div', { class: 'now', style: { left: pct(nowAt) } }));
    const signals = u.signals.length;
    out.push(el('div', { class: 'tl-row', 'data-unit': name, 'data-outcome': cls, title: `${signals} signal(s) sent` },
      el('div', { class: 'lbl', title: name }, name,
        el('small', { text: u.signal || (u.planned ? u.planned.signal : '') })),
      track,
      el('div', { class: `st ${cls}`, text: status, title: status })));
  }
  if (!order.length) out.push(el('div', { class: 'tl-section', text: m.plan ? 'nothing was running' : 'waiting for the plan…' }));
  out.push(el('div', { class: 'tl-axis' }, el('div'), scale, el('div')));
  box.replaceChildren(...out);

  // What is still blocking, for how long (growing while it runs).
  const extra = running ? Math.max(0, liveAt - m.blockersAt) : 0;
  $('sd-blocking').replaceChildren(m.blockers.length
    ? table(['unit', 'pid', 'process', 'waiting'], m.blockers.map((b) =>
      [b.unit, b.pid, b.name, `${(b.waiting + extra).toFixed(1)}s of ${b.budget.toFixed(1)}s`]))
    : el('span', { class: 'muted', text: m.summary ? 'nothing' : 'nothing right now' }));

  // The sweep.
  const sweep = $('sd-sweep');
  if (m.swept.length) {
    sweep.replaceChildren(table(['pid', 'process', 'why', 'signal'], m.swept.map((p) => [p.pid, p.name, p.reason, p.signal])));
  } else {
    sweep.replaceChildren(el('span', { class: 'muted', text: m.verification || m.summary ? 'nothing was left to sweep' : 'not yet' }));
  }

  // The verification.
  const verify = $('sd-verify');
  if (m.verification) {
    verify.replaceChildren(m.verification.clean
      ? el('span', { class: 'verify-ok', text: '✔ no process left' })
      : el('div', {}, el('span', { class: 'verify-bad', text: '✘ processes left' }),
        table(['pid', 'process', 'why'], m.verification.leftovers.map((l) => [l.pid, l.name, l.reason]))));
  } else {
    verify.replaceChildren(el('span', { class: 'muted', text: 'not yet' }));
  }

  // The summary.
  const summary = $('sd-summary');
  if (m.summary) {
    const s = m.summary;
    summary.hidden = false;
    summary.className = 'summary' + (s.clean ? '' : ' unclean');
    const chip = (label, value) => el('span', { class: 'chip' }, label, ' ', el('b', { text: value }));
    summary.replaceChildren(
      el('span', { class: 'chip' }, el('b', { text: s.clean ? 'Clean' : 'NOT clean' }), ` in ${secs(s.duration)}`),
      chip('units graceful', s.units_graceful), chip('units killed', s.units_killed),
      chip('processes graceful', s.processes_graceful), chip('killed', s.processes_killed),
      chip('swept', s.processes_swept), chip('left', s.leftovers.length),
      ...(s.deadline_hit ? [el('span', { class: 'chip' }, el('b', { text: 'the deadline cut in' }))] : []));
  } else {
    summary.hidden = true;
  }

  // Every event, as `zinit shutdown` prints them.
  const lines = sd.events.map(eventLine).filter((l) => l !== null);
  $('sd-count').textContent = sd.events.length;
  const pre = $('sd-events');
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = lines.join('\n');
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ----------------------------------------------------------- dry run + go

// What a planned unit waits for, an indirect link named: "app (via migrate)".
function waitsFor(u) {
  const via = u.via || {};
  return u.waits_for.map((d) => (via[d] ? `${d} (via ${via[d]})` : d)).join(', ');
}

function showPlan(plan) {
  const tbody = $('plan').tBodies[0];
  tbody.replaceChildren(...plan.units.map((u, i) => el('tr', {},
    el('td', { text: i + 1 }), el('td', { text: u.name }), el('td', { text: u.signal }),
    el('td', { text: u.mode }), el('td', { class: 'num', text: secs(u.budget) }),
    el('td', { text: waitsFor(u) }))));
  if (!plan.units.length) tbody.append(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'nothing is running' })));
  $('plan-sweep').replaceChildren(plan.sweep.length
    ? el('div', {}, el('b', { text: 'The sweep would kill now: ' }),
      plan.sweep.map((t) => `pid ${t.pid} (${t.name}): ${t.reason}`).join('; '))
    : el('span', { class: 'muted', text: 'The final sweep would target nothing right now.' }));
  $('plan-deadline').textContent =
    `Every unit stops within its budget, dependents first, all within ${plan.deadline.toFixed(0)} s; then zinit_server exits.`;
  $('confirm').showModal();
}

function setupShutdown() {
  $('shutdown-btn').addEventListener('click', async () => {
    const button = $('shutdown-btn');
    button.disabled = true;
    try {
      showPlan(await post('/api/shutdown', { dry_run: true }));
    } catch (e) {
      result('shutdown dry run failed:', e.message, true);
    } finally {
      renderConnection();
    }
  });
  $('confirm-cancel').addEventListener('click', () => $('confirm').close());
  $('confirm-go').addEventListener('click', async () => {
    $('confirm').close();
    state.dismissed = null;
    try {
      await post('/api/shutdown', {});
      result('shutdown:', 'started', false);
    } catch (e) {
      result('shutdown failed:', e.message, true);
    }
  });
  $('sd-force').addEventListener('click', async () => {
    if (!window.confirm('Skip the remaining grace of every unit (the sweep and the verification still run)?')) return;
    try { await post('/api/shutdown', { force: true }); } catch (e) { result('force failed:', e.message, true); }
  });
  $('sd-close').addEventListener('click', () => {
    if (state.shutdown) state.dismissed = state.shutdown.id;
    renderShutdown();
  });
}

// ------------------------------------------------------------------ login

function setupLogin() {
  $('login').hidden = false;
  $('login-error').textContent = meta('login-error');
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await post('/login', { token: $('login-token').value });
      window.location.replace('/');
    } catch (err) {
      $('login-error').textContent = err.message;
    }
  });
}

// ------------------------------------------------------------------ start

function start() {
  if (meta('login-needed') === '1') { setupLogin(); return; }
  $('app').hidden = false;
  setupShutdown();
  $('log-unit').addEventListener('change', () => openLogs($('log-unit').value));
  $('log-clear').addEventListener('click', () => $('log').replaceChildren());
  $('log').addEventListener('scroll', () => {
    const pane = $('log');
    $('log-follow').checked = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
  });
  openStream();
  openLogs('');
  // Uptimes and a running shutdown's bars move on by themselves.
  setInterval(() => {
    for (const [name, row] of rows) fillUptime(row, state.units.get(name));
  }, 1000);
  setInterval(() => { if (state.shutdown && !state.shutdown.done) renderShutdown(); }, 200);
}

document.addEventListener('DOMContentLoaded', start);
