// The web console: pages over the REST/JSON API of the server that serves
// it (the same routes, permissions and audit as every other client).
// Everything shown comes from tenants and plugins, so it is only ever set
// as text (never as HTML).
'use strict';

const KEY = 'orchestrator-key';
const $ = (selector) => document.querySelector(selector);
const SVG = 'http://www.w3.org/2000/svg';

/** An element with attributes and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith('svg:')
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'onclick') node.addEventListener('click', value);
    else if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
  }
  return node;
}

/** Calls the API with the key; the JSON answer, or an Error with its message. */
async function api(path, options = {}) {
  const response = await fetch(path, {
    method: options.method || 'GET',
    headers: { authorization: `Bearer ${sessionStorage.getItem(KEY)}`, 'content-type': 'application/json' },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    logout('The key was refused: ' + (body.message || 'unauthenticated'));
    throw new Error(body.message || 'unauthenticated');
  }
  if (!response.ok) throw new Error(body.message || `${response.status}`);
  return body;
}

const when = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : '');
const duration = (us) => {
  const ms = Number(us || 0) / 1000;
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
};
const bytes = (n) => `${(Number(n || 0) / 1048576).toFixed(1)} MiB`;
const pretty = (value) => (value === undefined || value === null ? '' : JSON.stringify(value, null, 2));
const parsed = (text) => { try { return text ? JSON.parse(text) : null; } catch { return text; } };

// ---------------------------------------------------------------- log in

function logout(message) {
  sessionStorage.removeItem(KEY);
  stopLive();
  showLogin(message);
}

function showLogin(message) {
  $('#nav').hidden = true;
  $('#view').replaceChildren();
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
}

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $('#key').value.trim());
  try {
    await api('/v1/executions?pageSize=1');
    $('#key').value = '';
    $('#login').hidden = true;
    $('#nav').hidden = false;
    if (!location.hash) location.hash = '#/executions';
    route();
  } catch (e) {
    sessionStorage.removeItem(KEY);
    showLogin(e.message);
  }
}

// ---------------------------------------------------------------- routes

let live = null;

function stopLive() {
  if (live) live.abort();
  live = null;
}

/** Shows the page the location names. What a page does after the user
 * left it (answers, events, timers) is dropped: `signal` is aborted. */
function route() {
  stopLive();
  if (!sessionStorage.getItem(KEY)) return showLogin();
  live = new AbortController();
  const signal = live.signal;
  $('#login').hidden = true;
  $('#nav').hidden = false;
  const [, page, ...rest] = location.hash.split('/');
  const id = rest.map(decodeURIComponent).join('/');
  const main = $('#view');
  // The page's view: gone once the user has left the page.
  const view = { replaceChildren: (...nodes) => signal.aborted || main.replaceChildren(...nodes) };
  const pages = { executions: id ? () => execution(view, id, signal) : () => executions(view, signal),
    'dead-letters': () => deadLetters(view), plugins: () => plugins(view),
    workflows: () => workflows(view), breakers: () => breakers(view), usage: () => usage(view) };
  (pages[page] || pages.executions)().catch((e) => view.replaceChildren(el('p', { class: 'error' }, e.message)));
}

// ---------------------------------------------------------------- executions

async function executions(view, signal) {
  const status = el('select', { id: 'status-filter' }, ['', 'running', 'succeeded', 'failed', 'cancelled']
    .map((s) => el('option', { value: s }, s || 'every status')));
  const workflow = el('input', { id: 'workflow-filter', placeholder: 'workflow' });
  const table = el('table', { id: 'executions' });
  const more = el('button', { type: 'button', hidden: '' }, 'Older');
  view.replaceChildren(el('h1', {}, 'Executions'),
    el('div', { class: 'filters' }, status, workflow, el('span', { class: 'muted' }, 'updates every 2 s')), table, more);
  let next = '';
  const load = async () => {
    const query = new URLSearchParams({ pageSize: '50' });
    if (status.value) query.set('status', status.value);
    if (workflow.value) query.set('workflow', workflow.value);
    if (next) query.set('pageToken', next);
    const page = await api(`/v1/executions?${query}`);
    if (signal.aborted) return;
    table.replaceChildren(el('tr', {}, ['execution', 'workflow', 'status', 'created'].map((h) => el('th', {}, h))),
      ...(page.executions || []).map((x) => el('tr', {},
        el('td', {}, el('a', { href: `#/executions/${encodeURIComponent(x.id)}` }, x.id)),
        el('td', {}, x.workflow), el('td', { class: `status ${x.status}` }, x.status), el('td', {}, when(x.createdAtMs)))));
    more.hidden = !page.nextPageToken;
    more.onclick = () => { next = page.nextPageToken; load(); };
  };
  status.onchange = workflow.onchange = () => { next = ''; load(); };
  await load();
  const timer = setInterval(() => (signal.aborted ? clearInterval(timer) : load().catch(() => {})), 2000);
}

