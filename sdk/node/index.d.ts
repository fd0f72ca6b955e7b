// SPDX-License-Identifier: MIT
// Type declarations of presenced-node (protocol v1).
import type { IncomingMessage, ServerResponse } from 'node:http';

export declare const PROTOCOL_VERSION: 1;

// ---- tokens -----------------------------------------------------------------

export interface TokenOptions {
  /** The secret presenced was given (--jwt-secret). */
  secret: string | Buffer;
  /** `sub`: the user id (1..128 bytes of UTF-8, no control characters). */
  userId: string;
  /** Lifetime in seconds; `exp` = now + ttl (3600). */
  ttlSeconds?: number;
  /** Or an absolute `exp`, Unix seconds. */
  expiresAt?: number;
  /** `watch`: users this session may subscribe to, or '*'. Absent: only itself. */
  watch?: string[] | '*';
  /** `meta`: stored with the session, shown in session lists and events. */
  meta?: Record<string, unknown>;
  /** `aud`: required by a presenced started with --jwt-audience (its value, or a list holding it); refused by one without. */
  audience?: string | string[];
  /** `iss`: must equal presenced's --jwt-issuer when it has one. */
  issuer?: string;
  /** `nbf`, Unix seconds. */
  notBefore?: number;
  /** `device`: the session's device kind: 'web', 'mobile', 'desktop' or your own word. */
  device?: string;
  /** `channels`: channel patterns ('room:1', 'room:*', '*') the session may join and observe. */
  channels?: string[] | '*';
  /** `observe`: extra channel patterns the session may observe without joining. */
  observe?: string[] | '*';
  /** Further claims, merged last (grants of later protocol additions). */
  claims?: Record<string, unknown>;
  /** Clock in ms (tests). */
  now?: () => number;
}
/** An HS256 JWT for `wss://…/v1/ws?token=`. */
export declare function mintToken(options: TokenOptions): string;

// ---- errors -----------------------------------------------------------------

/**
 * The daemon's error codes of the HTTP API and of a refused backend connection
 * (docs/api.md#errors, protocol.md 5.1 and 5.5), plus 'network' (no answer),
 * 'bad_response' (an answer that is not JSON) and 'origin_taken_over' (the
 * 'fatal' of a BackendConnection whose origin another connection took).
 */
export type ErrorCode =
  | 'bad_request' | 'bad_json' | 'bad_user_id' | 'bad_session_id' | 'unauthorized' | 'not_found' | 'no_session'
  | 'method_not_allowed' | 'request_timeout' | 'body_too_large' | 'uri_too_long' | 'headers_too_large'
  | 'not_implemented' | 'host_not_allowed'
  | 'shutting_down' | 'too_many_connections' | 'store_unavailable'
  /** @deprecated presenced no longer sends it (until 2026-12-08 a failed kick did): store_unavailable */
  | 'store_error'
  | 'out_of_memory' | 'internal'
  | 'bad_channel' | 'not_member' | 'bad_availability' | 'bad_message' | 'bad_expiry' | 'not_supported'
  | 'bad_ttl' | 'bad_meta' | 'bad_status' | 'bad_device' | 'session_exists' | 'too_many_sessions'
  | 'bad_origin' | 'too_many_origins' | 'bad_upgrade' | 'bad_version' | 'origin_taken_over'
  | 'network' | 'bad_response'
  | (string & {});

/**
 * Why presenced refused one op of a BackendConnection's batch or sync (the
 * 'rejected' event; protocol.md 5.2), and the codes of a refused frame (an
 * 'error' event: bad_json, unknown_type, bad_field, too_many_ops, rate_limited).
 */
export type BackendErrorCode =
  | 'bad_op' | 'bad_session_id' | 'bad_user_id' | 'bad_status' | 'bad_meta' | 'bad_device'
  | 'session_exists' | 'session_owned' | 'no_session' | 'too_many_sessions'
  | 'bad_channel' | 'bad_data' | 'data_too_large' | 'too_many_channels' | 'not_joined' | 'internal'
  | 'bad_json' | 'unknown_type' | 'bad_field' | 'too_many_ops' | 'rate_limited' | 'origin_taken_over'
  | (string & {});

export declare class PresenceError extends Error {
  readonly name: 'PresenceError';
  /** HTTP status; 0 when no answer came. */
  readonly status: number;
  readonly code: ErrorCode;
  /** No answer, 5xx, 408 or 429. */
  readonly retryable: boolean;
  constructor(status: number, code: ErrorCode, message: string, cause?: unknown);
}

