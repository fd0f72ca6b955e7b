// SPDX-License-Identifier: MIT
// Type declarations for presence.js (presenced client, protocol v1).

export declare const PROTOCOL_VERSION: 1;
export declare const CONNECTING: 'connecting';
export declare const OPEN: 'open';
export declare const RECONNECTING: 'reconnecting';
export declare const CLOSED: 'closed';

/** Aggregated status of a user (every session of the user counted). */
export type UserStatus = 'online' | 'idle' | 'offline';
/** Status of this one session. */
export type SessionStatus = 'online' | 'idle';
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';
/** What a person sets beside the computed status (docs/protocol.md section 6). */
export type Availability = 'auto' | 'dnd' | 'away' | 'invisible';
export declare const AVAILABILITIES: readonly Availability[];

/** A status message; expires is ms since the epoch, null without expiry. */
export interface StatusMessage {
  text: string | null;
  emoji: string | null;
  expires: number | null;
}

/** Last known state of a watched user. Times are ms since the Unix epoch (0: never seen). */
export interface UserState {
  user_id: string;
  status: UserStatus;
  since: number;
  last_seen: number;
  version: number;
  /** As watchers see it: 'auto' also for an offline or invisible user. */
  availability: Availability;
  /** When last online, not idle (ms, 0: never). */
  last_active: number;
  message: StatusMessage | null;
  /** Best status per device kind ({} when offline). */
  devices: Record<string, UserStatus>;
}

/** How a state arrived: a snapshot (answer to subscribe) or a change. */
export interface PresenceChange {
  snapshot: boolean;
  /** What changed: null for a snapshot. */
  kind: 'status' | 'device' | 'message' | null;
  /** Previous status (of the change, or what was known before a snapshot). */
  from: UserStatus | null;
  /** Why it changed, e.g. 'connect', 'disconnect', 'explicit', 'inactivity', 'timeout'. */
  reason: string | null;
  /** Event sequence number of a change. */
  seq: number | null;
}

export type OnChange = (user: UserState, change: PresenceChange) => void;

export interface ReconnectOptions {
  /** First retry delay, ms (500). */
  initialDelayMs?: number;
  /** Cap of the backoff, ms (30000). */
  maxDelayMs?: number;
  /** Growth per attempt (2). */
  factor?: number;
  /** Fraction of each delay that is random, 0..1 (0.5): delay in [base*(1-jitter), base]. */
  jitter?: number;
  /** A connection open at least this long resets the backoff, ms (10000). */
  stableAfterMs?: number;
}