/** What the execution page draws, kept up to date by its events. */
function executionState(x) {
  const detail = parsed(x.detailJson) || {};
  const reports = Object.fromEntries((detail.tasks || []).map((t) => [t.id, t]));
  return { x, detail, reports, events: detail.events || [], selected: null };
}

async function execution(view, id, signal) {
  const x = await api(`/v1/executions/${encodeURIComponent(id)}?events=true`);
  const state = executionState(x);
  state.selected = (x.graph || [])[0]?.id || null;
  const draw = () => drawExecution(view, state);
  draw();
  if (x.status !== 'running') return;
  // Live: the execution's events as Server-Sent Events (read with fetch,
  // which can send the key), from the next number on.
  let pending = false;
  const refresh = async () => {
    pending = false;
    const now = await api(`/v1/executions/${encodeURIComponent(id)}`);
    const fresh = executionState(now);
    Object.assign(state, { x: now, detail: fresh.detail, reports: fresh.reports });
    draw();
  };
  watch(id, state.events.length, signal, (event) => {
    state.events.push(event);
    if (event.event === 'task_finished' || event.event === 'execution_finished') {
      if (!pending) { pending = true; setTimeout(() => refresh().catch(() => {}), 100); }
    }
    draw();
  }).catch(() => {});
}

/** Reads `/watch` from event `from` on, calling `each` with each event. */
async function watch(id, from, signal, each) {
  const response = await fetch(`/v1/executions/${encodeURIComponent(id)}/watch?from=${from}`, {
    headers: { authorization: `Bearer ${sessionStorage.getItem(KEY)}` }, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
      if (!data) continue;
      const e = JSON.parse(data);
      each({ at: Number(e.atMs), event: e.kind, ...(parsed(e.fieldsJson) || {}) });
    }
  }
}

/** Each task's state as the page shows it: its report, or what its events say. */
function taskStates(state) {
  const states = {};
  for (const e of state.events) {
    const task = (e.task || '').replace(/\[\d+\]$/, '');
    if (!task) continue;
    if (e.event === 'attempt_started' || e.event === 'items_started') states[task] = states[task] === 'waiting' ? 'waiting' : 'running';
    if (e.event === 'wait_started') states[task] = 'waiting';
    if (e.event === 'task_finished' && e.task === task) states[task] = e.status;
  }
  for (const [id, report] of Object.entries(state.reports)) if (!id.includes('[')) states[id] = report.status;
  return states;
}

function drawExecution(view, state) {
  const { x, detail } = state;
  const states = taskStates(state);
  const consumed = detail.record?.consumed;
  view.replaceChildren(
    el('h1', {}, `${x.workflow} `, el('code', {}, x.id), ' ', el('span', { class: `status ${x.status}`, id: 'execution-status' }, x.status)),
    el('p', {}, `created ${when(x.createdAtMs)}`, consumed ? ` · ${consumed.tokens} tokens · $${Number(consumed.cost_usd || 0).toFixed(4)} · fuel ${consumed.fuel}` : '',
      x.error ? el('span', { class: 'error' }, ` · ${x.error}`) : ''),
    el('div', { class: 'panes' },
      el('div', {}, el('h2', {}, 'Tasks'), dag(x.graph || [], states, state, () => drawExecution(view, state)),
        el('h2', {}, 'Timeline'), gantt(state.events)),
      el('div', { id: 'task-panel' }, taskPanel(state, states))),
    el('h2', {}, 'Outputs'), el('pre', { id: 'outputs' }, pretty(parsed(x.outputsJson))));
}