export type WebhookErrorCode =
  | 'missing_signature' | 'bad_timestamp' | 'stale' | 'bad_signature' | 'bad_body'
  | 'replayed' | 'no_raw_body' | 'body_too_large';

export declare class WebhookError extends Error {
  readonly name: 'WebhookError';
  readonly code: WebhookErrorCode;
  /** The HTTP status to answer (401, 409, 400, 413, 500). */
  readonly status: number;
  constructor(code: WebhookErrorCode, message: string, status?: number);
}

// ---- presence data ------------------------------------------------------------

export type UserStatus = 'online' | 'idle' | 'offline';
export type SessionStatus = 'online' | 'idle';
export type Reason =
  | 'connect' | 'disconnect' | 'explicit' | 'inactivity' | 'timeout' | 'kicked' | 'shutdown'
  | 'instance_lost' | 'resync' | 'origin_lost' | 'expired'
  | 'token_expired' | 'rate_limited' | 'message_too_big' | 'binary_message'
  | 'protocol_error' | 'malformed_messages' | 'slow_consumer' | (string & {});
export type EventType =
  | 'session.connected' | 'session.disconnected' | 'session.status'
  | 'user.online' | 'user.idle' | 'user.offline' | 'cleanup'
  | 'channel.join' | 'channel.update' | 'channel.leave' | 'user.availability' | 'user.message'
  | (string & {});
export type Availability = 'auto' | 'dnd' | 'away' | 'invisible';

export interface StatusMessage { text: string | null; emoji?: string | null; expires?: number | null; set?: number }

export interface ChannelMember {
  user_id: string;
  status: SessionStatus;
  availability?: Availability;
  data: Record<string, unknown> | null;
  since: number;
  version: number;
  sessions?: Array<{ session_id: string; status: SessionStatus; data: Record<string, unknown> | null; joined: number }>;
  [field: string]: unknown;
}

export interface Origin {
  origin: string;
  /** 'http': the built-in origin of the sessions of PUT /v1/sessions/{id} (api.md). */
  state: 'connected' | 'detached' | 'http';
  sessions: number;
  since: number;
  detached_since: number;
  [field: string]: unknown;
}

export interface User {
  user_id: string;
  status: UserStatus;
  /** ms since the epoch; 0: never seen. */
  since: number;
  last_seen: number;
  sessions: number;
  version: number;
  availability?: Availability;
  availability_since?: number;
  last_active?: number;
  message?: StatusMessage | null;
  devices?: Record<string, { status: SessionStatus; sessions: number }>;
  [field: string]: unknown;
}

export interface Session {
  session_id: string;
  status: SessionStatus;
  meta: Record<string, unknown> | null;
  connected: number;
  since: number;
  instance: string;
  /** The session's device kind: 'web' (the default), 'mobile', 'desktop' or another word. */
  device?: string;
  [field: string]: unknown;
}

/** One event of the log (GET /v1/events, webhooks). */
export interface PresenceEvent {
  seq: number;
  type: EventType;
  ts: number;
  reason: Reason;
  user_id?: string;
  session_id?: string;
  /** Statuses; for `user.availability` the availabilities before and after. */
  from?: UserStatus | SessionStatus | Availability;
  to?: UserStatus | SessionStatus | Availability;
  version?: number;
  meta?: Record<string, unknown> | null;
  instance?: string;
  session_ids?: string[];
  /** The session's device kind (session events). */
  device?: string;
  /** The user's status (`user.availability`, `user.message`). */
  status?: UserStatus;
  /** The availability the person set (user events). */
  availability?: Availability;
  /** `user.message`: the message now, null when cleared. */
  message?: StatusMessage | null;
  /** Channel events: the channel, the member's data, the member counts (all, and shown). */
  channel?: string;
  data?: Record<string, unknown> | null;
  count?: number;
  shown_count?: number;
  /** `cleanup`: presenced started with no presence. */
  fresh_start?: boolean;
  [field: string]: unknown;
}

export interface Gap {
  /** The last seq had before the gap. */
  after: number;
  /** The oldest event still in the log; the stream continues there. */
  oldest: number;
  /** Webhooks only: events lost. */
  missed?: number;
}