export interface IdleOptions {
  /** No keydown/pointer/touch/scroll/wheel activity this long: idle, ms (60000). 0 disables. */
  timeoutMs?: number;
  /** Also idle as soon as the page is hidden (false). */
  whenHidden?: boolean;
  /** Activity events are handled at most this often while online, ms (1000). */
  throttleMs?: number;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

/**
 * An event handler property of a WebSocket. Checked bivariantly (the method
 * form), so that the browser's `(this: WebSocket, ev: MessageEvent) => any`
 * and `ws`'s `(event: WebSocket.MessageEvent) => void` are both accepted: the
 * client assigns these handlers, it never calls them, so their parameters
 * only need to carry what it reads (under `strictFunctionTypes` a plain
 * function type would demand the reverse, which neither implementation meets).
 */
export type WebSocketHandler<E> = { bivarianceHack(ev: E): void }['bivarianceHack'];

/** Anything with the browser WebSocket's constructor and callbacks (the npm `ws` package works). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: WebSocketHandler<unknown> | null;
  onmessage: WebSocketHandler<{ data: unknown }> | null;
  onerror: WebSocketHandler<unknown> | null;
  onclose: WebSocketHandler<{ code: number; reason: string; wasClean: boolean }> | null;
}
/** `globalThis.WebSocket` in a browser (or node 22+), or `import WebSocket from 'ws'`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface EventTargetLike {
  addEventListener(type: string, fn: (ev: unknown) => void, options?: unknown): void;
  removeEventListener(type: string, fn: (ev: unknown) => void, options?: unknown): void;
}

export interface PresenceOptions {
  /**
   * Returns a fresh JWT. Called before every connection attempt, reconnects included
   * (so an expired token, close 4001, is replaced). A rejection is reported as an
   * 'error' event and retried with backoff; resolving to null/'' stops the client.
   */
  getToken: () => Promise<string | null | undefined> | string | null | undefined;
  /** WebSocket endpoint without the token, e.g. 'wss://presence.example.com/v1/ws'.
   *  Default in a page: ws(s)://<location.host>/v1/ws. Or a function asked before every
   *  connection attempt (as getToken is), e.g. to try the next of several instances after a
   *  drop; a rejection or no URL is an 'error' of kind 'socket' and a retry with backoff. */
  url?: string | ((info: { attempt: number }) => string | Promise<string>);
  /** WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  reconnect?: ReconnectOptions;
  /** Idle detection; false turns it off. */
  idle?: IdleOptions | false;
  /** Send an application ping after this much silence, ms (25000); 0 never. */
  pingIntervalMs?: number;
  /** No answer this long after a ping: drop the connection and reconnect, ms (10000). The
   *  browser's offline event (and online while open) pings at once with this deadline; 0
   *  turns the deadline and that check off. */
  pongTimeoutMs?: number;
  /** No welcome this long after opening a socket (a server that accepted but does not
   *  answer): drop it and reconnect, ms (10000); 0 waits for good. */
  connectTimeoutMs?: number;
  /**
   * Refresh the token on the live connection this long before it expires, ms (60000; at most
   * half the token's remaining life): getToken is called and the new token sent in place
   * ({"type":"token"}), so the session goes on with no reconnect and no presence event.
   * A refusal is an 'error' event of kind 'token'; the old token stands. 0 turns it off
   * (the connection is then closed with 4001 at expiry and reconnects with a new token).
   */
  tokenRefreshAheadMs?: number;
  /** Long subscribe/unsubscribe lists are split into messages of at most this size (32768). */
  maxMessageBytes?: number;
  /** Where activity events are listened to (default: globalThis.window; null disables). */
  window?: EventTargetLike | null;
  /** For visibilitychange / document.hidden (default: globalThis.document). */
  document?: (EventTargetLike & { hidden?: boolean }) | null;
  /** Injected clock (tests). */
  timers?: Timers;
  /** Injected random source in [0, 1) (tests). */
  random?: () => number;
}

export interface StateEvent {
  state: ConnectionState;
  /** 'connecting': attempt number (0 for the first). 'reconnecting': attempt scheduled. */
  attempt?: number;
  /** 'reconnecting': wait before the attempt, ms. */
  delayMs?: number;
  /** 'open' */
  sessionId?: string;
  userId?: string;
  heartbeatMs?: number;
  timeoutMs?: number;
  /** 'closed': close code (1006 when the socket gave none), reason, and what happens next. */
  code?: number;
  reason?: string;
  wasClean?: boolean;
  willReconnect?: boolean;
  /** 'closed': 'kicked' (4003) or 'too_many_sessions' (4031): the client stopped for good. */
  fatal?: string | null;
  /** 'closed' by close(). */
  byClient?: boolean;
}

export interface ErrorEvent {
  /** 'server': an error frame (not one refusing setAvailability/setMessage/clearMessage: that
   *  rejects the promise only); 'close': a fatal close; 'token': the provider failed or gave none;
   *  'socket': the WebSocket could not be created or written, or closed before it opened (no
   *  server, or the upgrade refused: 403 Origin not allowed, 401 token; code 1006); 'protocol': an unparsable frame,
   *  or one the client could not apply;
   *  'timeout': no pong to an application ping, or no welcome within connectTimeoutMs. */
  kind: 'server' | 'close' | 'token' | 'socket' | 'protocol' | 'timeout';
  /** Server error code ('not_allowed', 'too_many_watched', 'kicked', ...) or close code. */
  code?: string | number;
  message?: string;
  /** id of the request an error frame answers. */
  id?: string | number;
  /** 'not_allowed': watched users the token does not allow (those a subscribe's snapshot
   *  named, or [id] from a refused list), or after a token refresh the users the new token
   *  no longer lets this session watch. */
  users?: string[];
  error?: unknown;
}