/** The DAG: tasks in layers by their longest chain of needs, edges as curves. */
function dag(graph, states, state, redraw) {
  const layer = {};
  const depth = (t, seen = new Set()) => {
    if (layer[t.id] !== undefined) return layer[t.id];
    if (seen.has(t.id)) return 0;
    seen.add(t.id);
    const needs = (t.needs || []).map((n) => graph.find((g) => g.id === n)).filter(Boolean);
    return (layer[t.id] = needs.length ? 1 + Math.max(...needs.map((n) => depth(n, seen))) : 0);
  };
  graph.forEach((t) => depth(t));
  const rows = [];
  graph.forEach((t) => (rows[layer[t.id]] = rows[layer[t.id]] || []).push(t));
  const [w, h, gapX, gapY] = [170, 46, 40, 36];
  const pos = {};
  rows.forEach((row, i) => row.forEach((t, j) => (pos[t.id] = { x: 20 + j * (w + gapX), y: 20 + i * (h + gapY) })));
  const width = 40 + Math.max(1, ...rows.map((r) => r.length)) * (w + gapX);
  const height = 40 + rows.length * (h + gapY);
  const svg = el('svg:svg', { id: 'dag', width, height, viewBox: `0 0 ${width} ${height}` },
    el('svg:defs', {}, el('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' },
      el('svg:path', { d: 'M0,0 L10,5 L0,10 z', fill: '#667085' }))));
  for (const t of graph) for (const n of t.needs || []) {
    if (!pos[n]) continue;
    const [a, b] = [pos[n], pos[t.id]];
    const [x1, y1, x2, y2] = [a.x + w / 2, a.y + h, b.x + w / 2, b.y];
    svg.append(el('svg:path', { class: 'edge', d: `M${x1},${y1} C${x1},${y1 + gapY / 2} ${x2},${y2 - gapY / 2} ${x2},${y2}` }));
  }
  for (const t of graph) {
    const s = states[t.id] || 'pending';
    const report = state.reports[t.id];
    const cost = report?.usage?.cost_usd ? ` · $${Number(report.usage.cost_usd).toFixed(4)}` : '';
    const node = el('svg:g', { class: `node ${s}${state.selected === t.id ? ' selected' : ''}`, 'data-task': t.id, 'data-state': s,
      transform: `translate(${pos[t.id].x},${pos[t.id].y})`, onclick: () => { state.selected = t.id; redraw(); } },
      el('svg:rect', { width: w, height: h }),
      el('svg:text', { x: 10, y: 19 }, t.id),
      el('svg:text', { x: 10, y: 36 }, `${t.uses} · ${s}${cost}`));
    svg.append(node);
  }
  return svg;
}

/** Attempts on a time axis: from each start to its failure or its task's end. */
function gantt(events) {
  const bars = [];
  const open = {};
  for (const e of events) {
    if (!e.task) continue;
    if (e.event === 'attempt_started' || e.event === 'wait_started') {
      open[e.task] = { task: e.task, attempt: e.attempt || 1, from: e.at, state: e.event === 'wait_started' ? 'waiting' : 'running' };
      bars.push(open[e.task]);
    } else if ((e.event === 'attempt_failed' || e.event === 'task_finished') && open[e.task]) {
      Object.assign(open[e.task], { to: e.at, state: e.event === 'attempt_failed' ? 'failed' : e.status });
      delete open[e.task];
    }
  }
  if (!bars.length) return el('p', {}, 'No attempt yet.');
  const start = Math.min(...bars.map((b) => b.from));
  // A bar still open runs to now.
  const end = Math.max(...bars.map((b) => b.to || Date.now()), start + 1);
  const shown = bars.slice(0, 200);
  const [width, row] = [640, 18];
  const scale = (t) => 150 + ((t - start) / (end - start)) * (width - 170);
  return el('svg:svg', { id: 'timeline', width, height: shown.length * row + 24, viewBox: `0 0 ${width} ${shown.length * row + 24}` },
    shown.map((b, i) => [
      el('svg:text', { class: 'axis', x: 4, y: i * row + 13 }, `${b.task} #${b.attempt}`),
      el('svg:rect', { class: `bar ${b.state}`, x: scale(b.from), y: i * row + 3, height: row - 6,
        width: Math.max(2, scale(b.to || end) - scale(b.from)) }, el('svg:title', {}, `${b.task} attempt ${b.attempt}: ${b.state}, ${(b.to || end) - b.from} ms`)),
    ]),
    el('svg:text', { class: 'axis', x: 150, y: shown.length * row + 18 }, '0'),
    el('svg:text', { class: 'axis', x: width - 60, y: shown.length * row + 18 }, `${end - start} ms`));
}

