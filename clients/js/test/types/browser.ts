// SPDX-License-Identifier: MIT
// Type-checked (never run) under `tsc --strict` with the DOM library: the
// browser's own WebSocket must be accepted as the client's WebSocket.
import { PresenceClient, connect, type UserState, type PresenceChange } from '../../presence.js';

const client = new PresenceClient({
  url: 'wss://presence.example.com/v1/ws',
  getToken: async () => (await fetch('/token')).text(),
  WebSocket: WebSocket,
  window,
  document,
  idle: { timeoutMs: 60_000, whenHidden: true },
});
client.on('presence', (e) => { const s: UserState = e.user; void s; });
const undo: () => void = client.subscribe(['bob'], (user: UserState, change: PresenceChange) => {
  console.log(user.status, change.reason);
});
undo();
client.connect();
client.setStatusIdle();
connect({ getToken: () => 'x' }).close(1000, 'bye');
const instances = ['wss://p1.example.com/v1/ws', 'wss://p2.example.com/v1/ws'];
connect({ getToken: () => 'x', url: ({ attempt }) => instances[attempt % instances.length] }).close();
connect({ getToken: () => 'x', url: async () => instances[0] }).close();
// Status that people set.
client.setAvailability('dnd').catch((e: import('../../presence.js').CodedError) => console.log(e.code));
client.setMessage('Lunch', { emoji: '🥪', clearAfterMs: 30 * 60 * 1000 }).then(() => client.clearMessage());
const dev: string | null = client.device;
const mine: import('../../presence.js').Availability | null = client.availability;
client.on('availability', (e) => { const a: 'auto' | 'dnd' | 'away' | 'invisible' | null = e.availability; void a; void mine; });
void dev;
const someone = client.get('bob');
if (someone) console.log(someone.availability, someone.message?.text, someone.devices['web'], someone.last_active);

// Misuse must still be refused (tsc fails if an expected error is missing).
// @ts-expect-error getToken is required
new PresenceClient({ url: 'ws://x' });
// @ts-expect-error not a WebSocket constructor
new PresenceClient({ getToken: () => 't', WebSocket: 42 });
// @ts-expect-error a session status is 'online' or 'idle'
const bad: import('../../presence.js').SessionStatus = 'away';
void bad;
// @ts-expect-error not an availability
client.setAvailability('busy');

// Channels and status settings (added to the client since): typed data, events, settings.
type Cursor = { name: string; x: number };
const room = client.channel<Cursor>('room:1', { data: { name: 'Ann', x: 0 } });
room.update({ name: 'Ann', x: 10 });
for (const m of room.members()) { const x: number | undefined = m.data?.x; void x; }
// A member carries its shown availability (docs/protocol.md 4.3): a room list
// shows dnd / away beside the name.
room.on('sync', ({ members }) => { for (const m of members) { const a: import('../../presence.js').Availability = m.availability; void a; } });
room.on('update', ({ member }) => { if (member.availability === 'dnd') console.log(member.user_id, 'do not disturb'); });
// Every member, the pages after the snapshot read by the client (the default),
// or the snapshot's page only.
const big = client.channel('hall', { observe: true, allMembers: true });
big.on('sync', ({ members, more }) => { if (!more) console.log(members.length, 'members, all of them'); });
const firstPage = client.channel('lobby', { observe: true, allMembers: false });
const more: boolean = firstPage.more; void more;
// @ts-expect-error allMembers is a boolean
client.channel('x', { allMembers: 'yes' });
room.leave();
void client.setAvailability('dnd');
void client.setMessage('Lunch', {});
void client.setMessage('Trip', { expiresAt: new Date(Date.now() + 3_600_000) });
// @ts-expect-error not an availability
void client.setAvailability('asleep');