/** A token refresh in place was accepted. */
export interface TokenEvent {
  /** The new expiry, Unix seconds. */
  exp: number;
}

export interface StatusEvent {
  status: SessionStatus;
  /** true when set by idle detection rather than setStatusIdle(). */
  auto: boolean;
}

export interface PresenceEvent extends PresenceChange {
  user: UserState;
}

export interface WelcomeMessage {
  type: 'welcome';
  protocol: number;
  session_id: string;
  user_id: string;
  heartbeat_ms: number;
  timeout_ms: number;
  /** The token's expiry, Unix seconds. */
  exp?: number;
  /** The session's device kind (the token's device claim, 'web' by default). */
  device?: string;
}

/** An Error from a refused request: code is the server's error code or 'not_connected'. */
export interface CodedError extends Error {
  code: string;
}

export interface MessageOptions {
  emoji?: string | null;
  /** Clear after this many ms (rounded up to whole seconds); 0 or null: never. Negative or
   *  not finite: rejected (bad_expiry) without sending. */
  clearAfterMs?: number | null;
  /** Clear at this time, ms since the epoch or a Date (ignored with clearAfterMs). */
  expiresAt?: number | Date | null;
}

export interface EventMap {
  state: StateEvent;
  connecting: StateEvent;
  open: StateEvent;
  reconnecting: StateEvent;
  closed: StateEvent;
  error: ErrorEvent;
  status: StatusEvent;
  presence: PresenceEvent;
  welcome: WelcomeMessage;
  token: TokenEvent;
  /** The user's own availability became known or changed (see PresenceClient.availability). */
  availability: { availability: Availability | null };
}

/** Backoff delay of attempt n (0-based): min(cap, initial*factor^n), jittered. */
export declare function backoffDelay(attempt: number, options?: ReconnectOptions, random?: () => number): number;

export declare class PresenceClient {
  constructor(options: PresenceOptions);