/** The selected task: what it was given and gave, what it cost, its attempts, its stream. */
function taskPanel(state, states) {
  const id = state.selected;
  if (!id) return el('p', {}, 'Select a task.');
  const report = state.reports[id] || {};
  const events = state.events.filter((e) => e.task === id || (e.task || '').startsWith(`${id}[`));
  const streamed = events.filter((e) => e.event === 'emitted' && e.kind === 'text').map((e) => e.data).join('');
  const attempts = events.filter((e) => e.event === 'attempt_started' || e.event === 'attempt_failed');
  const usage = report.usage;
  const output = report.output;
  const verdict = output && typeof output === 'object' && ('outcome' in output || 'passed' in output) ? output : null;
  return el('div', {},
    el('h2', {}, 'Task ', el('code', { id: 'task-id' }, id), ' ', el('span', { class: `status ${states[id] || 'pending'}` }, states[id] || 'pending')),
    el('table', {},
      el('tr', {}, el('th', {}, 'plugin'), el('td', {}, report.uses || '')),
      el('tr', {}, el('th', {}, 'attempts'), el('td', {}, report.attempts ?? '')),
      el('tr', {}, el('th', {}, 'time'), el('td', {}, report.duration_us !== undefined ? duration(report.duration_us) : '')),
      el('tr', {}, el('th', {}, 'fuel'), el('td', {}, report.fuel ?? '')),
      el('tr', {}, el('th', {}, 'memory'), el('td', {}, report.peak_memory !== undefined ? bytes(report.peak_memory) : '')),
      el('tr', {}, el('th', {}, 'tokens'), el('td', {}, usage ? `${usage.input_tokens} in, ${usage.output_tokens} out${usage.model ? ` (${usage.model})` : ''}${usage.cached ? ', cached' : ''}` : '')),
      el('tr', {}, el('th', {}, 'cost'), el('td', { id: 'task-cost' }, usage?.cost_usd !== undefined ? `$${Number(usage.cost_usd).toFixed(6)}` : ''))),
    report.error ? el('p', { class: 'error' }, `${report.error.kind || ''}: ${report.error.message}`) : '',
    verdict ? [el('h2', {}, 'Verdict'), el('pre', {}, pretty(verdict))] : '',
    el('h2', {}, 'Streamed'), el('pre', { id: 'streamed', class: 'stream' }, streamed),
    el('h2', {}, 'Input'), el('pre', {}, pretty(report.input)),
    el('h2', {}, 'Output'), el('pre', { id: 'task-output' }, pretty(output)),
    el('h2', {}, 'Attempts'), el('table', {}, attempts.map((e) => el('tr', {},
      el('td', {}, when(e.at)), el('td', {}, `#${e.attempt}`), el('td', {}, e.event === 'attempt_failed' ? `${e.kind}: ${e.error}` : 'started')))));
}

// ---------------------------------------------------------------- the rest

async function deadLetters(view) {
  const { deadLetters: letters = [] } = await api('/v1/dead-letters');
  const result = el('p', { id: 'replay-result' });
  view.replaceChildren(el('h1', {}, 'Dead letters'), result, el('table', { id: 'dead-letters' },
    el('tr', {}, ['task', 'execution', 'plugin', 'failure', 'attempts', 'failed', ''].map((h) => el('th', {}, h))),
    letters.map((d) => el('tr', {},
      el('td', {}, d.task), el('td', {}, el('a', { href: `#/executions/${encodeURIComponent(d.executionId)}` }, d.executionId)),
      el('td', {}, d.uses), el('td', { class: 'error' }, `${d.kind}: ${d.error}`), el('td', {}, d.attempts), el('td', {}, when(d.failedAtMs)),
      el('td', {}, el('button', { type: 'button', 'data-replay': d.id, onclick: async () => {
        try {
          await api(`/v1/dead-letters/${encodeURIComponent(d.id)}/replay`, { method: 'POST', body: {} });
          result.textContent = `replayed ${d.id}`;
          location.hash = `#/executions/${encodeURIComponent(d.executionId)}`;
        } catch (e) { result.textContent = e.message; result.className = 'error'; }
      } }, 'Replay'))))));
}

