// SPDX-License-Identifier: MIT
// Pure helpers of the demo page (no DOM), unit-tested in node.

const UNITS = [
  ['day', 86400],
  ['hour', 3600],
  ['minute', 60],
  ['second', 1],
];

/** "just now", "42 seconds ago", "3 minutes ago", "1 hour ago", "2 days ago". */
export function timeAgo(then, now = Date.now()) {
  const s = Math.max(0, Math.floor((now - then) / 1000));
  if (s < 5) return 'just now';
  for (const [unit, len] of UNITS) {
    if (s >= len) {
      const n = Math.floor(s / len);
      return n + ' ' + unit + (n === 1 ? '' : 's') + ' ago';
    }
  }
  return 'just now';
}

/** Text shown next to a user's name. */
export function describe(user, now = Date.now()) {
  if (!user) return '';
  if (user.status === 'offline') return user.last_seen ? 'offline, last seen ' + timeAgo(user.last_seen, now) : 'offline, never seen';
  if (user.status === 'idle') return 'idle' + (user.since ? ' for ' + timeAgo(user.since, now).replace(/ ago$/, '').replace('just now', 'a moment') : '');
  return 'online';
}

const ORDER = { online: 0, idle: 1, offline: 2 };

/** Roster order: online, then idle, then offline; by name within each. */
export function compareUsers(a, b) {
  const d = (ORDER[a.status] ?? 3) - (ORDER[b.status] ?? 3);
  return d || (a.user_id < b.user_id ? -1 : a.user_id > b.user_id ? 1 : 0);
}

/** Settings the page reads from its URL (?idle=1500&hidden=1&ping=0&retry=2000). */
export function readSettings(search) {
  const p = new URLSearchParams(search || '');
  const num = (k, d) => {
    const v = p.get(k);
    if (v === null || v === '') return d;
    const n = Number(v);
    return Number.isFinite(n) && n >= 0 ? n : d;
  };
  return {
    idleMs: num('idle', 60000),
    whenHidden: p.get('hidden') === '1',
    pingMs: num('ping', 25000),
    retryMaxMs: num('retry', 30000),
    name: p.get('name') || '',
  };
}

// Watchers are never shown 'invisible' (an invisible user looks offline,
// 'auto'); the page shows it on the user's own row, from client.availability.
const AVAILABILITY_LABEL = { dnd: 'do not disturb', away: 'away', invisible: 'invisible: others see you offline' };

/** The badge next to a name for what the person set ('' for auto). */
export function availabilityLabel(user) {
  return (user && AVAILABILITY_LABEL[user.availability]) || '';
}

/** A status message as one line: emoji, text, and when it clears. */
export function messageLine(message, now = Date.now()) {
  if (!message || (!message.text && !message.emoji)) return '';
  let s = [message.emoji, message.text].filter(Boolean).join(' ');
  if (message.expires) {
    const left = Math.max(0, Math.round((message.expires - now) / 60000));
    s += left >= 60 ? ' (clears in ' + Math.round(left / 60) + ' h)' : ' (clears in ' + Math.max(1, left) + ' min)';
  }
  return s;
}