// ---- HTTP API -----------------------------------------------------------------

export interface PresenceAPIOptions {
  /** presenced's base URL, e.g. 'http://127.0.0.1:7070'. */
  url: string;
  /** The backend API key (--api-key). */
  apiKey: string;
  /** Per request, ms (10000). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface Health {
  status: string;
  instance: string;
  uptime_s: number;
  store?: string;
  store_ready?: boolean;
  [field: string]: unknown;
}

export declare class PresenceAPI {
  constructor(options: PresenceAPIOptions);
  readonly url: string;
  /** Any endpoint: resolves to the JSON answer, rejects with PresenceError. */
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  getUser(userId: string): Promise<User>;
  /** In the order asked; any number of ids (requests of 1000). */
  getUsers(userIds: string[]): Promise<User[]>;
  sessions(userId: string): Promise<Session[]>;
  /** Close a session (4003); rejects with code 'no_session' when it is gone. */
  kick(sessionId: string): Promise<void>;
  health(): Promise<Health>;

  /** GET /v1/channels/{name} */
  channel(name: string): Promise<{ channel: string; count: number }>;
  /** One page of members, in byte order of user id; `next` is null on the last page. */
  channelMembers(name: string, page?: { limit?: number; after?: string | null }): Promise<{ channel: string; count: number; members: ChannelMember[]; next: string | null }>;
  /** Every member, page after page. */
  allChannelMembers(name: string, options?: { limit?: number }): AsyncIterable<ChannelMember>;
  /** Active channels under a prefix, with their counts. */
  channels(options?: { prefix?: string; limit?: number; after?: string | null }): Promise<{ channels: Array<{ channel: string; count: number; shown_count: number }>; next: string | null }>;
  /** The channels a user is a member of. */
  userChannels(userId: string): Promise<Array<ChannelMember & { channel: string }>>;
  /** Every session of the user leaves the channel (reason 'kicked'); code 'not_member' if none was in it. */
  removeFromChannel(name: string, userId: string): Promise<void>;

  setAvailability(userId: string, availability: Availability): Promise<{ user_id: string; availability: Availability }>;
  /** expiresInS: seconds from now; or expiresAt: ms since the epoch. */
  /** Resolves to what presenced stored: `message` null when `text` was empty (the message cleared). */
  setMessage(userId: string, message: { text: string; emoji?: string; expiresInS?: number; expiresAt?: number }): Promise<{ user_id: string; message: StatusMessage | null }>;
  clearMessage(userId: string): Promise<void>;

  /** Create or renew a session with a TTL (serverless backends); ends with reason 'timeout' unless renewed. */
  putSession(sessionId: string, session: { userId: string; ttlMs: number; status?: SessionStatus; meta?: Record<string, unknown>; /** The device kind ('web' when absent), kept from the creation. */ device?: string }): Promise<{ session_id: string; user_id: string; created: boolean; expires: number }>;
  origins(): Promise<Origin[]>;

  events(options?: Omit<EventStreamOptions, 'url' | 'apiKey'>): EventStream;
}

// ---- event stream -------------------------------------------------------------

export interface EventStreamOptions {
  url: string;
  apiKey: string;
  fetch?: typeof fetch;
  /** Resume after this seq (a saved cursor). Absent: new events only. */
  after?: number | string | null;
  /** Only these event types: 'user.online', 'user.*', 'channel.*', ... */
  types?: string | string[];
  /** Only channel events, of channels whose name starts with this. */
  channelPrefix?: string;
  /** First reconnect delay, ms (500), doubling up to maxRetryMs (15000). */
  retryMs?: number;
  maxRetryMs?: number;
  /** A connection that reads nothing this long (ms, 60000) is dropped and made again; presenced writes a keepalive every 15 s. */
  readTimeoutMs?: number;
  /** A failed or lost connection (it is retried; 400 and 401 end the iteration instead). */
  onError?: (err: Error) => void;
  onConnect?: () => void;
  signal?: AbortSignal;
}

/** An item of the stream: narrow on `gap`. */
export type StreamItem =
  | { gap: true; type: 'gap'; seq: null; data: Gap }
  | { gap: false; type: EventType; seq: number; data: PresenceEvent };

