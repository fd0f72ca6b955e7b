// SPDX-License-Identifier: MIT
// The demo page: a name, then a live roster of everyone on the demo.
// Built on presence.js (a copy of clients/js/presence.js).
import { PresenceClient } from './presence.js';
import { timeAgo, describe, compareUsers, readSettings, availabilityLabel, messageLine } from './format.js';

const settings = readSettings(location.search);
const $ = (id) => document.getElementById(id);

let client = null;
let me = '';
const rows = new Map(); // user id -> <li>

async function fetchToken(name) {
  const r = await fetch('/v1/demo/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error((body.error && body.error.message) || 'HTTP ' + r.status);
    err.code = body.error && body.error.code;
    err.status = r.status;
    throw err;
  }
  return body.token;
}

function row(id) {
  let li = rows.get(id);
  if (li) return li;
  li = document.createElement('li');
  li.dataset.user = id;
  const dot = document.createElement('span');
  dot.className = 'dot';
  dot.setAttribute('aria-hidden', 'true');
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = id;
  if (id === me) {
    const you = document.createElement('span');
    you.className = 'you';
    you.textContent = ' (you)';
    name.append(you);
  }
  const avail = document.createElement('span');
  avail.className = 'avail';
  name.append(avail);
  const msg = document.createElement('span');
  msg.className = 'status-msg';
  name.append(msg);
  const detail = document.createElement('span');
  detail.className = 'detail';
  li.append(dot, name, detail);
  rows.set(id, li);
  return li;
}

function paint(li, user, now) {
  const status = user ? user.status : 'offline';
  li.dataset.status = status;
  // What the person set, as watchers see it (dnd shows online, away idle).
  const availability = user && user.availability ? user.availability : 'auto';
  li.dataset.availability = availability;
  li.querySelector('.dot').className = 'dot ' + (availability === 'dnd' ? 'dnd' : status);
  const badge = li.querySelector('.avail');
  badge.className = 'avail ' + availability;
  badge.textContent = availabilityLabel(user);
  const line = user ? messageLine(user.message, now) : '';
  const msg = li.querySelector('.status-msg');
  if (msg.textContent !== line) msg.textContent = line;
  li.dataset.message = user && user.message ? (user.message.text || '') : '';
  const detail = li.querySelector('.detail');
  const text = user ? describe(user, now) : 'loading…';
  if (detail.textContent !== text) detail.textContent = text;
  if (user && user.status === 'offline' && user.last_seen) {
    detail.title = 'last seen ' + new Date(user.last_seen).toLocaleString();
    li.dataset.lastSeen = String(user.last_seen);
  } else {
    detail.removeAttribute('title');
    delete li.dataset.lastSeen;
  }
}

function render() {
  if (!client) return;
  const now = Date.now();
  const users = client.watched().map((id) => client.get(id) || { user_id: id, status: 'offline', since: 0, last_seen: 0, pending: true });
  // Our own row is what watchers see: invisible shows there as offline and
  // 'auto', as if we were gone. Say that we are invisible.
  const mine = users.findIndex((u) => u.user_id === me && !u.pending);
  if (mine >= 0 && client.availability === 'invisible') users[mine] = { ...users[mine], availability: 'invisible' };
  users.sort(compareUsers);
  const ul = $('roster');
  users.forEach((u, i) => {
    const li = row(u.user_id);
    paint(li, u.pending ? null : u, now);
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
  });
  $('roster-empty').hidden = users.length > 0;
  const online = users.filter((u) => u.status === 'online').length;
  $('roster-count').textContent = '(' + users.length + ', ' + online + ' online)';
}

let renderQueued = false;
function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

// Who is on the demo, pushed: every tab is a member of one lobby channel,
// so a newcomer's join reaches every other tab at once (no polling). The
// users who came before and left are asked for once per connection, to show
// them offline with their last-seen time.
const LOBBY = 'demo-lobby';

function watchUsers(ids) {
  if (!client) return;
  const fresh = ids.filter((id) => !rows.has(id) && !client.watched().includes(id));
  if (fresh.length) client.subscribe(fresh, queueRender);
}

async function fetchKnownUsers() {
  if (!client) return;
  try {
    const r = await fetch('/v1/demo/users', { cache: 'no-store' });
    if (!r.ok) return;
    const { users } = await r.json();
    watchUsers(users.map((u) => u.user_id));
  } catch (_) {
    // The server is away; the connection state already says so.
  }
}