  on<K extends keyof EventMap>(event: K, fn: (detail: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(event: K, fn: (detail: EventMap[K]) => void): void;

  readonly state: ConnectionState;
  readonly sessionId: string | null;
  readonly userId: string | null;
  /** This session's own status as the client sets it. */
  readonly status: SessionStatus;
  /** Whether that idle status comes from idle detection. */
  readonly autoIdle: boolean;

  /** Open, and keep open (reconnecting) until close(). */
  connect(): void;
  /** Close for good (code 1000 by default); no reconnect. */
  close(code?: number, reason?: string): void;
  /** Skip the remaining backoff wait, if a reconnect is scheduled. */
  reconnectNow(): void;

  /** Set this session idle; sticky (idle detection does not undo it) until setStatusOnline(). */
  setStatusIdle(): void;
  /** Set this session online. */
  setStatusOnline(): void;

  /** This session's device kind, from the welcome (null before one). */
  readonly device: string | null;
  /** The user's own availability as set, null while unknown: from this client's
   *  setAvailability(), and from its own user's state when it watches itself
   *  (subscribe([userId])): 'invisible' when shown offline while this session is open
   *  (get() of our own user is what watchers see: offline and 'auto'). */
  readonly availability: Availability | null;
  /** Set the user's availability; rejects with a CodedError. */
  setAvailability(availability: Availability): Promise<void>;
  /** Set the user's status message; rejects with a CodedError. */
  setMessage(text: string | null, options?: MessageOptions): Promise<void>;
  /** Clear the user's status message. */
  clearMessage(): Promise<void>;

  /** Watch users; onChange gets the snapshot then every change. Returns an undo function. */
  subscribe(userIds: string | string[], onChange?: OnChange): () => void;
  /** Remove onChange for these users (or every callback); users nobody watches are unsubscribed. */
  unsubscribe(userIds: string | string[], onChange?: OnChange): void;

  /** Last known state of a watched user. */
  get(userId: string): UserState | undefined;
  /** Every watched user whose state is known. */
  all(): UserState[];
  /** Ids currently watched. */
  watched(): string[];

  /** Join a channel (or watch it without joining: { observe: true }); the same name
   *  returns the same object (data given updates ours). Joined again after every reconnect.
   *  Throws for data (or observe: false) given for a channel observed here: leave() it first. */
  channel<D = Record<string, unknown>>(name: string, opts?: ChannelOptions<D>): Channel<D>;
  /** The channels joined or observed. */
  channels(): Channel[];
}

export interface ChannelOptions<D = Record<string, unknown>> {
  /** This session's member data (a JSON object), shown to the channel. */
  data?: D | null;
  /** Receive the snapshot and changes without joining (the token's observe grant). */
  observe?: boolean;
  /** false: join without the member list (the server answers an ack, no 'sync'
   * event); members() then holds only the members seen in changes since. Spares
   * the server the listing (docs/protocol.md 4.2). Default true. */
  snapshot?: boolean;
  /** true (default): after a snapshot with more (a channel larger than the server's
   * --channel-page), read the next pages ({"type":"members"}, docs/protocol.md 4.2)
   * until members() holds every member, a 'sync' after each; false: the snapshot's
   * page only (more stays true). */
  allMembers?: boolean;
}

/** A member of a channel: a user with at least one session in it. */
export interface ChannelMember<D = Record<string, unknown>> {
  user_id: string;
  /** online if any of its sessions in the channel is online, else idle; offline in a leave. */
  status: UserStatus;
  /** The availability members are shown (docs/protocol.md 4.1): 'dnd' (with status
   *  online), 'away' (with status idle) or 'auto'; an invisible member is absent to the
   *  others. */
  availability: Availability;
  /** The data of its most recently joined or updated session. */
  data: D | null;
  since?: number;
  version: number;
}

export interface ChannelChange<D = Record<string, unknown>> {
  member: ChannelMember<D>;
  from: UserStatus | null;
  reason: string | null;
  seq: number | null;
  /** The channel's member count after the change, as members are shown it
   * (invisible members not counted). */
  count: number;
}

/** A snapshot, or a further page merged into what the channel knew. */
export interface ChannelSync<D = Record<string, unknown>> {
  /** Every member known so far (members()). */
  members: ChannelMember<D>[];
  count: number;
  /** More members than these: pages still being read (false once every page is
   * in), or not read (allMembers false, or a page refused: an 'error' said so). */
  more: boolean;
}

export interface ChannelEvents<D = Record<string, unknown>> {
  sync: ChannelSync<D>;
  join: ChannelChange<D>;
  leave: ChannelChange<D>;
  update: ChannelChange<D>;
  /** A backend removed this user from the channel (reason "kicked"), or a
   * refreshed token no longer grants it (reason "not_allowed"). */
  left: { reason: string | null };
  /** A refused join/update/observe/page: channel_not_allowed, too_many_channels, data_too_large, ...
   *  (a join refused join_rate or store_unavailable, or a page refused store_unavailable,
   *  is retried by the client, not reported). */
  error: { code: string; message: string };
}

export declare class Channel<D = Record<string, unknown>> {
  readonly client: PresenceClient;
  readonly name: string;
  /** The members known: the snapshot and the pages read after it (every member once
   *  more is false), then every change. */
  members(): ChannelMember<D>[];
  /** The channel's member count as members are shown it (invisible members,
   * ourselves included, not counted). */
  readonly count: number;
  /** Members exist beyond members(): pages still being read, or not read. */
  readonly more: boolean;
  /** This session's data. */
  readonly data: D | null;
  /** Replace this session's data. */
  update(data: D | null): void;
  /** Leave (or stop observing). */
  leave(): void;
  on<K extends keyof ChannelEvents<D>>(event: K, fn: (detail: ChannelEvents<D>[K]) => void): () => void;
  off<K extends keyof ChannelEvents<D>>(event: K, fn: (detail: ChannelEvents<D>[K]) => void): void;
}

/** new PresenceClient(options) then connect(). */
export declare function connect(options: PresenceOptions): PresenceClient;

export default PresenceClient;