/** GET /v1/events as an async iterable; reconnects and resumes by itself. */
export declare class EventStream implements AsyncIterable<StreamItem> {
  constructor(options: EventStreamOptions);
  /** The cursor past the last event yielded and the events a filter skipped after it (save it; pass it as `after`). */
  readonly cursor: string | null;
  /** Connections established so far. */
  readonly connects: number;
  close(): void;
  [Symbol.asyncIterator](): AsyncIterator<StreamItem>;
}

export interface SSEBlock { id: string | null; event: string; data: string[] }
/** onIdOnly: a block with an id and no data (a cursor move after events a filtered stream skipped). */
export declare function parseSSE(buffer: string, onEvent: (ev: SSEBlock) => void, onIdOnly?: ((id: string) => void) | null): string;

// ---- webhooks -----------------------------------------------------------------

export interface Delivery {
  instance: string;
  first_seq: number;
  last_seq: number;
  /** Events not applied before (a batch sent again has them removed). */
  events: PresenceEvent[];
  gap?: Gap;
  /** Events removed as already applied. */
  duplicates: number;
}

export declare class WebhookGuard {
  constructor(options?: { toleranceMs?: number; maxSignatures?: number });
  /** Last seq applied per log instance. */
  readonly lastSeq: Map<string, number>;
  /** true if seen before (a replay); `signature`: the verified entry (or entries) of Presence-Signature, never the raw header. */
  seen(signature: string | string[], ts: number, now: number): boolean;
  fresh(delivery: Omit<Delivery, 'duplicates'>): PresenceEvent[];
  /** The handler of this delivery failed: presenced's retry brings its events again (and only them). */
  forget(delivery: Delivery): void;
}

export type HeadersLike = Record<string, string | string[] | undefined> | { get(name: string): string | null };

export interface VerifyOptions {
  /** The endpoint's secret; several during a key rotation. */
  secret: string | Buffer | Array<string | Buffer>;
  headers: HeadersLike;
  /** The raw body, exactly as received. */
  body: Buffer | Uint8Array | string;
  /** Accepted distance of Presence-Timestamp from this clock, ms (300000). */
  toleranceMs?: number;
  now?: number;
  /** Refuse replays and drop events applied before. */
  guard?: WebhookGuard | null;
}
/** Throws WebhookError. */
export declare function verifyWebhook(options: VerifyOptions): Delivery;

export interface WebhookHandlerOptions {
  secret: VerifyOptions['secret'];
  toleranceMs?: number;
  /** Default: a new WebhookGuard; null: no replay or duplicate checks. */
  guard?: WebhookGuard | null;
  maxBody?: number;
}

export interface PresenceRequest extends IncomingMessage {
  presence: Delivery;
  body?: unknown;
}

export type Middleware = (req: IncomingMessage & { body?: unknown }, res: ServerResponse, next?: (err?: unknown) => void) => Promise<void>;

/** Express / connect / node:http. Without onDelivery it sets req.presence and calls next(). */
export declare function webhookMiddleware(options: WebhookHandlerOptions & {
  onDelivery?: (delivery: Delivery, req: IncomingMessage) => unknown | Promise<unknown>;
}): Middleware;

/** Fastify plugin: app.register(fastifyWebhook, { path, secret, onDelivery }). */
export declare function fastifyWebhook(app: any, options: WebhookHandlerOptions & {
  path?: string;
  onDelivery: (delivery: Delivery, request: any) => unknown | Promise<unknown>;
}): Promise<void>;

// ---- backend session connection -------------------------------------------

export interface BackendOptions {
  /** presenced's base URL, http(s)://host:port. */
  url: string;
  apiKey: string;
  /** A stable name of this process (the same after a restart: it takes its sessions back). */
  origin: string;
  /** A WebSocket class with `ws`'s constructor (default: the `ws` package). */
  WebSocket?: unknown;
  /** First reconnect delay, ms (250), doubling to maxRetryMs (10000). */
  retryMs?: number;
  maxRetryMs?: number;
  /** Ops per frame at most (1000, and at most the server's max_ops): presenced spends less per op in frames of 1000 than of 10,000. */
  maxOps?: number;
}

export type BackendOp =
  | { op: 'open'; session: string; user: string; status?: SessionStatus; meta?: Record<string, unknown>; device?: string }
  | { op: 'status'; session: string; status: SessionStatus }
  | { op: 'close'; session: string }
  | { op: 'join' | 'update'; session: string; channel: string; data?: Record<string, unknown> | null }
  | { op: 'leave'; session: string; channel: string }
  | { op: 'sync'; session: string; user: string; status: SessionStatus; meta?: Record<string, unknown>; device?: string };