function joinLobby(name) {
  const lobby = client.channel(LOBBY, { data: { name } });
  lobby.on('sync', () => watchUsers(lobby.members().map((m) => m.user_id)));
  lobby.on('join', (e) => watchUsers([e.member.user_id]));
  return lobby;
}

function showState(s) {
  const el = $('conn');
  el.dataset.state = s.state;
  const text = {
    connecting: 'connecting…',
    open: 'connected',
    reconnecting: 'connection lost, retrying in ' + Math.max(1, Math.round((s.delayMs || 0) / 1000)) + ' s',
    closed: s.willReconnect ? 'connection lost' : 'disconnected' + (s.fatal ? ' (' + s.fatal + ')' : ''),
  }[s.state];
  el.textContent = text;
}

function showStatus(status) {
  $('my-status').textContent = status + (client && client.autoIdle ? ' (no activity)' : '');
  $('my-status').dataset.status = status;
  $('my-dot').className = 'dot ' + status;
}

function join(name) {
  me = name;
  client = new PresenceClient({
    getToken: () => fetchToken(name),
    idle: { timeoutMs: settings.idleMs, whenHidden: settings.whenHidden },
    pingIntervalMs: settings.pingMs,
    reconnect: { maxDelayMs: settings.retryMaxMs, initialDelayMs: Math.min(500, settings.retryMaxMs) },
  });
  window.presenceDemo = { client, settings };
  client.on('state', (s) => {
    showState(s);
    // While disconnected the roster is what we last knew: say so.
    $('roster').classList.toggle('stale', s.state !== 'open');
    if (s.state === 'open') { $('errors').textContent = ''; fetchKnownUsers(); }
  });
  client.on('status', (s) => showStatus(s.status));
  // The picker shows the user's setting, kept by the server: after a reload,
  // and when another tab of the same name changes it (we watch ourselves).
  client.on('availability', (e) => { $('availability').value = e.availability; queueRender(); });
  // Screen readers: the roster announces people arriving; status changes are
  // announced here (the ticking "last seen" times are not).
  client.on('presence', (p) => {
    if (!p.snapshot && p.user.user_id !== me) $('announce').textContent = p.user.user_id + ' is now ' + p.user.status;
  });
  client.on('error', (e) => {
    if (e.kind === 'server' || e.kind === 'close' || e.kind === 'token') $('errors').textContent = 'error: ' + (e.code || '') + ' ' + (e.message || '');
  });
  client.subscribe([name], queueRender);
  window.presenceDemo.lobby = joinLobby(name);
  client.connect();
  // Rooms (channels): who is in which room, live (rooms.js).
  import('./rooms.js').then((m) => { window.presenceDemo.rooms = m.startRooms(client, name); });
  $('my-name').textContent = name;
  $('join-card').hidden = true;
  $('me').hidden = false;
  $('roster-section').hidden = false;
  $('my-setting').hidden = false;
  showStatus(client.status);
  setInterval(render, 1000); // "last seen" times move on (text rewritten only when it changes)
}

$('join').addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  const err = $('join-error');
  err.textContent = '';
  if (!name) { err.textContent = 'Please enter a name.'; $('name').focus(); return; }
  try {
    await fetchToken(name); // check the name before switching the page over
  } catch (x) {
    err.textContent = x.code === 'bad_user_id' ? 'That name cannot be used: ' + x.message : 'Cannot join: ' + x.message;
    return;
  }
  join(name);
});

// Status that people set: kept by the server for the user, so another tab
// of the same name shows the same.
function settingError(e) { $('setting-error').textContent = e ? 'Not set: ' + (e.code || '') + ' ' + (e.message || '') : ''; }
$('availability').addEventListener('change', () => {
  if (!client) return;
  client.setAvailability($('availability').value).then(() => settingError(null), (e) => {
    settingError(e);
    // Nothing was set (not connected, refused): the menu shows what is,
    // not the pick (it said "Do not disturb" to a user others saw available).
    $('availability').value = client.availability || 'auto';
  });
});
$('status-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!client) return;
  const after = Number($('clear-after').value);
  client.setMessage($('status-text').value.trim(), { emoji: $('status-emoji').value.trim(), clearAfterMs: after ? after * 1000 : null })
    .then(() => settingError(null), settingError);
});
$('status-clear').addEventListener('click', () => {
  if (!client) return;
  $('status-text').value = '';
  $('status-emoji').value = '';
  client.clearMessage().then(() => settingError(null), settingError);
});
$('btn-idle').addEventListener('click', () => client && client.setStatusIdle());
$('btn-online').addEventListener('click', () => client && client.setStatusOnline());
if (settings.name) $('name').value = settings.name;
$('name').focus();
