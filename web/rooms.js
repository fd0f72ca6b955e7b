// SPDX-License-Identifier: MIT
// Rooms on the demo page: pick or type a room, see who is in it (name and
// colour from each member's data), live. Built on presence.channel().

const $ = (id) => document.getElementById(id);

/** A colour for a name, stable across tabs: its hue from a string hash. */
export function colorFor(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return 'hsl(' + (h % 360) + ', 65%, 45%)';
}

function memberItem(m, me) {
  const li = document.createElement('li');
  li.dataset.user = m.user_id;
  li.dataset.status = m.status;
  const swatch = document.createElement('span');
  swatch.className = 'swatch';
  swatch.setAttribute('aria-hidden', 'true');
  const color = m.data && typeof m.data.color === 'string' ? m.data.color : '#888';
  swatch.style.background = color;
  li.dataset.color = color;
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = (m.data && typeof m.data.name === 'string' ? m.data.name : m.user_id) + (m.user_id === me ? ' (you)' : '');
  const st = document.createElement('span');
  st.className = 'detail';
  st.textContent = m.status;
  li.append(swatch, name, st);
  return li;
}

export function startRooms(client, me) {
  const data = { name: me, color: colorFor(me) };
  const cards = new Map(); // room -> { el, channel }
  $('rooms-section').hidden = false;

  function paint(room) {
    const c = cards.get(room);
    if (!c) return;
    const members = c.channel.members().sort((a, b) => (a.user_id < b.user_id ? -1 : a.user_id > b.user_id ? 1 : 0));
    const ul = c.el.querySelector('ul');
    ul.replaceChildren(...members.map((m) => memberItem(m, me)));
    c.el.querySelector('.count').textContent = String(c.channel.count);
    c.el.dataset.count = String(c.channel.count);
  }

  function enter(room) {
    room = room.trim();
    if (!room || cards.has(room)) return;
    const el = document.createElement('section');
    el.className = 'card room';
    el.dataset.room = room;
    const h = document.createElement('h3');
    h.append(room + ' ');
    const count = document.createElement('span');
    count.className = 'count';
    count.textContent = '0';
    h.append(count, ' here');
    const leave = document.createElement('button');
    leave.type = 'button';
    leave.textContent = 'Leave ' + room;
    const ul = document.createElement('ul');
    ul.className = 'members';
    ul.setAttribute('aria-live', 'polite');
    const err = document.createElement('p');
    err.className = 'error';
    el.append(h, leave, ul, err);
    $('rooms').append(el);
    const channel = client.channel(room, { data });
    cards.set(room, { el, channel });
    for (const ev of ['sync', 'join', 'leave', 'update']) channel.on(ev, () => paint(room));
    channel.on('error', (e) => { err.textContent = 'error: ' + e.code + ' ' + e.message; });
    channel.on('left', () => { cards.delete(room); el.remove(); });
    leave.addEventListener('click', () => { channel.leave(); cards.delete(room); el.remove(); });
  }

  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault();
    enter($('room').value);
    $('room').value = '';
  });
  for (const b of document.querySelectorAll('[data-pick-room]')) {
    b.addEventListener('click', () => enter(b.dataset.pickRoom));
  }
  return { enter };
}