export interface BackendWelcome {
  type: 'welcome';
  protocol: number;
  origin: string;
  resumed: boolean;
  sessions: number;
  lease_ms: number;
  resume_ms: number;
  heartbeat_ms: number;
  max_ops: number;
}

export interface HeldSession {
  user: string;
  status: SessionStatus;
  meta: Record<string, unknown> | null;
  device: string | null;
  channels: Map<string, Record<string, unknown> | null>;
}

/**
 * The backend session connection (protocol.md section 5). Keeps the list of
 * this process's sessions; operations are batched and acknowledged; after
 * every (re)connect the list is re-asserted (only net differences become events).
 */
export declare class BackendConnection {
  constructor(options: BackendOptions);
  readonly origin: string;
  /** The sessions this process holds, by session id. */
  readonly sessions: Map<string, HeldSession>;
  readonly connects: number;
  readonly welcome: BackendWelcome | null;
  readonly stats: { opsSent: number; opsAcked: number; opErrors: number };
  /** Connect and keep reconnecting until end(); resolves at the first welcome (rejects with the 'fatal' PresenceError, or when end() comes first). */
  connect(): Promise<BackendWelcome>;
  /** Opens a session; returns its id (random unless given). */
  open(userId: string, options?: { session?: string; status?: SessionStatus; meta?: Record<string, unknown>; device?: string }): string;
  setStatus(session: string, status: SessionStatus): boolean;
  close(session: string): boolean;
  join(session: string, channel: string, data?: Record<string, unknown> | null): boolean;
  update(session: string, channel: string, data: Record<string, unknown> | null): boolean;
  leave(session: string, channel: string): boolean;
  /** Resolves when every operation so far was acknowledged (or the connection was lost). */
  flush(): Promise<void>;
  /** Stop; bye: true ends every session now instead of leaving them for the resume window. */
  end(options?: { bye?: boolean }): Promise<void>;
  /** Drop the connection (it reconnects and re-asserts). */
  reconnect(): void;
  on(event: 'ready', fn: (welcome: BackendWelcome) => void): this;
  on(event: 'disconnect', fn: (e: { code: number; reason: string }) => void): this;
  on(event: 'rejected', fn: (e: { op: BackendOp; code: BackendErrorCode; message: string }) => void): this;
  on(event: 'ended', fn: (e: { session: string; user: string | null; reason: Reason }) => void): this;
  /** The session was removed from a channel by presenced's API (`removeFromChannel`); it has left `sessions`' channels, so no re-assert joins it again. */
  /** Or a join/update the store refused after its ack (Redis, protocol.md 5.4): reason 'refused', the session is not in the channel, and `code` / `message` say why (too_many_channels, no_session, not_joined, internal). */
  on(event: 'left', fn: (e: { session: string; user: string; channel: string; reason: 'kicked' | 'refused' | (string & {}); code?: BackendErrorCode; message?: string }) => void): this;
  /** A lost connection or a refused frame (it reconnects by itself), or the origin_taken_over of 'fatal'. */
  on(event: 'error', fn: (err: Error & { code?: string; status?: number }) => void): this;
  /** The end for good: a refused key or origin (401, 400, 409), or origin_taken_over (code, status 0, not retryable). */
  on(event: 'fatal', fn: (err: PresenceError) => void): this;
  once: BackendConnection['on'];
  off(event: string, fn: (...args: any[]) => void): this;
}

export type Identity = string | { userId: string; meta?: Record<string, unknown>; device?: string } | null | undefined;

/** Report the connections of a `ws` WebSocketServer; returns a function that stops it. */
export declare function trackWebSocketServer(backend: BackendConnection, wss: { on: Function; off: Function },
  identify: (ws: any, req: IncomingMessage) => Identity): () => void;

/** Report the sockets of a Socket.IO server or namespace; `socket.data.presenceSession` holds each session id. */
export declare function trackSocketIO(backend: BackendConnection, io: { on: Function; off: Function },
  identify: (socket: any) => Identity, options?: { statusEvent?: string | null }): () => void;

declare global {
  // Express's Request gets the delivery webhookMiddleware verified.
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by presenced-node's webhookMiddleware before your handler runs. */
      presence?: Delivery;
    }
  }
}