async function plugins(view) {
  const { plugins: list = [] } = await api('/v1/plugins');
  view.replaceChildren(el('h1', {}, 'Plugins'), el('table', { id: 'plugins' },
    el('tr', {}, ['name', 'version', 'digest', 'asks for', 'granted'].map((h) => el('th', {}, h))),
    list.map((p) => {
      const record = parsed(p.recordJson) || {};
      return el('tr', {}, el('td', {}, p.name), el('td', {}, p.version), el('td', {}, el('code', {}, (p.digest || '').slice(0, 16))),
        el('td', {}, el('pre', {}, pretty(record.manifest?.capabilities ?? {}))), el('td', {}, el('pre', {}, pretty(p.granted ?? {}))));
    })));
}

async function workflows(view) {
  const { workflows: list = [] } = await api('/v1/workflows');
  // The newest version of each name, drawn from its text.
  const newest = Object.values(Object.fromEntries(list.map((w) => [w.name, w])));
  const drawn = await Promise.all(newest.slice(0, 50).map((w) =>
    api(`/v1/workflows/${encodeURIComponent(w.name)}?version=${w.version}`).catch(() => ({ graph: [] }))));
  view.replaceChildren(el('h1', {}, 'Workflows'), el('table', { id: 'workflows' },
    el('tr', {}, ['name', 'version', 'registered from', 'tasks'].map((h) => el('th', {}, h))),
    newest.slice(0, 50).map((w, i) => el('tr', {}, el('td', {}, w.name), el('td', {}, w.version), el('td', {}, w.file),
      el('td', {}, dag(drawn[i].graph || [], {}, { reports: {}, selected: null }, () => {}))))));
}

async function breakers(view) {
  const { breakers: list = [] } = await api('/v1/breakers');
  view.replaceChildren(el('h1', {}, 'Breakers'), el('table', { id: 'breakers' },
    el('tr', {}, ['guards', 'state', 'since', 'probing from', 'why it opened'].map((h) => el('th', {}, h))),
    list.map((b) => el('tr', {}, el('td', {}, b.guards), el('td', { class: `status ${b.state}` }, b.state),
      el('td', {}, when(b.sinceMs)), el('td', {}, b.state === 'open' ? when(b.openUntilMs) : ''), el('td', {}, b.reason)))));
}

/** `used` of `limit`, as a bar when there is a limit. */
function meter(used, limit) {
  if (limit === undefined || limit === null) return `${used} (no limit)`;
  const share = Math.min(100, (Number(used) / Math.max(Number(limit), 1e-12)) * 100);
  return el('span', {}, el('span', { class: 'meter' }, el('span', { style: null, 'data-share': share.toFixed(0) })),
    ` ${used} of ${limit}`);
}

async function usage(view) {
  // The host's admins see every tenant with a record and the host's own
  // (`default`), which needs none; a tenant's admin sees its own.
  let tenants;
  try {
    tenants = (await api('/v1/tenants')).tenants || [];
    if (!tenants.some((t) => t.id === 'default')) tenants.unshift(await api('/v1/tenants/default'));
  } catch {
    tenants = [await api('/v1/tenant')];
  }
  const rows = [['tokens', 'tokens', 'tokens'], ['cost (USD)', 'cost', 'cost'], ['fuel', 'fuel', 'fuel'],
    ['plugins', 'plugins', 'plugins'], ['plugin bytes', 'pluginBytes', 'pluginBytes']];
  view.replaceChildren(el('h1', {}, 'Usage'), el('table', { id: 'usage' },
    el('tr', {}, ['tenant', 'this period', ...rows.map((r) => r[0])].map((h) => el('th', {}, h))),
    tenants.map((t) => el('tr', {}, el('td', {}, t.id),
      el('td', {}, `${when(t.usage?.periodStartMs)} – ${when(t.usage?.periodEndMs)}`),
      rows.map(([, used, limit]) => el('td', {}, meter(t.usage?.[used] ?? 0, t.inForce?.[limit])))))));
  // Bar widths set from script: the page's policy allows no inline style.
  for (const bar of document.querySelectorAll('.meter [data-share]')) bar.style.width = `${bar.dataset.share}%`;
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', () => {
  $('#login').addEventListener('submit', login);
  $('#logout').addEventListener('click', () => logout());
  route();
});
