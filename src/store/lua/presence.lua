-- SPDX-License-Identifier: MIT
-- The Redis store's one script: every state change of the shared presence
-- state is decided here, atomically, so however many instances race on one
-- user, exactly one of them sees (and emits) each transition.
--
-- ARGV: op, the caller's header, then the op's own arguments from ARGV[3].
-- The header is one string, "<epoch> <stream maxlen> <offline grace
-- ms>/<channel grace ms> <lease ms> <offline retention s> <instance
-- id>\t<prefix>" (see begin). Numbers travel as decimal strings. Codes
-- mirror presence.h (types, reasons, statuses, errors); keep them in step.
--
-- Reply: {code, payload} or, when the call emitted events, {code, payload,
-- last seq, count, packed events}: the same three things as the call's one
-- log entry (see finish()), so the C side unpacks both with one function.
-- code is 0 or a negative PRESENCE_E*.
--
-- Keys are built here from the prefix (see docs/internals/redis.md): a
-- user's keys share the hash tag {u:<user>}, but the sequence counter, the
-- log and the instance tables are global to the prefix. On Redis Cluster
-- the store runs one shard per prefix "<prefix>{<tag>}": the first {...}
-- of every key is then the shard's tag, so a call never leaves its slot
-- (KEYS[1], the shard's seq, lets Redis route and check it).

-- This file is a Redis Functions library (FUNCTION LOAD; the host puts
-- the '#!lua name=...' line before it and the register_function call after
-- it): its top level runs once, at load, and every FCALL runs only
-- presence_main. Run as an EVAL script, this whole chunk (some hundred
-- closures, each upvalue looked up through Lua 5.1's open-upvalue list)
-- ran again on every call: ~25 us of Redis CPU before the op's first
-- command, more than a whole unbatched connect costs now. So the per-call
-- state lives in these locals, set by begin() at the start of each call.
local ARGV, op, P, iid, epoch, maxlen, grace_ms, lease_ms, retention_ms
-- The caller's epoch as a number: a session record keeps its owner's so.
local epoch_n
-- The last header (h) and each caller's parsed (hs: header -> its
-- fields; see begin), TIME's seconds and the lease's expiry as last
-- converted (see begin and fenced)
local nums_arg = {hs = {[0] = 0}}
local now, now_s, t0
-- now as decimal text, made when a call first needs it (a channel join, a
-- setting, a query): a 13-digit string.format was ~0.4 us of every call's
-- ~5.7 us fixed cost when every event carried the time as text.
local function nows()
  if not now_s then now_s = string.format('%d', now) end
  return now_s
end
-- Where an op's own arguments start in ARGV (a query batch moves it).
local A0 = 3
local A = A0

-- Integers (ms times, versions, sequence numbers: all far below 2^53) as
-- decimal text. '%d' formats a C long; '%.0f' and Lua's own number to
-- string conversion ('%.14g', also what redis.call does with a number
-- argument) go through glibc's multi-precision float printing, which
-- showed up in the profile.
-- Small ones (codes, counts, lengths) from a table built once, at the
-- first call (a library's top level may not use the string library): even
-- '%d' costs ~0.3 us a call, a table look-up ~0.03.
local NUM = {}
-- The other way, '0'..'4095' -> the number: the small numbers of an op's
-- arguments (a status, a reason, a limit) without tonumber (C's strtod,
-- 500-3,500 instructions of Redis; a look-up ~100).
local NUMOF = {}
-- Empty a table kept from call to call (its slots stay allocated).
local function clear(t)
  for k in pairs(t) do t[k] = nil end
end
local function s(x) return NUM[x] or string.format('%d', x) end
-- Batches also stop on time: a batch of sessions is the unit of work, but
-- a loaded host (or a preempted Redis) must still not block Redis for
-- longer than ~2 ms in one call (issue 4 allows 10 ms per command; the
-- margin absorbs preemption on a busy host). TIME is itself a call, so it
-- is asked every 4 items only. (2000 us is written where it is compared:
-- the main chunk may hold 200 locals, and holds that many.)
local budget_n
local function over_budget()
  budget_n = budget_n + 1
  if budget_n % 4 ~= 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]) - t0 >= 2000
end

local OFF, ON, IDLE = 0, 1, 2
local EV_CONN, EV_DISC, EV_STATUS, EV_UON, EV_UIDLE, EV_UOFF, EV_CLEAN =
  0, 1, 2, 3, 4, 5, 6
local EV_CJOIN, EV_CLEAVE, EV_CUPDATE = 7, 8, 9
local EV_UAVAIL, EV_UMSG = 10, 11 -- status that people set
local R_EXPIRED = 10
local R_CONNECT, R_KICKED, R_SHUTDOWN, R_LOST, R_RESYNC = 1, 6, 7, 8, 9
-- A backend's origin lost past its resume window: final, like R_LOST.
local R_ORIGIN_LOST = 11
local E_NOSESSION, E_EXIST, E_LIMIT, E_FENCED, E_BUSY = -5, -6, -7, -11, -15
local E_NOTMEMBER, E_CHANLIMIT = -32, -33
local R_EXPLICIT = 3

-- The global keys under the call's prefix (set by set_prefix()):
local K_SEQ, K_LOG
local K_FORMAT, FORMAT = nil, '17' -- see 'register'
local SEQ_JUMP_AFTER_LOSS = 1000000 -- see 'register'
-- The session index: session id -> user '\t' owning instance, in IX.N
-- small hashes <prefix>i:<bucket> (ix_key). Format 9 and before kept one
-- hash, sidx: a hashtable, ~123 bytes an entry at 100,000 (dict entry,
-- two sds strings, its slot); a bucket is a listpack, an entry its two
-- strings and a few bytes (docs/internals/redis.md, "The session index").
-- A listpack is searched entry by entry (an HSETNX and an HDEL ~360
-- instructions an entry): 16,381 buckets keep that under ~120 entries up to
-- ~2,000,000 sessions a shard. A linear hash that grew its buckets with
-- the index (format 12) cost more: moving entries through Lua at each
-- split made a connect 1.15x format 13's (connect_instructions.py).
-- K_NSESS counts the entries (HLEN of one hash before): /metrics and
-- present_left().
local K_NSESS
-- The index's cold parts (a table: the main chunk's locals are near
-- Lua's 200): N buckets, keys (bucket -> key name, this prefix), get,
-- page, count.
local IX = {N = 16381, keys = {}, pfx = {[0] = 0}}
local K_INST      -- hash: instance id -> '<registered epoch>\t<lease expiry ms>'
local K_LEASE     -- zset: instance id -> lease expiry (ms), the same
-- Every write checks its caller's epoch and lease (fenced): format 14 read
-- the epoch from inst and the lease from the zset, two commands; the
-- expiry now rides beside the epoch (the zset, kept in step, still orders
-- the leases for reap_claim and counts the live ones), one command fewer
-- on every write call (~7,500 instructions of Redis, 0.96x an unbatched
-- connect). LS: the lease's helpers (the main chunk's locals are near
-- Lua's 200). LS.v: a value of inst -> {epoch, expiry}, parsed once.
local LS = {v = {[0] = 0}}
-- Keep c, parsed from string k, in cache m (its count in m[0]): a caller's
-- header (begin), an instance's lease (LS.parse), a prefix's key names
-- (set_prefix), found by the string after. Started afresh past max (256
-- by default: instances come and go, leases move).
function LS.memo(m, k, c, max)
  if m[0] >= (max or 256) then
    clear(m)
    m[0] = 0
  end
  m[k] = c
  m[0] = m[0] + 1
  return c
end
-- Whether an instance other than the caller holds a live lease: a
-- shutdown's clients can come back only to one (remove_session). Asked
-- once a call, only when a shutdown ends a session.
function LS.others_live()
  if LS.others == nil then
    local n = redis.call('ZCOUNT', K_LEASE, now, '+inf')
    local mine = redis.call('ZSCORE', K_LEASE, iid)
    if mine and tonumber(mine) >= now then n = n - 1 end
    LS.others = n > 0
  end
  return LS.others
end
local K_EPOCHS    -- hash: instance id -> last epoch handed out, id '\tfirst' -> its first
local K_GRACE     -- zset: user id -> pending offline deadline
local K_MSGDUE    -- zset: user id -> its status message's expiry
-- Fields of a user's hash beside '' (the record) and its sessions: a tab
-- starts them, which no session id may contain.
local F_MSG, F_AS = '\tm', '\tas' -- the status message; availability set at
local F_MT = '\tmt' -- when the store last cleared a message (see 'sassert')
-- The channels the user is a member of, grace included: a field F_UC ..
-- channel each, value '' (uc_list). Format 6 kept them in a set per user,
-- uc:{u:U}: on Redis 7.0 a set of strings is a hashtable (its listpack form
-- came in 7.2), ~240 bytes a user where a field is its name's bytes; a new
-- member's field is written in the HSET of its session's record, and a
-- leave's HDEL costs what the SREM did.
local F_UC = '\tc'
local function is_sid(f) return f ~= '' and string.byte(f, 1) ~= 9 end
local K_NPRESENT  -- string: how many users are present or in grace
-- What this call changed it by: one INCRBY at the call's end (presence_main)
-- instead of one at every user's coming and going (a batch of 60 writes
-- made up to 60 of them).
local npresent_d
local K_REAP      -- zset: dead instance -> claim expiry
local K_REAPER    -- hash: dead instance -> claimer/epoch/dead epoch
local K_REAPC     -- hash: dead instance -> HSCAN cursor of the index, '' done
local function k_reapids(i) return P .. 'reapids:' .. i end -- list: removed ids
-- A user's one hash: field '' holds the user record (ids are never empty),
-- every other field is one of the user's sessions. One key per user means
-- one HMGET reads the user and a session, one HSET writes both: each
-- redis.call costs ~0.5-1.7 us of Lua-to-command conversion, more than
-- the command itself.
-- PU: P .. 'u:{u:' (set_prefix): a key is then a 3-piece concatenation,
-- written out where an operation makes it (a call is ~500 instructions).
local PU
local function k_user(u) return PU .. u .. '}' end
-- The session index's value (format 5): the user and the instance that
-- owns the session. Format 4 also kept a set is:<instance> of each
-- instance's session ids, for the reaper and the sweep: an SADD at every
-- connect and an SREM at every end (~5 us of an unbatched connect's ~28)
-- and ~75 bytes a session. Those two now walk the index (HSCAN) and skip
-- other owners' entries by this value, without reading their records: a
-- reap or a sweep costs a pass over the shard's index (~0.3 us an entry
-- of another instance's), paid when an instance dies or is fenced, not at
-- every connect and end.
local function sidx_val(u, i) return u .. '\t' .. i end
-- The index's bucket of session id sid: a hash of its first two, middle
-- two and last four bytes modulo IX.N, a prime (three calls of
-- string.byte, ~3,500 instructions; redis.sha1hex of the id cost 6,300:
-- bench/redis/lua_costs.py). Without the middle bytes, ids of one shape
-- ("tab-<n>-x") shared a hundred buckets. Mirrored by presence__redis_ixb
-- in redis.c (tests plant entries with it). Ids that differ only
-- elsewhere share a bucket: past hash-max-listpack-entries it becomes a
-- hashtable, as big as format 9's one hash, no less correct.
function IX.hash(sid)
  local n = #sid
  local a, b = string.byte(sid, 1, 2)
  local m = n - n % 2
  local c, d = string.byte(sid, m / 2, m / 2 + 1)
  local e, f, g, h = string.byte(sid, -4, -1)
  return ((((a * 131 + (b or 0)) * 131 + (c or 0)) * 131 + (d or 0)) * 7919 +
    (((e * 131 + (f or 0)) * 131 + (g or 0)) * 131 + (h or 0))) % IX.N
end
local ixd -- what this call changed the count of entries by (K_NSESS)
function IX.name(k)
  local name = IX.keys[k]
  if not name then
    name = P .. 'i:' .. s(k)
    IX.keys[k] = name
  end
  return name
end
local function ix_key(sid) return IX.name(IX.hash(sid)) end
-- Entry writes, each keeping the count.
local function ix_set(sid, v)
  ixd = ixd + redis.call('HSET', ix_key(sid), sid, v)
end
local function ix_del(sid)
  ixd = ixd - redis.call('HDEL', ix_key(sid), sid)
end
function IX.get(sid) return redis.call('HGET', ix_key(sid), sid) end
-- One page of a walk over the whole index: cursor '0' starts it, and a
-- page's next cursor is '0' when the walk is done. A cursor is a bucket,
-- or bucket ':' HSCAN cursor inside a bucket that became a hashtable.
-- Buckets are read until lim entries or maxb buckets (an empty index is
-- IX.N buckets of nothing; 256 of them are ~0.4 ms of Redis).
function IX.page(cur, lim, maxb)
  local bk, hc = string.match(cur, '^(%d+):?(%d*)$')
  bk = tonumber(bk) or 0
  if hc == '' then hc = '0' end
  local kv, nb = {}, 0
  while bk < IX.N do
    -- 64 buckets none of which exists are skipped by one EXISTS (a
    -- sparse index, or an empty one, was 16,381 HSCANs, ~25 ms of Redis,
    -- at every sweep after a reconnect).
    local empty = false
    if hc == '0' and bk % 64 == 0 then
      local ks = {}
      for k = bk, math.min(bk + 63, IX.N - 1) do ks[#ks + 1] = IX.name(k) end
      empty = redis.call('EXISTS', unpack(ks)) == 0
    end
    if empty then
      bk, nb = bk + 64, nb + 8
    else
      local r = redis.call('HSCAN', IX.name(bk), hc, 'COUNT', lim)
      local got = r[2]
      for k = 1, #got do kv[#kv + 1] = got[k] end
      nb = nb + 1
      if r[1] ~= '0' then return kv, s(bk) .. ':' .. r[1] end
      bk, hc = bk + 1, '0'
    end
    if #kv >= 2 * tonumber(lim) or nb >= maxb then break end
  end
  if bk >= IX.N then return kv, '0' end
  return kv, s(bk)
end
-- Whether index value v names owner i, given tail = '\t' .. i: compared in
-- place (a walk over the index skips most entries by this; a match with
-- captures made two strings an entry, ~2.6 us of Redis at load 10).
local function owned_by(v, tail)
  local at = #v - #tail + 1
  return at > 1 and string.find(v, tail, at, true) == at
end
-- User and owner of an index value (owner nil for a value without one).
local function sidx_parse(v)
  if not v then return nil end
  local u, o = string.match(v, '^([^\t]*)\t(.*)$')
  if not u then return v, nil end
  return u, o
end

local out = {} -- {code, payload}: begin() resets it

-- The events of this call, packed, in order. All of them go to the log as
-- ONE stream entry, numbered by one INCRBY: an XADD per event (10 arguments
-- each, converted from Lua) cost ~1.5 us, more than deciding the event.
--
-- Binary since format 6 (docs/internals/redis.md, "The log"; decoded by
-- presence__redis_unpack), integers little-endian. The entry starts with
-- what every event of one call shares: its time (ms, 6 bytes), the
-- caller's epoch (6) and the caller's instance id. Then each event:
--   type + flags (3), reason, from, to (a byte each), version (4),
--   then what its flags say it has: count (4), instance, session and user,
--   meta (4-byte length), then its type's own (uemit, cemit, emit_msg).
-- A string is its length + 1 (0: absent), its bytes and a NUL, so that the
-- C side points into the reply without copying or writing.
-- Format 5 wrote decimal text tokens, the time, the epoch and the emitter
-- in every event: some thirty table stores, a string.format for every
-- number above 4095, and 223 bytes for a connect's two events where format
-- 6 writes 152 (UUID-long instance id, short session and user ids). One
-- struct.pack an event cost 0.74x the CPU of a batched session operation
-- (script_ab, the same load).
-- Format 9 writes only what an event has (format 6-8 wrote every field,
-- absent ones as zeros: a count, an instance and a meta that a status
-- change never has, 6-byte versions that are kept in 4) and lets a user
-- event that follows its session's (a connect's user.online) take the
-- session, user and device from it: a status change's two events are 80
-- bytes instead of 134 with a UUID-long session id. Every byte of the log
-- costs Redis ~50 instructions (packed, concatenated, stored, sent back
-- in the reply: bench/redis/script_ab.py, an event of constant bytes
-- against one of none), and every reader of the log receives it.
--
-- evs holds the packed pieces of every event of the call (nb of them;
-- evs[1] is the header's place), nev counts the events: finish()
-- concatenates them once.
local evs, nev, nb -- begin() empties them
-- The flags above an event's type (its first 3 bytes; the C side's
-- presence__redis_unpack reads them as tf >> 8):
--   256 a device tail (device, its best status before and after)
--   512 the shown version (4)     1024 a user event follows
--   2048 a channel.update's data changed   4096 the shown count (4)
--   8192 the session and user are the previous event's (left out)
--   16384 the device tail is the previous event's (left out)
--   32768 a count (4)   65536 an instance (absent: the caller; '': none)
--   131072 meta   262144 the device is the default one (its name left out)
-- LE: the session, user, device and its statuses of the call's last event
-- when it was a session or a user event (LE.s nil otherwise). A session
-- or user event of the same session and user (a connect's user.online
-- after its session.connected) leaves them out (8192, and 16384 when the
-- device tail is the same too); the reader takes the previous event's.
-- Both are keyed by that user for the workers' router (redis_interest.c),
-- so a run of events it cuts never starts at one.
local LE = {}
-- '<length>:' for lengths below 4096, built with NUM: the text form of an
-- optional string in a status message's field (F_MSG, msg_parse).
local LEN = {}
local function str(x)
  if not x then return '- ' end
  return (LEN[#x] or (s(#x) .. ':')) .. x .. ' '
end
-- Length + 1 of an optional string, and the string ('' when absent).
local function ln(x) if x then return #x + 1 end return 0 end
-- A string's bytes for pack ('' when absent: its length says absent).
local function sb(x) return x or '' end

-- One event, packed piece by piece: the general form (a cleanup, a
-- message, a user event of a device other than the default). The frequent
-- shapes are packed whole in uemit and cemit. tf: the type and the flags
-- of its tail; the flags of the optional fields are added here. ev_inst:
-- the instance the event is about ('' none; the caller's is left out).
local EVP = {}
local function ev_pack(tf, reason, sid, uid, meta, from, to, ver, ev_inst,
                       count, tail)
  if count then tf = tf + 32768 end
  if ev_inst == iid then ev_inst = nil end
  if ev_inst then tf = tf + 65536 end
  if meta then tf = tf + 131072 end
  local n = 1
  EVP[1] = struct.pack('<I6I4', tf + 16777216 * (reason + 256 * (from + 256 *
                       to)), ver)
  if count then
    n = n + 1
    EVP[n] = struct.pack('<I4', count)
  end
  if ev_inst then
    n = n + 1
    EVP[n] = struct.pack('<I2s', #ev_inst + 1, ev_inst)
  end
  if tf % 16384 < 8192 then
    n = n + 1
    EVP[n] = struct.pack('<I2sI2s', ln(sid), sb(sid), ln(uid), sb(uid))
  end
  if meta then
    n = n + 1
    EVP[n] = struct.pack('<I4s', #meta + 1, meta)
  end
  if tail then
    n = n + 1
    EVP[n] = tail
  end
  return table.concat(EVP, '', 1, n)
end

-- from and to of a user event carry the user's availability above the
-- status: status + 4 * availability (a reader masks with 3 for the status).
-- tail: the bytes of a type's own, as is. count: a number or nil. ev_inst:
-- the instance the event is about when it is not the caller ('' none).
local function emit(ty, reason, sid, uid, meta, from, to, ver, ev_inst, count,
                    tail)
  nev = nev + 1
  LE.s = nil
  nb = nb + 1
  evs[nb] = ev_pack(ty, reason, sid, uid, meta, from, to, ver, ev_inst, count,
                    tail)
end

-- Number and append this call's events: one entry whose id is the sequence
-- number of its last event, fields 'k' (how many) and 'p' (packed). The
-- reply gets the same three: {code, payload, last seq, count, packed}.
-- The log keeps at least its length in events: MINID trims whole entries
-- older than that, '~' only where a whole stream node goes. Asked when the
-- call's events cross a multiple of 64: a node holds up to 100 entries or
-- 4 KB (stream-node-max-*), tens of calls' entries, so a trim at every
-- call found nothing to remove nearly always and cost its three arguments
-- each time: ~10,000 instructions of Redis an unbatched connect with a
-- full log (script_ab.py --maxlen 1000: 0.948x). The log keeps up to 64
-- events more.
local function finish()
  if nev == 0 then return out end
  local last = redis.call('INCRBY', K_SEQ, nev)
  evs[1] = struct.pack('<I6I6I2s', now, epoch_n, #iid + 1, iid)
  local blob = table.concat(evs, '', 1, nb)
  local last_s = s(last)
  if last > maxlen and (last - nev) % 64 + nev >= 64 then
    -- The trim rides in the XADD (one command less per call).
    redis.call('XADD', K_LOG, 'MINID', '~', s(last - maxlen + 1),
               last_s .. '-0', 'k', s(nev), 'p', blob)
  else
    redis.call('XADD', K_LOG, last_s .. '-0', 'k', s(nev), 'p', blob)
  end
  out[3] = last_s
  out[4] = s(nev)
  out[5] = blob
  return out
end

-- A session record, binary (format 4): status and reason (a byte each),
-- connected ms and status since ms (6-byte integers), owner
-- (NUL-terminated), owner's epoch (6 bytes since format 8: it is a time in
-- ms; as text it was 14 bytes), and the session's channels ('\t'-separated,
-- in join order, NUL-terminated: ids and names hold no control
-- character), then '=' ..
-- meta or nothing (meta may hold any byte), to the end. struct.pack/unpack
-- cost a third of what the text record's 7-capture match and
-- concatenation did, and the record is ~25 bytes shorter (q_sessions still
-- answers the text form). The channels ride in the record (format 3 kept
-- them in a hash sc:{u:<user>}) because every status change and end
-- reads the record anyway: no HGET of another key, and a join or a leave
-- rewrites one field instead of reading and writing a second one.
-- The device: m starts with '@' .. device .. '\t' when it is not the
-- default 'web' (device words hold no tab); the record keeps m as given.
local DEV_DEFAULT = 'web'
local function dev_of(m)
  if string.byte(m, 1) ~= 64 then return DEV_DEFAULT, m end
  local d, rest = string.match(m, '^@([^\t]*)\t(.*)$')
  return d or DEV_DEFAULT, rest or m
end
local REC_FMT = '<BBI6I6sI6s'
local function rec_parse(rec)
  local st, r, c, since, i, e, ch, pos = struct.unpack(REC_FMT, rec)
  return {iid = i, epoch = e, st = st, reason = r, conn = c, since = since,
          ch = ch, m = string.sub(rec, pos)}
end
local function rec_make(r)
  return struct.pack(REC_FMT, r.st, r.reason, r.conn, r.since, r.iid,
                     r.epoch, r.ch or '') .. r.m
end
-- A new session's record, from its fields (no table made for them: one
-- was ~2,000 of a connect's ~100,000 instructions of Redis).
local function rec_new(st, reason, conn, m)
  return struct.pack(REC_FMT, st, reason, conn, now, iid, epoch_n, '') .. m
end
-- The text form the C side reads (q_sessions): owner, epoch, status,
-- reason, connected ms, since ms, then '=' .. meta or nothing.
local function rec_text(rec)
  local r = rec_parse(rec)
  return r.iid .. '\t' .. s(r.epoch) .. '\t' .. s(r.st) .. '\t' ..
    s(r.reason) .. '\t' .. s(r.conn) .. '\t' .. s(r.since) .. '\t' .. r.m
end
-- A session record's status, its first byte, read without parsing the
-- whole record (a channel write or a member listing needs nothing else).
local function rec_status(rec) return string.byte(rec, 1) end
local function meta_of(m)
  local _, mm = dev_of(m)
  if mm == '' then return nil end
  return string.sub(mm, 2)
end

-- The user record, one string: "st n on v since ls g gr av hm" (reported
-- status, sessions, online sessions, version, status since ms, last seen
-- ms, grace pending, grace's end reason, availability, whether a status
-- message is set: the message itself is field F_MSG). One field instead of
-- eight: an 8-field HMGET + HSET cost 3.1 us here, one field 1.2 us. A
-- record of an older build has no av and hm: read as 0.
-- Then "la sv gd dv" (status that people set, docs/internals/redis.md):
-- last active ms, the shown version (moves only with what watchers see),
-- the device a grace was entered from ('=' none), the sessions per device
-- ('=': every session is of the default device, so n and on say it all;
-- else 'device:n:on,' per device in the order first met).
-- Binary since format 4 (URC_FMT: the small numbers a byte each, the
-- counts 4 bytes, ms times 6, versions 4 since format 8 (6 before), the two
-- device strings NUL-terminated): a 14-value string.format and a 14-capture
-- match were ~3 us of a ~15 us batched operation at load 4; pack and
-- unpack cost a fraction of that, and the record is 43 bytes instead of
-- ~63 (under the hash's 64-byte listpack limit with a second device's
-- counts).
local URC_FMT = '<BBBBBI4I4I4I6I6I6I4ss'
-- A version's next value. Versions are kept in 4 bytes and wrap, as the
-- embedded store's 32-bit ones do (include/presence.h): a user's 2^32nd
-- event would take ~136 years at one a second. 6 bytes cost a user's
-- hash its allocator class at one session (docs/internals/redis.md).
local function vinc(v)
  if v >= 4294967295 then return 0 end
  return v + 1
end
local function urec_parse(h)
  if not h then
    return {st = OFF, n = 0, on = 0, v = 0, since = 0, ls = 0, g = 0,
            gr = 0, av = 0, hm = 0, la = 0, sv = 0, gd = '=', dv = '=',
            present = false, new = true}
  end
  local st, g, gr, av, hm, n, on, v, since, ls, la, sv, gd, dv =
    struct.unpack(URC_FMT, h)
  -- One constructor, present included: a key added later can make Lua
  -- grow (rehash) the table.
  return {st = st, n = n, on = on, v = v, since = since, ls = ls, g = g,
          gr = gr, av = av, hm = hm, la = la, sv = sv, gd = gd, dv = dv,
          present = not (st == OFF and n == 0 and g == 0)}
end

-- ---- devices and what watchers see ------------------------------------------

local function best(n, on)
  if n == 0 then return OFF end
  if on > 0 then return ON end
  return IDLE
end
-- DV: the devices' cold parts (a table: the main chunk's locals are at
-- Lua's 200). DV.list(U): the user's sessions per device, as a list of
-- {device, n, on}: parsed from U.dv once per call and kept on U (U.D).
-- Only users with sessions on more than one device kind get there.
local DV = {}
-- DV.F_VL: the user's field holding its veil, "from:to" ms (absent:
-- none): the last period the user spent invisible, kept when it leaves
-- invisible (DV.veil) so that watchers are never shown a time inside it
-- (docs/protocol.md 6.1). Only 'q_user' and the availability writes read
-- it: no status change pays for it. (In DV: the main chunk's locals are
-- at Lua's 200.)
DV.F_VL = '\tvl'
-- DV.veil(ku, U, as): the user (record U, key ku) leaves invisible at as
-- (ms): keep the period [went invisible, as] as its veil, which watchers'
-- times are masked by after it (json.c): an availability set while the
-- user is offline or in its grace must not unmask the times it had while
-- invisible (a last_seen after it went invisible proves it was there).
-- A time of the user's still inside the previous veil (offline since
-- then, say) keeps that veil's start: it stays hidden too. Called before
-- F_AS is overwritten (its value is when the user went invisible).
DV.veil = function(ku, U, as)
  local h = redis.call('HMGET', ku, F_AS, DV.F_VL)
  local vf = tonumber(h[1]) or as
  if h[2] then
    local pf, pt = string.match(h[2], '^(%d+):(%d+)$')
    pf, pt = tonumber(pf), tonumber(pt)
    local low = U.since
    if U.ls > 0 and U.ls < low then low = U.ls end
    if U.la > 0 and U.la < low then low = U.la end
    if pt and low <= pt and pf < vf then vf = pf end
  end
  redis.call('HSET', ku, DV.F_VL, string.format('%d:%d', vf, as))
end
function DV.list(U)
  if U.D then return U.D end
  local D = {}
  if U.dv ~= '=' then
    for d, n, on in string.gmatch(U.dv, '([^:,]+):(%d+):(%d+),') do
      D[#D + 1] = {d, tonumber(n), tonumber(on)}
    end
  end
  U.D = D
  return D
end
-- Sessions and online sessions of device d. U.n and U.on must be current.
local function dev_count(U, d)
  if U.dv == '=' and not U.D then
    if d == DEV_DEFAULT then return U.n, U.on end
    return 0, 0
  end
  for _, e in ipairs(DV.list(U)) do
    if e[1] == d then return e[2], e[3] end
  end
  return 0, 0
end
-- After U.n / U.on changed by (dn, don) for a session of device d.
local function dev_adjust(U, d, dn, don)
  if U.dv == '=' and not U.D then
    if d == DEV_DEFAULT then return end
    -- The first session of another device: the counts become a list.
    local D = {}
    local wn, won = U.n - dn, U.on - don
    if wn > 0 then D[1] = {DEV_DEFAULT, wn, won} end
    U.D = D
  end
  local D = DV.list(U)
  local found = false
  for i, e in ipairs(D) do
    if e[1] == d then
      e[2] = e[2] + dn
      e[3] = e[3] + don
      if e[2] <= 0 then table.remove(D, i) end
      found = true
      break
    end
  end
  if not found and dn > 0 then D[#D + 1] = {d, dn, don} end
  -- Only the default device left (or none): back to '='.
  if #D == 0 or (#D == 1 and D[1][1] == DEV_DEFAULT) then
    U.D = nil
    U.dv = '='
    return
  end
  local t = {}
  for i, e in ipairs(D) do t[i] = e[1] .. ':' .. s(e[2]) .. ':' .. s(e[3]) .. ',' end
  U.dv = table.concat(t)
end

-- After U.n / U.on changed by (dn, don) for a session of device d: the
-- device's best status before and after, and the user's computed status,
-- the device counts kept (dev_count, best, dev_adjust and computed in one
-- call: their five calls were ~2,500 of an operation's instructions).
local function dev_step(U, d, dn, don)
  local n, on = U.n, U.on
  local to = OFF
  if n > 0 then
    if on > 0 then to = ON else to = IDLE end
  end
  if U.dv == '=' and not U.D and d == DEV_DEFAULT then
    -- Every session is of the default device: its counts are the user's.
    local bf = OFF
    if n - dn > 0 then
      if on - don > 0 then bf = ON else bf = IDLE end
    end
    return bf, to, to
  end
  local n0, on0 = 0, 0
  if U.dv ~= '=' or U.D then n0, on0 = dev_count(U, d) end
  dev_adjust(U, d, dn, don)
  return best(n0, on0), best(n0 + dn, on0 + don), to
end

-- The masking table (docs/protocol.md 6.1, presence_shown_status in C).
local function shown_st(a, c)
  if c == OFF then return OFF end
  if a == 1 then return ON end
  if a == 2 then return IDLE end
  if a == 3 then return OFF end
  return c
end
local function shown_av(a, c)
  if c == OFF or a == 3 then return 0 end
  return a
end
-- The user's record, and with sid that session's record (false if none),
-- in one call.
local function uget(u, sid)
  if sid then
    local h = redis.call('HMGET', PU .. u .. '}', '', sid)
    return urec_parse(h[1]), h[2]
  end
  return urec_parse(redis.call('HGET', PU .. u .. '}', ''))
end
-- Session sid's record alone (false if none): a channel write needs
-- nothing of the user's, so neither its field nor its parse.
local function sget(u, sid)
  return redis.call('HGET', k_user(u), sid)
end
-- Write the user's record, and with sid that session's record, in one
-- call. The count of present users (for /metrics) changes only when
-- presence does. Format 3 kept the present users in a set (56 bytes a
-- user, an SADD or SREM at each change): the sessions index and the grace
-- zset already name them for a wipe (OPS.wipe), so a counter is enough.
local function uput(u, U, sid, rec)
  local ur = struct.pack(URC_FMT, U.st, U.g, U.gr, U.av, U.hm, U.n, U.on, U.v,
                         U.since, U.ls, U.la, U.sv, U.gd, U.dv)
  -- (The key is made again rather than kept on U: a 16th field grows
  -- every user record's table to 32 slots, 1.07x an operation's
  -- instructions, where the concatenation is ~1,300.)
  local k = PU .. u .. '}'
  if sid then
    redis.call('HSET', k, '', ur, sid, rec)
  else
    redis.call('HSET', k, '', ur)
  end
  local present = not (U.st == OFF and U.n == 0 and U.g == 0)
  if present ~= U.present then
    -- An absent user's record expires after the retention (it holds no
    -- session then); back, it is kept again (HSET keeps a TTL).
    if present then
      npresent_d = npresent_d + 1
      -- A user without a record until now has no TTL to remove.
      if not U.new then redis.call('PERSIST', k) end
    else
      npresent_d = npresent_d - 1
      -- What the person set outlives the retention (kept until cleared).
      if retention_ms > 0 and U.av == 0 and U.hm == 0 then
        redis.call('PEXPIRE', k, s(retention_ms))
      end
    end
    U.present = present
  end
  U.new = nil
end
local function computed(U)
  if U.n == 0 then return OFF end
  if U.on > 0 then return ON end
  return IDLE
end

-- An event of user u's (session and user events): what a watcher sees
-- decides whether the shown version moves (presence_event_watcher_visible
-- in C), and the event carries it. dev: the causing session's device and
-- its best status before (df) and after (dt), or nil. follows: a user event
-- follows this session event and carries the device change for it. The
-- type gains flags above 255: 256 a device tail (device df dt), 512 the
-- shown version, 1024 "a user event follows"; a reader of an older entry
-- finds none.
-- A user event's tails: the device, its best status before and after (flag
-- 256: the device's name left out when it is the default, 262144, or the
-- whole tail when it is the previous event's, 16384), then the shown
-- version (flag 512); after a message's tail, or after the event's fields.
local function uemit(U, ty, reason, sid, u, meta, from, to, avf, dev, df, dt,
                     follows, tail)
  local avt = U.av
  -- Nobody set an availability (the common case): what watchers are shown
  -- is the status itself (shown_st(0, x) == x, shown_av(0, x) == 0), with
  -- no call (a Lua call is ~500 instructions of Redis, and an event made
  -- up to six of them).
  local plain = avt == 0 and avf == 0
  local dvis
  if dev then
    if plain then dvis = df ~= dt
    else dvis = shown_st(avt, df) ~= shown_st(avt, dt) end
  end
  local vis
  if ty == EV_UMSG then vis = true
  elseif ty <= EV_STATUS then vis = dvis and not follows
  elseif plain then vis = from ~= to or dvis
  else
    vis = shown_st(avf, from) ~= shown_st(avt, to) or
      shown_av(avf, from) ~= shown_av(avt, to) or dvis
  end
  if vis then U.sv = vinc(U.sv) end
  local tf = ty + 512
  if follows then tf = tf + 1024 end
  local fr, tt = from + 4 * avf, to + 4 * avt
  local ps, pu = sid, u
  local same_dev = false
  if not tail and ty <= EV_UOFF then
    if sid and sid == LE.s and u == LE.u then
      tf = tf + 8192
      ps, pu = nil, nil
      same_dev = dev and dev == LE.d and df == LE.df and dt == LE.dt
    end
    LE.s, LE.u, LE.d, LE.df, LE.dt = sid, u, dev, df, dt
  else
    LE.s = nil
  end
  nev = nev + 1
  nb = nb + 1
  local v, sv = U.v, U.sv
  -- The frequent shapes in one pack each (a second pack and its
  -- concatenation cost ~4 % of a batched operation): a user event after
  -- its session's; a session event (or a user event it caused) of the
  -- default device. Numbers that fit share an integer: type, flags,
  -- reason, from and to are 6 bytes, the device's statuses and the shown
  -- version 6 (a pack's item costs ~300 instructions).
  if dev and not tail then
    local h = tf + 256 + 16777216 * (reason + 256 * (fr + 256 * tt))
    if same_dev then
      evs[nb] = struct.pack('<I6I4I4', h + 16384, v, sv)
      return
    end
    if ps and pu and dev == DEV_DEFAULT then
      if meta then
        evs[nb] = struct.pack('<I6I4I2sI2sI4sI6', h + 262144 + 131072, v,
                              #ps + 1, ps, #pu + 1, pu, #meta + 1, meta,
                              df + 256 * dt + 65536 * sv)
      else
        evs[nb] = struct.pack('<I6I4I2sI2sI6', h + 262144, v, #ps + 1, ps,
                              #pu + 1, pu, df + 256 * dt + 65536 * sv)
      end
      return
    end
  end
  local dtail
  if not dev then
    dtail = struct.pack('<I4', sv)
  elseif same_dev then
    tf = tf + 256 + 16384
    dtail = struct.pack('<I4', sv)
  elseif dev == DEV_DEFAULT then
    tf = tf + 256 + 262144
    dtail = struct.pack('<BBI4', df, dt, sv)
  else
    tf = tf + 256
    dtail = struct.pack('<I2sBBI4', #dev + 1, dev, df, dt, sv)
  end
  if tail then dtail = tail .. dtail end
  evs[nb] = ev_pack(tf, reason, ps, pu, meta, fr, tt, v, iid, nil, dtail)
end

-- Set the user's reported status; emit only if it is a transition. dev,
-- df, dt: the causing session's device change (see uemit), or nil.
local function transition(u, U, to, reason, cause, dev, df, dt)
  local from = U.st
  if from == to then return end
  U.st = to
  U.v = vinc(U.v)
  U.since = now
  if to ~= OFF then U.ls = now end
  local ty = EV_UOFF
  if to == ON then ty = EV_UON elseif to == IDLE then ty = EV_UIDLE end
  uemit(U, ty, reason, cause, u, nil, from, to, U.av, dev, df, dt, false)
end

local function grace_cancel(u, U)
  if U.g == 1 then
    U.g = 0
    redis.call('ZREM', K_GRACE, u)
  end
end

-- An inst value's epoch (text) and lease expiry (ms). A value changes when
-- its lease is renewed (every lease_ms / 2): parsed once, then found by the
-- string (tonumber is C's strtod, ~500-1,000 instructions).
function LS.parse(v)
  local c = LS.v[v]
  if not c then
    local e, x = string.match(v, '^([^\t]*)\t(%d+)$')
    c = LS.memo(LS.v, v, {e or v, tonumber(x) or 0})
  end
  return c[1], c[2]
end
-- Instance i's registered epoch, or nil.
function LS.epoch(i)
  local v = redis.call('HGET', K_INST, i)
  return v and (LS.parse(v))
end
-- Set instance i's epoch e (text) and lease until x (ms), in both keys.
function LS.put(i, e, x)
  redis.call('ZADD', K_LEASE, x, i)
  redis.call('HSET', K_INST, i, e .. '\t' .. s(x))
end

-- Every write of a live epoch also renews its lease: writes travel on the
-- same connection as heartbeats, and a deep pipeline of writes (a burst of
-- connects) must not starve the heartbeat queued behind it into expiry.
-- Renewed once less than half of it is left: the same protection, without
-- a ZADD on every write.
local function fenced()
  local v = redis.call('HGET', K_INST, iid)
  if not v then return true end
  local e, exp = LS.parse(v)
  if e ~= epoch or exp < now then return true end
  if exp - now < lease_ms / 2 then LS.put(iid, epoch, now + lease_ms) end
  return false
end

-- ---- channels -----------------------------------------------------------
--
-- A channel's keys share the hash tag {c:<name>}:
--   c:{c:N}   hash: 'm\t'..user -> member record, 'j\t'..sid -> join
--             record, 'd\t'..user -> the data of a member in its grace,
--             'h' -> how many members are invisible (absent to the other
--             members: they are shown n - h), 'n' -> how many members,
--             'z' -> '1' while the channel has a cm zset
--   cm:{c:N}  zset (all scores 0): the member user ids, for paging in byte
--             order (ZRANGEBYLEX), kept only for a channel of more than
--             CH.ON members (until it falls below CH.OFF: the same
--             channel's size moving around one number does not make and
--             drop it each time). A smaller channel's members are listed
--             from its hash's fields, sorted here. Format 13 kept the zset
--             for every channel and counted with ZCARD: a key of ~105
--             bytes a channel (most channels are small: a room, a
--             document, a user's own), and a ZADD and a ZCARD at every
--             new member, a ZREM and a ZCARD at every leave.
-- A user's channels (grace included) are field F_UC of its hash.
-- A session's channels are in its record (rec_parse: r.ch).
-- Global: chans (zset, scores 0: active channels), cgrace (zset:
-- channel..'\t'..user -> pending leave deadline).
-- Ids and channel names hold no control character, so '\t' separates.
local cgrace_ms -- begin(): from the header, 'offline/channel'
local K_CHANS, K_CGRACE -- set_prefix()
local PC -- P .. 'c:{c:' (set_prefix)
local function k_chan(c) return PC .. c .. '}' end
local function k_cmem(c) return P .. 'cm:{c:' .. c .. '}' end
-- The member zset's bounds (see above), and per channel its count (n),
-- whether it has its zset (z) and its invisible members (h), as last read
-- or written in this call (begin() empties them): mget_h reads the three
-- with the member's record and each HINCRBY of h answers the new count, so
-- an event's counts (cemit) cost no read of their own. (A table: the main
-- chunk's locals are near Lua's 200; CH also holds a few functions.) ON is 0
-- (every channel keeps its zset) when this Redis compares strings other
-- than byte by byte (begin: Lua's < is strcoll, and redis-server takes
-- LC_COLLATE from its environment), since a listing must come out in the
-- byte order of ZRANGEBYLEX, which the sharded store merges by.
local CH = {ON = 32, OFF = 16, n = {}, z = {}, h = {}}

local function split_tab(x)
  local t = {}
  if not x or x == '' then return t end
  for v in string.gmatch(x, '[^\t]+') do t[#t + 1] = v end
  return t
end

-- Member record (binary since format 6, MREC_FMT): status, version (4
-- bytes since format 8), since ms, online joined sessions, grace pending,
-- grace's end reason, shown version (4 bytes), then '\t'..sid per joined
-- session, most recent (joined or updated) first: its join holds the
-- member's data. sv: the version other members are shown (cemit). The
-- text form's two 7-capture matches and 7-value string.format were ~1.5 us
-- of a channel join or leave (as the user record's were, "Binary records"
-- in docs/internals/redis.md).
local MREC_FMT = '<BI4I6I4BBI4'
local function mrec_parse(h)
  if not h then return nil end
  local st, v, since, non, g, gr, sv, pos = struct.unpack(MREC_FMT, h)
  return {st = st, v = v, since = since, non = non, g = g, gr = gr, sv = sv,
          sids = split_tab(string.sub(h, pos))}
end
local function mrec_make(M)
  local h = struct.pack(MREC_FMT, M.st, M.v, M.since, M.non, M.g, M.gr, M.sv)
  if #M.sids > 0 then h = h .. '\t' .. table.concat(M.sids, '\t') end
  return h
end
-- Join record: joined ms (6 bytes since format 8; text and a tab before,
-- 14 bytes, a big channel's field one allocator class larger), then '=' ..
-- data or nothing.
local JREC_FMT = '<I6'
local function jrec_make(joined, dm)
  return struct.pack(JREC_FMT, joined) .. dm
end
local function jjoined(j) return (struct.unpack(JREC_FMT, j)) end
local function jdata(j)
  if not j or #j <= 6 then return nil end
  return string.sub(j, 8)
end
local function mdata(c, M)
  if #M.sids == 0 then return redis.call('HGET', k_chan(c), 'd\t' .. M.u) or nil end
  return jdata(redis.call('HGET', k_chan(c), 'j\t' .. M.sids[1]))
end
-- The member's record (with M.u).
local function mget(c, u)
  local M = mrec_parse(redis.call('HGET', k_chan(c), 'm\t' .. u))
  if M then M.u = u end
  return M
end
-- The same, for a write whose event shows the channel's count: read in one
-- HMGET with the channel's hidden count, and with jf the field of one of
-- the member's joins. (A listing, one member after another, keeps to mget.)
local function mget_h(c, u, jf)
  local h
  if jf then
    h = redis.call('HMGET', k_chan(c), 'm\t' .. u, 'h', 'n', 'z', jf)
  else
    h = redis.call('HMGET', k_chan(c), 'm\t' .. u, 'h', 'n', 'z')
  end
  CH.h[c] = NUMOF[h[2]] or tonumber(h[2]) or 0
  CH.n[c] = NUMOF[h[3]] or tonumber(h[3]) or 0
  CH.z[c] = h[4] and true or false
  local M = mrec_parse(h[1])
  if M then M.u = u end
  return M, h[5]
end
-- A channel's members without its zset: the 'm\t' fields of its hash, those
-- after `after` ('' all), as a list of ids and a table id -> member record,
-- unsorted. A listpack answers in one HSCAN; a hash of many joins may be a
-- hashtable, scanned to its end (an entry seen twice counts once).
function CH.scan(c, after)
  local us, recs, cur = {}, {}, '0'
  repeat
    local r = redis.call('HSCAN', k_chan(c), cur, 'MATCH', 'm\t*', 'COUNT',
                         1000)
    cur = r[1]
    local kv = r[2]
    for i = 1, #kv, 2 do
      local u = string.sub(kv[i], 3)
      if (after == '' or u > after) and not recs[u] then
        us[#us + 1] = u
        recs[u] = kv[i + 1]
      end
    end
  until cur == '0'
  return us, recs
end
-- The channel's member count (field 'n'), read with its hidden count and
-- its zset's flag unless this call knows it.
function CH.count(c)
  local n = CH.n[c]
  if n == nil then
    local h = redis.call('HMGET', k_chan(c), 'n', 'h', 'z')
    n = NUMOF[h[1]] or tonumber(h[1]) or 0
    CH.n[c] = n
    CH.h[c] = NUMOF[h[2]] or tonumber(h[2]) or 0
    CH.z[c] = h[3] and true or false
  end
  return n
end
-- ...: other fields of the channel's hash and their values, written in
-- the same HSET (a join's record, the count). A nil first one: none.
local function mput(c, M, f, ...)
  if f then
    redis.call('HSET', k_chan(c), 'm\t' .. M.u, mrec_make(M), f, ...)
  else
    redis.call('HSET', k_chan(c), 'm\t' .. M.u, mrec_make(M))
  end
end
-- A member's availability, read once per user and call: its channel
-- events and listings carry it (status + 4 * it, as a user's events do),
-- so other members are shown it as watchers are (an invisible member is
-- absent). The user's record lies in the member's shard (redis_shard.c).
local avail_memo = {}
-- Remember u's availability from its record h (false/nil: none) read for
-- something else. It is the record's fourth byte (URC_FMT): no need to
-- unpack the rest.
local function avail_note(u, h)
  if avail_memo[u] == nil then
    avail_memo[u] = h and select(4, struct.unpack('<BBBB', h)) or 0
  end
end
local function avail_of(u)
  if avail_memo[u] == nil then
    avail_note(u, redis.call('HGET', k_user(u), ''))
  end
  return avail_memo[u]
end
-- DV.vt_of(u, h): the end of user u's veil (DV.F_VL, 0: none), read once
-- per user and call (DV.vtm, cleared with avail_memo): a member listing
-- shows the other members a since no earlier (json.c json_member), as
-- they saw the user absent until then. h: its F_VL value when the caller
-- read it (false: none); else read here with the record, in one HMGET.
DV.vtm = {}
DV.vt_of = function(u, h)
  if DV.vtm[u] == nil then
    if h == nil then
      local r = redis.call('HMGET', k_user(u), '', DV.F_VL)
      avail_note(u, r[1])
      h = r[2]
    end
    DV.vtm[u] = tonumber(string.match(h or '', ':(%d+)$')) or 0
  end
  return DV.vtm[u]
end
-- The channel's invisible members (field 'h'), and its shown count.
local function hidden_of(c)
  local n = CH.h[c]
  if n == nil then
    local h = redis.call('HGET', k_chan(c), 'h')
    n = NUMOF[h] or tonumber(h) or 0
    CH.h[c] = n
  end
  return n
end
local function hidden_add(c, d)
  CH.h[c] = redis.call('HINCRBY', k_chan(c), 'h', d)
end
-- count: the member count after the event, when the caller knows it.
-- dchg: a channel.update whose data changed (flag 2048 above the type,
-- PRESENCE_EVENT_DATA_CHANGED). The member's shown version (M.sv) moves
-- when the other members are shown the change (presence_event_member_
-- visible in C); the event carries it (flag 512, as a user's) and the
-- shown count (flag 4096). The event is its fields (the count, the
-- session, the user, the data as meta), then the channel, the shown
-- version and the shown count, in one pack.
local function cemit(ty, reason, sid, c, M, data, from, to, count, dchg)
  M.v = vinc(M.v)
  local a = avail_of(M.u)
  local a4 = 4 * a
  if a ~= 3 and (ty ~= EV_CUPDATE or dchg or
                 (a == 0 and from ~= to) or
                 (a ~= 0 and shown_st(a, from) ~= shown_st(a, to))) then
    M.sv = vinc(M.sv)
  end
  if dchg then ty = ty + 2048 end
  local n = count or CH.count(c)
  local shown = n
  if n > 0 then shown = n - hidden_of(c) end
  -- The event's fields and the tails in one pack (as uemit).
  nev = nev + 1
  LE.s = nil
  nb = nb + 1
  local ns = 0
  if sid then ns = #sid + 1 else sid = '' end
  local h = ty + 512 + 4096 + 32768 + 16777216 * (reason + 256 * (from + a4 +
    256 * (to + a4)))
  if data then
    evs[nb] = struct.pack('<I6I4I4I2sI2sI4sI2sI4I4', h + 131072, M.v, n, ns,
                          sid, #M.u + 1, M.u, #data + 1, data, #c + 1, c,
                          M.sv, shown)
  else
    evs[nb] = struct.pack('<I6I4I4I2sI2sI2sI4I4', h, M.v, n, ns, sid,
                          #M.u + 1, M.u, #c + 1, c, M.sv, shown)
  end
end
local function list_remove(t, x)
  for i = 1, #t do
    if t[i] == x then
      table.remove(t, i)
      return true
    end
  end
  return false
end
-- The user's channels (F_UC), and one of them gone (a member left).
-- (A user's hash holds its record, its sessions and a few fields: its
-- HKEYS is short, and listing a user's channels is rare.)
local function uc_list(u)
  local cs = {}
  for _, f in ipairs(redis.call('HKEYS', k_user(u))) do
    if string.sub(f, 1, 2) == F_UC then cs[#cs + 1] = string.sub(f, 3) end
  end
  return cs
end
-- While a session's memberships end (chan_session_end) the fields are
-- collected here, and go in the HDEL of the session's own field.
local uc_defer
local function uc_remove(u, c)
  if uc_defer then
    uc_defer[#uc_defer + 1] = F_UC .. c
  else
    redis.call('HDEL', k_user(u), F_UC .. c)
  end
end
-- The user's availability changed from `from` to `to`: each of its
-- channels shows it differently (one visibility frame each: its shown
-- version moves), and counts it as hidden or not. Its channels lie in its
-- shard (redis_shard.c).
local function chans_avail(u, from, to)
  local d = 0
  if to == 3 then d = 1 elseif from == 3 then d = -1 end
  for _, c in ipairs(uc_list(u)) do
    local M = mget(c, u)
    if M then
      M.sv = vinc(M.sv)
      mput(c, M)
      if d ~= 0 then hidden_add(c, d) end
    end
  end
end

-- The member leaves: its records go, channel.leave. jf: the field of its
-- last join, removed in the same HDEL.
-- The caller read the member with mget_h (the count and the zset's flag).
local function member_leave(c, M, reason, cause, jf)
  local n, z = CH.count(c) - 1, CH.z[c]
  uc_remove(M.u, c)
  if n <= 0 then
    -- The last member: the channel's keys go whole.
    n = 0
    redis.call('ZREM', K_CHANS, c)
    if z then
      redis.call('DEL', k_chan(c), k_cmem(c))
    else
      redis.call('DEL', k_chan(c))
    end
    CH.h[c] = nil
    CH.n[c], CH.z[c] = 0, false
  else
    if avail_of(M.u) == 3 then hidden_add(c, -1) end
    -- Below CH.OFF members the zset goes, and its flag in the same HDEL.
    -- (A field named twice is removed once: jf's place always holds one.)
    local drop = z and n < CH.OFF
    local kc, fd = k_chan(c), 'd\t' .. M.u
    redis.call('HDEL', kc, 'm\t' .. M.u, fd, jf or fd, drop and 'z' or fd)
    if drop then
      redis.call('DEL', k_cmem(c))
    elseif z then
      redis.call('ZREM', k_cmem(c), M.u)
    end
    redis.call('HSET', kc, 'n', s(n))
    CH.n[c], CH.z[c] = n, z and not drop
  end
  cemit(EV_CLEAVE, reason, cause, c, M, nil, M.st, OFF, n)
end

-- After a member's joins changed: an update if what it shows changed.
-- known: the caller knows the member's data now (new_data, nil for none),
-- which saves reading it back. jf, jrec: a join's record to write with the
-- member's (chan_join).
local function member_changed(c, M, from, old_data, reason, cause, known,
                              new_data, jf, jrec)
  local to = OFF
  if #M.sids > 0 then to = (M.non > 0) and ON or IDLE end
  local d = new_data
  if not known then d = mdata(c, M) end
  if to ~= from or d ~= old_data then
    M.st = to
    cemit(EV_CUPDATE, reason, cause, c, M, d, from, to, nil, d ~= old_data)
  end
  mput(c, M, jf, jrec)
end

-- Remove session sid's join of channel c (the caller updates sc). online:
-- the session was online. graceful: the session ended (the member may be
-- back in a moment).
local function join_remove(c, u, sid, online, reason, graceful, cause)
  local jf = 'j\t' .. sid
  local M, jrec = mget_h(c, u, jf)
  if not M then return false end
  local was_head = M.sids[1] == sid
  if not list_remove(M.sids, sid) then return false end
  if online then M.non = M.non - 1 end
  if #M.sids == 0 then
    if graceful and cgrace_ms > 0 then
      M.g = 1
      M.gr = reason
      redis.call('HDEL', k_chan(c), jf)
      redis.call('ZADD', K_CGRACE, now + cgrace_ms, c .. '\t' .. u)
      -- The data the member showed, kept for its return, in mput's HSET.
      local d = jdata(jrec)
      if d then mput(c, M, 'd\t' .. u, d) else mput(c, M) end
    else
      member_leave(c, M, reason, cause, jf)
    end
    return true
  end
  redis.call('HDEL', k_chan(c), jf)
  -- The shown data changes only if sid was the most recent.
  local old
  if was_head then old = jdata(jrec) else old = mdata(c, M) end
  member_changed(c, M, M.st, old, reason, cause)
  return true
end

-- A session ends: its memberships end with it, in join order. list: its
-- channels, from its record (which the caller removed).
-- Returns the fields of the user's hash to remove: the session's own, and
-- those of the channels the user is no longer a member of (uc_remove), for
-- the caller's one HDEL.
local function chan_session_end(sid, u, list, reason, online, graceful)
  local del = {sid}
  if list == '' then return del end
  uc_defer = del
  for _, c in ipairs(split_tab(list)) do
    join_remove(c, u, sid, online, reason, graceful, sid)
  end
  uc_defer = nil
  return del
end

-- A session's status changed: so may its members'. list: its channels.
local function chan_session_status(sid, u, list, from, to, reason)
  if list == '' then return end
  for _, c in ipairs(split_tab(list)) do
    local M = mget_h(c, u)
    if M then
      if from == ON then M.non = M.non - 1 end
      if to == ON then M.non = M.non + 1 end
      local d = mdata(c, M)
      member_changed(c, M, M.st, d, reason, sid, true, d)
    end
  end
end

-- Write session sid's record r with its channels now list; uc: a channel
-- the user becomes a member of, its field (F_UC) written in the same HSET.
local function sc_put(u, sid, r, list, uc)
  r.ch = table.concat(list, '\t')
  if uc then
    redis.call('HSET', k_user(u), sid, rec_make(r), F_UC .. uc, '')
  else
    redis.call('HSET', k_user(u), sid, rec_make(r))
  end
end
-- A join or a leave changes a session's channels alone: they are cut out
-- of the record and put back in place, without unpacking and packing the
-- rest (REC_FMT: 14 bytes, the owner up to its NUL, the 6-byte epoch, then
-- the channels up to theirs; rec_parse's table and the two packs were
-- ~10,000 of a join's ~110,000 instructions). CH.sc_of: the channels,
-- where they start and the NUL after them. CH.sc_put: the record with
-- channels ch, written as sc_put does.
function CH.sc_of(rec)
  local a = string.find(rec, '\0', 15, true) + 7
  local e = string.find(rec, '\0', a, true)
  return string.sub(rec, a, e - 1), a, e
end
function CH.sc_put(u, sid, rec, a, e, ch, uc)
  rec = string.sub(rec, 1, a - 1) .. ch .. string.sub(rec, e)
  if uc then
    redis.call('HSET', k_user(u), sid, rec, F_UC .. uc, '')
  else
    redis.call('HSET', k_user(u), sid, rec)
  end
end

-- Replace session sid's data in channel c (dm: '=' .. data, or ''): it
-- becomes the member's most recent.
local function chan_set_data(sid, u, c, dm, reason)
  local M, j = mget_h(c, u, 'j\t' .. sid)
  if not M then return E_NOTMEMBER end
  local old
  if M.sids[1] == sid then old = jdata(j) else old = mdata(c, M) end
  if not list_remove(M.sids, sid) then return E_NOTMEMBER end
  table.insert(M.sids, 1, sid)
  local kc = k_chan(c)
  local joined = j and jjoined(j) or now
  redis.call('HSET', kc, 'j\t' .. sid, jrec_make(joined, dm))
  local d = nil
  if dm ~= '' then d = string.sub(dm, 2) end
  member_changed(c, M, M.st, old, reason, sid, true, d)
  return 0
end

-- Whether session record rec names this instance as its owner (REC_FMT:
-- from byte 15 to its NUL), read in place. In CH: the main chunk's locals
-- are near Lua's 200.
function CH.mine(rec)
  return string.sub(rec, 15, string.find(rec, '\0', 15, true) - 1) == iid
end

-- own: the caller must be the session's owner (a write; a re-assert of
-- channels, cassert, is of this instance's own sessions already).
local function chan_join(sid, u, c, dm, maxc, reason, own)
  -- The session's record, and the user's for its availability (cemit's
  -- avail_of), in one HMGET.
  local h = redis.call('HMGET', k_user(u), '', sid)
  local rec = h[2]
  if not rec then return E_NOSESSION end
  if own and not CH.mine(rec) then return E_NOSESSION end
  avail_note(u, h[1])
  local online = string.byte(rec, 1) == ON
  local ch, ca, ce = CH.sc_of(rec)
  local list = split_tab(ch)
  for _, x in ipairs(list) do
    if x == c then return chan_set_data(sid, u, c, dm, reason) end
  end
  if maxc > 0 and #list >= maxc then return E_CHANLIMIT end
  if ch == '' then ch = c else ch = ch .. '\t' .. c end
  local kc = k_chan(c)
  -- The join's record, written with the member's (mput).
  local jf, jrec = 'j\t' .. sid, jrec_make(now, dm)
  local M = mget_h(c, u)
  if not M then
    CH.sc_put(u, sid, rec, ca, ce, ch, c)
    M = {u = u, st = online and ON or IDLE, v = 0, since = now,
         non = online and 1 or 0, g = 0, gr = 0, sv = 0, sids = {sid}}
    if avail_of(u) == 3 then hidden_add(c, 1) end
    -- The count comes with the member (mget_h) and goes in its HSET.
    local n, z = CH.n[c] + 1, CH.z[c]
    CH.n[c] = n
    -- A channel is in chans exactly while it has members (member_leave
    -- drops it with its last): only its first member adds it.
    if n == 1 then redis.call('ZADD', K_CHANS, 0, c) end
    local d = nil
    if dm ~= '' then d = string.sub(dm, 2) end
    cemit(EV_CJOIN, reason, sid, c, M, d, OFF, M.st, n)
    if z then
      redis.call('ZADD', k_cmem(c), 0, u)
      mput(c, M, jf, jrec, 'n', s(n))
    elseif n > CH.ON then
      -- Past CH.ON members the listing pages through a zset: made from
      -- the members the hash holds, and the new one.
      local zs = {0, u}
      for _, m in ipairs(CH.scan(c, '')) do
        zs[#zs + 1] = 0
        zs[#zs + 1] = m
      end
      for i = 1, #zs, 512 do
        redis.call('ZADD', k_cmem(c), unpack(zs, i, math.min(i + 511, #zs)))
      end
      CH.z[c] = true
      mput(c, M, jf, jrec, 'n', s(n), 'z', '1')
    else
      mput(c, M, jf, jrec, 'n', s(n))
    end
    return 0
  end
  CH.sc_put(u, sid, rec, ca, ce, ch)
  local old = mdata(c, M)
  local from = M.st
  if M.g == 1 then
    -- Back inside the channel grace: no join; an update if it differs.
    M.g = 0
    redis.call('ZREM', K_CGRACE, c .. '\t' .. u)
    redis.call('HDEL', kc, 'd\t' .. u)
  end
  table.insert(M.sids, 1, sid)
  if online then M.non = M.non + 1 end
  local d = nil
  if dm ~= '' then d = string.sub(dm, 2) end
  member_changed(c, M, from, old, reason, sid, true, d, jf, jrec)
  return 0
end

local function chan_leave(sid, u, c, reason)
  local rec = sget(u, sid)
  if not rec then return E_NOTMEMBER end
  if not CH.mine(rec) then return E_NOSESSION end
  local ch, ca, ce = CH.sc_of(rec)
  local list = split_tab(ch)
  if not list_remove(list, c) then return E_NOTMEMBER end
  CH.sc_put(u, sid, rec, ca, ce, table.concat(list, '\t'))
  join_remove(c, u, sid, string.byte(rec, 1) == ON, reason, false, sid)
  return 0
end

-- Add a session owned by this instance (connect, or resync of one the
-- store lost).
-- U: the user's record when the caller already read it; indexed: the
-- caller already wrote the sidx entry naming this instance (connect's
-- HSETNX).
local function add_session(sid, u, m, st, reason, conn, U, indexed)
  U = U or uget(u)
  if not indexed then ix_set(sid, sidx_val(u, iid)) end
  local dev = dev_of(m)
  local alone = U.n == 0
  local on1 = (st == ON) and 1 or 0
  U.n = U.n + 1
  U.on = U.on + on1
  local df, dt, to = dev_step(U, dev, 1, on1)
  -- Back inside the offline grace on the device it left from: watchers
  -- were never told that device went (remove_session), so it is no change.
  if U.g == 1 and alone and U.gd == dev then df = U.st end
  grace_cancel(u, U)
  U.gd = '='
  if st == ON then U.la = now end
  uemit(U, EV_CONN, reason, sid, u, meta_of(m), OFF, st, U.av, dev, df, dt,
        to ~= U.st)
  transition(u, U, to, reason, sid, dev, df, dt)
  U.ls = now
  uput(u, U, sid, rec_new(st, reason, conn, m))
end

-- Remove one session and whatever user transition follows. A kick, a
-- shutdown or a lost instance is final; anything else waits out the grace.
-- rec, U: the session's record as stored and the user's, when the caller
-- already read them. The record's status, channels and device are read
-- where they lie (as set_status does: no table for it).
local function remove_session(sid, u, reason, rec, U)
  if not rec then
    U, rec = uget(u, sid)
    if not rec then return false end
  end
  U = U or uget(u)
  -- The user's availability, for its channel events (avail_of), is in
  -- the record just read.
  if avail_memo[u] == nil then avail_memo[u] = U.av end
  ix_del(sid)
  local st = string.byte(rec, 1)
  local ch, _, e = CH.sc_of(rec)
  local dev = DEV_DEFAULT
  if string.byte(rec, e + 1) == 64 then
    dev = dev_of(string.sub(rec, e + 1))
  end
  local on1 = (st == ON) and 1 or 0
  U.n = U.n - 1
  U.on = U.on - on1
  local _, dt, to = dev_step(U, dev, -1, -on1)
  local df = dt
  if st == ON then df = ON elseif df == OFF then df = st end
  U.ls = now
  if on1 == 1 then U.la = now end
  -- A shutdown's sessions end in grace like a disconnect while another
  -- instance is live: their clients reconnect to it (1001), and a rolling
  -- restart must show watchers nothing. The last instance's are final, as
  -- the embedded store's: nobody can come back before an instance starts.
  -- A kick, a dead instance or origin are final.
  local graceful = reason ~= R_KICKED and reason ~= R_LOST and
    reason ~= R_ORIGIN_LOST and
    (reason ~= R_SHUTDOWN or LS.others_live())
  local in_grace = to == OFF and grace_ms > 0 and graceful and U.st ~= OFF
  if in_grace then
    -- In the grace the device stays as watchers saw it: a reload shows
    -- them nothing, and if the user does not come back, user.offline says
    -- every device went.
    dt = df
    U.gd = dev
  end
  uemit(U, EV_DISC, reason, sid, u, nil, st, OFF, U.av, dev, df, dt,
        not in_grace and to ~= U.st)
  if in_grace then
    U.g = 1
    U.gr = reason
    redis.call('ZADD', K_GRACE, now + grace_ms, u)
  else
    transition(u, U, to, reason, sid, dev, df, dt)
  end
  uput(u, U)
  -- The session's field goes with the channels it was the last of.
  redis.call('HDEL', k_user(u),
             unpack(chan_session_end(sid, u, ch, reason, st == ON,
                                     graceful)))
  return true
end

-- U: the user's record, read by the caller with the session's, rec; o:
-- where the record's owner ends (its NUL). The record changes in place:
-- its status, reason and since (REC_FMT's first 14 bytes) are made again
-- and the rest kept as read, its channels and device read where they lie
-- (after the owner, the 6-byte epoch; then the channels up to their NUL,
-- then the meta), with no table and no call more than needed: rec_parse's
-- table, rec_make's pack and their calls were 3,000-4,500 of a status
-- change's ~80,000 instructions (script_ab.py's status_op: 0.94-0.96x).
local function set_status(sid, u, rec, o, st, reason, U)
  local from = string.byte(rec, 1)
  local a = o + 7
  local e = string.find(rec, '\0', a, true)
  local dev = DEV_DEFAULT
  if string.byte(rec, e + 1) == 64 then
    dev = dev_of(string.sub(rec, e + 1))
  end
  local d1 = (st == ON) and 1 or -1
  U.on = U.on + d1
  local df, dt, to = dev_step(U, dev, 0, d1)
  U.ls = now
  -- Leaving online ends activity now; entering it is activity now.
  U.la = now
  uemit(U, EV_STATUS, reason, sid, u, nil, from, st, U.av, dev, df, dt,
        to ~= U.st)
  transition(u, U, to, reason, sid, dev, df, dt)
  uput(u, U, sid, struct.pack('<BB', st, reason) .. string.sub(rec, 3, 8) ..
       struct.pack('<I6', now) .. string.sub(rec, 15))
  if e > a then
    chan_session_status(sid, u, string.sub(rec, a, e - 1), from, st, reason)
  end
end

-- A session of instance i's, from its index entry (sid, value v): its user
-- and both records (the session's parsed, and as stored). nil when the
-- entry names another owner (nothing read), when the session is gone (the
-- stale entry goes) or when its record names another owner (the entry is
-- corrected to it).
local function owned_session(sid, v, i)
  local u, o = sidx_parse(v)
  if o ~= i then return nil end
  local U, rec = uget(u, sid)
  if not rec then
    ix_del(sid)
    return nil
  end
  local rr = rec_parse(rec)
  if rr.iid ~= i then
    ix_set(sid, sidx_val(u, rr.iid))
    return nil
  end
  return u, U, rr, rec
end

local function lease_live(i)
  local exp = redis.call('ZSCORE', K_LEASE, i)
  return exp and tonumber(exp) >= now
end

-- ---- writes of one session ------------------------------------------------

-- Each takes its arguments from ARGV[b..] and returns 0 or an error code;
-- the caller has checked the fence.
local function w_connect(b)
  local sid, u, m = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  -- The limit, then 'i' for a session that opens idle (redis.c op_connect):
  -- a suffix rather than one more argument, so an online connect (the
  -- common one) reads what it did.
  local mx = ARGV[b + 3]
  local maxs, st = NUMOF[mx], ON
  if not maxs then
    if string.byte(mx, -1) == 105 then
      st = IDLE
      mx = string.sub(mx, 1, -2)
      maxs = NUMOF[mx] or tonumber(mx)
    else
      maxs = tonumber(mx)
    end
  end
  -- Claims the id cluster-wide in the same call that checks it.
  local xk = ix_key(sid)
  if redis.call('HSETNX', xk, sid, sidx_val(u, iid)) == 0 then
    return E_EXIST
  end
  local U = uget(u)
  if maxs > 0 and U.n >= maxs then
    redis.call('HDEL', xk, sid)
    return E_LIMIT
  end
  ixd = ixd + 1
  add_session(sid, u, m, st, R_CONNECT, now, U, true)
  return 0
end

-- The same user's session held by another instance becomes this one's,
-- with no event (a backend's origin re-asserted here after its connection
-- moved: docs/protocol.md section 5); a session nobody holds is connected.
local function w_adopt(b)
  local sid, u = ARGV[b], ARGV[b + 1]
  local owner_user, owner = sidx_parse(IX.get(sid))
  if not owner_user then return w_connect(b) end
  if owner_user ~= u then return E_EXIST end
  local U, rec = uget(u, sid)
  if not rec then return E_EXIST end
  local r = rec_parse(rec)
  r.iid = iid
  r.epoch = epoch_n
  if owner ~= iid then ix_set(sid, sidx_val(u, iid)) end
  redis.call('HSET', k_user(u), sid, rec_make(r))
  return 0
end

-- Ends and status changes come from the instance holding the session; one
-- taken over by another instance (w_adopt) is no longer this one's to end.
local function w_end(b)
  local sid, u = ARGV[b], ARGV[b + 1]
  local reason = NUMOF[ARGV[b + 2]] or tonumber(ARGV[b + 2])
  local U, rec = uget(u, sid)
  if not rec then return E_NOSESSION end
  -- The owner read in place (REC_FMT: from byte 15 to its NUL).
  if string.sub(rec, 15, string.find(rec, '\0', 15, true) - 1) ~= iid then
    return E_NOSESSION
  end
  remove_session(sid, u, reason, rec, U)
  return 0
end

local function w_status(b)
  local sid, u = ARGV[b], ARGV[b + 1]
  local st = NUMOF[ARGV[b + 2]] or tonumber(ARGV[b + 2])
  local reason = NUMOF[ARGV[b + 3]] or tonumber(ARGV[b + 3])
  local U, rec = uget(u, sid)
  if not rec then return E_NOSESSION end
  -- The owner read in place (REC_FMT: from byte 15 to its NUL at o).
  local o = string.find(rec, '\0', 15, true)
  if string.sub(rec, 15, o - 1) ~= iid then return E_NOSESSION end
  if string.byte(rec, 1) ~= st then
    set_status(sid, u, rec, o, st, reason, U)
  end
  return 0
end

-- Channel writes, like ends and status changes, come from the instance
-- holding the session: a backend's origin superseded on another instance
-- (its sessions adopted there, w_adopt) may still have writes in flight,
-- which must not undo what the new holder re-asserts.
local function w_join(b)
  return chan_join(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
                   NUMOF[ARGV[b + 4]] or tonumber(ARGV[b + 4]), R_EXPLICIT,
                   true)
end

local function w_update(b)
  local sid, u = ARGV[b], ARGV[b + 1]
  local rec = sget(u, sid)
  if not rec then return E_NOTMEMBER end
  if not CH.mine(rec) then return E_NOSESSION end
  return chan_set_data(sid, u, ARGV[b + 2], ARGV[b + 3], R_EXPLICIT)
end

local function w_leave(b)
  return chan_leave(ARGV[b], ARGV[b + 1], ARGV[b + 2], R_EXPLICIT)
end

-- Every session of a user leaves a channel at once (a backend's removal).
local function w_rmuser(b)
  local c, u = ARGV[b], ARGV[b + 1]
  local M = mget_h(c, u)
  if not M then return E_NOTMEMBER end
  for _, sid in ipairs(M.sids) do
    redis.call('HDEL', k_chan(c), 'j\t' .. sid)
    local rec = sget(u, sid)
    if rec then
      local r = rec_parse(rec)
      local list = split_tab(r.ch)
      list_remove(list, c)
      sc_put(u, sid, r, list)
    end
  end
  if M.g == 1 then redis.call('ZREM', K_CGRACE, c .. '\t' .. u) end
  M.sids = {}
  member_leave(c, M, R_KICKED, nil)
  return 0
end

-- ---- status that people set ------------------------------------------------

-- The status message, field F_MSG of the user's hash: "exp set t:<text> e:<emoji>"
-- with each string as <length>:<bytes> or '-' (expiry and set time in ms,
-- expiry 0 for none).
local function msg_parse(m)
  if not m then return nil end
  local exp, set, rest = string.match(m, '^(%d+) (%d+) (.*)$')
  local function field(r)
    if string.sub(r, 1, 2) == '- ' then return nil, string.sub(r, 3) end
    local n, after = string.match(r, '^(%d+):(.*)$')
    n = tonumber(n)
    return string.sub(after, 1, n), string.sub(after, n + 2)
  end
  local text, r2 = field(rest)
  local emoji = field(r2)
  return {exp = tonumber(exp), set = set, text = text, emoji = emoji}
end

-- A user.message's tail: text, emoji, expiry ms (0: none).
local MSG_TAIL = '<I4sI2sI6'
local MSG_NONE
local function emit_msg(u, U, reason, M)
  local tail
  if M then
    tail = struct.pack(MSG_TAIL, ln(M.text), sb(M.text), ln(M.emoji),
                       sb(M.emoji), M.exp)
  else
    tail = MSG_NONE
  end
  uemit(U, EV_UMSG, reason, nil, u, nil, U.st, U.st, U.av, nil, nil, nil,
        false, tail)
end

-- An absent user whose settings were all cleared: its record expires after
-- the retention again, as uput would have set at its going offline.
local function settings_cleared(u, U)
  if U.av == 0 and U.hm == 0 and not U.present and retention_ms > 0 then
    redis.call('PEXPIRE', k_user(u), s(retention_ms))
  end
end

-- A user.availability's tail: the user's devices. The availability masks
-- every device watchers are shown (dnd shows an idle one online, invisible
-- none), so a watcher is sent the whole map with the change, as a snapshot
-- (q_user) has it: their count (2 bytes), then per device its name, best
-- status (1) and sessions (4).
function DV.avail_tail(U)
  local dt = {''}
  if U.dv == '=' then
    if U.n > 0 then
      dt[2] = struct.pack('<I2sBI4', #DEV_DEFAULT + 1, DEV_DEFAULT,
                          best(U.n, U.on), U.n)
    end
  else
    for _, e in ipairs(DV.list(U)) do
      dt[#dt + 1] = struct.pack('<I2sBI4', #e[1] + 1, e[1], best(e[2], e[3]),
                                e[2])
    end
  end
  dt[1] = struct.pack('<I2', #dt - 1)
  return table.concat(dt)
end

-- Availability: ARGV user, availability (0..3).
local function w_avail(b)
  local u, av = ARGV[b], tonumber(ARGV[b + 1])
  local U = uget(u)
  if U.av == av then return 0 end
  local from = U.av
  U.av = av
  avail_memo[u] = nil
  chans_avail(u, from, av)
  U.v = vinc(U.v)
  if av ~= 0 then redis.call('PERSIST', k_user(u)) end
  uemit(U, EV_UAVAIL, R_EXPLICIT, nil, u, nil, U.st, U.st, from, nil, nil,
        nil, false, DV.avail_tail(U))
  uput(u, U)
  if from == 3 then DV.veil(k_user(u), U, now) end
  redis.call('HSET', k_user(u), F_AS, nows())
  settings_cleared(u, U)
  return 0
end

-- The message: ARGV user, text ('-' none, else '=' .. text), emoji (the
-- same), expiry ms ('0': none). The same text, emoji and expiry: nothing.
local function w_msg(b)
  local u = ARGV[b]
  local function opt(x) if x == '-' then return nil end return string.sub(x, 2) end
  local text, emoji, exp = opt(ARGV[b + 1]), opt(ARGV[b + 2]),
    tonumber(ARGV[b + 3])
  local U, m = uget(u), redis.call('HGET', k_user(u), F_MSG)
  local M = msg_parse(m)
  if not text and not emoji then
    if not M then return 0 end
    redis.call('HDEL', k_user(u), F_MSG)
    redis.call('ZREM', K_MSGDUE, u)
    U.hm = 0
    U.v = vinc(U.v)
    emit_msg(u, U, R_EXPLICIT, nil)
    uput(u, U, F_MT, nows())
    settings_cleared(u, U)
    return 0
  end
  if M and M.text == text and M.emoji == emoji and M.exp == exp then
    return 0
  end
  M = {exp = exp, set = nows(), text = text, emoji = emoji}
  redis.call('HSET', k_user(u), F_MSG, s(exp) .. ' ' .. nows() .. ' ' ..
             str(text) .. str(emoji))
  if exp > 0 then redis.call('ZADD', K_MSGDUE, exp, u)
  else redis.call('ZREM', K_MSGDUE, u) end
  redis.call('PERSIST', k_user(u))
  U.hm = 1
  U.v = vinc(U.v)
  emit_msg(u, U, R_EXPLICIT, M)
  uput(u, U)
  return 0
end

-- Messages past their expiry, cleared once each: whichever instance's
-- call sees one due first removes it from the due set, in the same script
-- as the clear, so it is cleared (and its event emitted) exactly once
-- cluster-wide, whoever set it and whether or not that instance lives.
-- At most lim a call, and no longer than the time budget.
local function expire_messages(lim)
  local due = redis.call('ZRANGEBYSCORE', K_MSGDUE, '-inf', now, 'LIMIT', 0,
                         lim)
  local done = 0
  for _, u in ipairs(due) do
    -- msgdue holds exactly the set messages' expiries (every set or clear
    -- of a message updates it in the same script), so a member due is a
    -- message due: the record alone says whether one is set, and the
    -- message need not be read or parsed.
    local ku = k_user(u)
    local U = urec_parse(redis.call('HGET', ku, ''))
    if U.hm == 1 then
      redis.call('HDEL', ku, F_MSG)
      U.hm = 0
      U.v = vinc(U.v)
      emit_msg(u, U, R_EXPIRED, nil)
      -- In the record's HSET: when it was cleared, so that an instance
      -- re-asserting it after a store loss does not bring it back.
      uput(u, U, F_MT, nows())
      settings_cleared(u, U)
    end
    done = done + 1
    if over_budget() then break end
  end
  -- One ZREM for the batch (a call per member costs more than the clear).
  if done > 0 then
    redis.call('ZREM', K_MSGDUE, unpack(due, 1, done))
  end
end

local WRITES = {avail = {w_avail, 2}, msg = {w_msg, 4},
                connect = {w_connect, 4}, adopt = {w_adopt, 4},
                ['end'] = {w_end, 3},
                status = {w_status, 4}, join = {w_join, 5},
                update = {w_update, 4}, leave = {w_leave, 3},
                rmuser = {w_rmuser, 2}}

-- Every op but the single writes above: OPS[op] runs it (see presence_main).
-- A new op is "OPS.name = function() ... end": this file's top level runs
-- once, when Redis loads the library, so a top-level "if op == ..." block
-- would never run, and top-level code may not read a call's state.
local OPS = {}

-- Several session writes of this instance in one call (the C side sends
-- what queued up while earlier calls were in flight). ARGV: n, then n
-- times the op name and its arguments. Each write is decided as if it
-- were its own call, in order; the fence is checked once. Payload:
-- {code, events, code, events, ...} per write, the number of events of
-- each write, which follow in order after the payload.
OPS.batch = function()
  if fenced() then return {E_FENCED} end
  local n = NUMOF[ARGV[A]] or tonumber(ARGV[A])
  local b = A + 1
  local res = {}
  for k = 1, n do
    local w = WRITES[ARGV[b]]
    local before = nev
    local code = w[1](b + 1)
    res[2 * k - 1] = code
    res[2 * k] = nev - before
    b = b + 1 + w[2]
  end
  out[2] = res
  return finish()
end

-- ---- leases -----------------------------------------------------------------

-- Entries in the index, this call's changes included.
function IX.count()
  return tonumber(redis.call('GET', K_NSESS) or '0') + ixd
end
-- Nonzero while any user is present: sessions in the index or users in
-- their grace (the structures themselves, not the users' /metrics
-- counter; the index's count changes with every index write).
local function present_left()
  return IX.count() + redis.call('ZCARD', K_GRACE)
end

-- Renew the lease; 'lost' when the store no longer knows this instance
-- (flushed, restarted empty, or reaped), 'fenced' when the epoch was
-- superseded or the lease ran out before this renewal.
OPS.hb = function()
  local v = redis.call('HGET', K_INST, iid)
  if not v then return {0, 'lost'} end
  local e, exp = LS.parse(v)
  if e ~= epoch or exp < now then return {0, 'fenced'} end
  LS.put(iid, epoch, now + lease_ms)
  -- Third: ms until the first lease or reap claim runs out (what
  -- reap_claim would take), so that the caller claims right then, and only
  -- then: no claim call at a heartbeat that finds nothing due.
  local first = tonumber(redis.call('ZRANGE', K_LEASE, 0, 0, 'WITHSCORES')[2])
  local rc = redis.call('ZRANGE', K_REAP, 0, 0, 'WITHSCORES')[2]
  if rc and tonumber(rc) < first then first = tonumber(rc) end
  -- Fifth: ms until the first deadline kept here (offline grace, channel
  -- grace, message expiry), -1 for none: the caller polls 'grace' only
  -- when one is set, including those set by instances that died since.
  local due
  for _, k in ipairs({K_GRACE, K_CGRACE, K_MSGDUE}) do
    local d = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2]
    if d and (not due or tonumber(d) < due) then due = tonumber(d) end
  end
  -- Fourth: the cluster's size, for /metrics (three O(1) counts, once a
  -- heartbeat): users present (or in grace), sessions, live instances.
  return {0, 'ok', s(math.max(0, first - now)),
          {s(math.max(0, tonumber(redis.call('GET', K_NPRESENT) or '0'))),
           s(IX.count()),
           s(redis.call('ZCOUNT', K_LEASE, now, '+inf'))},
          due and s(math.max(0, due - now)) or '-1'}
end

-- A new epoch for this instance. ARGV: fresh (1 at process start), the
-- highest sequence number the instance has seen (the counter never goes
-- back, even after the store lost its data).
OPS.register = function()
  local fresh, min_seq = tonumber(ARGV[A]), tonumber(ARGV[A + 1])
  -- The layout of the keys and of the log entries. Data of another layout
  -- under this prefix (an older build's) is refused, not misread: the
  -- instance stays unregistered and logs this error until the keys are
  -- removed or another prefix is configured. 3: channels (keys under
  -- {c:<name>}, a session's channels beside its user, channel events and
  -- counts in the log) and status that people set (devices in session
  -- records). A format-2 build would neither reap a dead instance's
  -- memberships nor decode channel events, so it must not share them.
  -- 4: user and session records binary (urec_parse, rec_parse); a
  -- format-3 build would misread them. 5: the session index names each
  -- session's owner and no is:<instance> sets are kept (sidx_val); a
  -- format-4 build would reap nothing of a format-5 instance's. 6: the log's
  -- events are binary (emit), which a format-5 build cannot read. 7 to 14:
  -- docs/internals/redis.md. 15: inst holds each lease's expiry beside the
  -- epoch (LS), which a format-14 build would take for a superseded epoch.
  -- 16: a user.availability carries the user's devices (w_avail), which a
  -- format-15 build would read as its shown version. 17: a backend origin's
  -- name is claimed (o:<name>, OPS.oclaim) and its claims ride the kick
  -- stream, which a format-16 build would take for kicks; channel writes
  -- check the session's owner (w_join), which a format-16 instance would
  -- not, letting a superseded connection's writes through.
  local fmt = redis.call('GET', K_FORMAT)
  if fmt ~= FORMAT and (fmt or redis.call('EXISTS', K_SEQ) == 1) then
    return redis.error_reply('presence: the keys under prefix "' .. P ..
      '" hold store format ' .. tostring(fmt or 1) .. ', this build uses ' ..
      FORMAT .. ': remove them (they hold presence only) or use another ' ..
      'prefix')
  end
  redis.call('SET', K_FORMAT, FORMAT)
  local known = redis.call('HGET', K_EPOCHS, iid)
  local e = math.max(tonumber(known or '0') + 1, now)
  if known then
    redis.call('HSET', K_EPOCHS, iid, s(e))
  else
    -- The id's first epoch (a field no instance id can name: ids hold no
    -- tab): its sweep has no older epoch to look for (OPS.sweep).
    redis.call('HSET', K_EPOCHS, iid, s(e), iid .. '\tfirst', s(e))
  end
  LS.put(iid, s(e), now + lease_ms)
  local seq = tonumber(redis.call('GET', K_SEQ) or '0')
  if seq < min_seq then
    -- The store lost events this instance saw (a restart without its data,
    -- FLUSHALL, a stale replica promoted). Readers may hold cursors up to
    -- the newest lost event, which this instance may not have read yet
    -- (its log reader lags by milliseconds; longer after a partition): the
    -- numbers jump far ahead, so no number is handed out twice and every
    -- reader's next read is past its cursor + 1, a gap it is told of.
    seq = min_seq + SEQ_JUMP_AFTER_LOSS
    redis.call('SET', K_SEQ, s(seq))
  end
  local stale = 0
  if fresh == 1 and redis.call('ZCOUNT', K_LEASE, now, '+inf') <= 1 and
      present_left() > 0 then
    stale = 1
  end
  -- Fourth: Redis's maxmemory-policy, for a warning when it may evict
  -- presence's keys (the C side, register_done); '' when this user may
  -- not run INFO (the ACL of docs/internals/redis.md has no +info).
  local info = redis.pcall('INFO', 'memory')
  local policy = type(info) == 'string' and
    string.match(info, 'maxmemory_policy:(%S+)') or ''
  return {0, {s(e), s(seq), tostring(stale), policy}}
end

-- Give up the lease at once (after a shutdown removed the sessions).
OPS.unregister = function()
  if LS.epoch(iid) == epoch then
    redis.call('HDEL', K_INST, iid)
    redis.call('ZREM', K_LEASE, iid)
  end
  return {0, ''}
end

-- ---- resync -----------------------------------------------------------------

-- Re-assert this instance's live sessions under its new epoch. ARGV: n, then
-- n times (session, user, status, connected ms, '=' meta or '').
-- Only net changes become events (reason resync).
OPS.assert = function()
  if fenced() then return {E_FENCED} end
  local n = tonumber(ARGV[A])
  for k = 0, n - 1 do
    local b = A + 1 + k * 5
    local sid, u, st, conn, m = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]),
      ARGV[b + 3], ARGV[b + 4]
    local owner_user, owner = sidx_parse(IX.get(sid))
    if owner_user and owner_user ~= u then
      remove_session(sid, owner_user, R_RESYNC)
      owner_user = false
    end
    -- The index names this instance as the owner from here on.
    local indexed = owner_user == u and owner == iid
    local U, rec = uget(u, sid)
    if rec then
      local r = rec_parse(rec)
      r.iid = iid
      r.epoch = epoch_n
      if not indexed then ix_set(sid, sidx_val(u, iid)) end
      if r.st ~= st then
        local nr = rec_make(r)
        set_status(sid, u, nr, string.find(nr, '\0', 15, true), st, R_RESYNC,
                   U)
      else
        redis.call('HSET', k_user(u), sid, rec_make(r))
      end
    else
      add_session(sid, u, m, st, R_RESYNC, conn, U, indexed)
    end
  end
  return finish()
end

-- What people set, re-asserted after a store loss by every instance from
-- what it read in the log (redis.c, "status that people set"). ARGV: n,
-- then n times (user, availability, its set time, text ('-' none, '='
-- text), emoji (the same), expiry, the message's set time). Each applies
-- only where the store's is older, so the same setting from several
-- instances is applied once; reason resync.
OPS.sassert = function()
  if fenced() then return {E_FENCED} end
  local n = tonumber(ARGV[A])
  local function opt(x) if x == '-' then return nil end return string.sub(x, 2) end
  for k = 0, n - 1 do
    local b = A + 1 + k * 7
    local u, av, as = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
    local text, emoji = opt(ARGV[b + 3]), opt(ARGV[b + 4])
    local exp, set = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
    local ku = k_user(u)
    local h = redis.call('HMGET', ku, '', F_AS, F_MSG, F_MT)
    local U = urec_parse(h[1])
    local changed = false
    if av ~= U.av and (tonumber(h[2]) or 0) < as then
      local from = U.av
      U.av = av
      avail_memo[u] = nil
      chans_avail(u, from, av)
      U.v = vinc(U.v)
      uemit(U, EV_UAVAIL, R_RESYNC, nil, u, nil, U.st, U.st, from, nil, nil,
            nil, false, DV.avail_tail(U))
      if from == 3 then DV.veil(ku, U, as) end
      redis.call('HSET', ku, F_AS, s(as))
      changed = true
    end
    if text or emoji then
      local M = msg_parse(h[3])
      local newer
      -- The same message (another instance re-asserting it, its copy
      -- stamped by the first one's resync event) is no change.
      if M and M.text == text and M.emoji == emoji and M.exp == exp then
        newer = false
      elseif M then newer = tonumber(M.set) < set
      else newer = (tonumber(h[4]) or 0) < set end
      if newer then
        M = {exp = exp, set = s(set), text = text, emoji = emoji}
        redis.call('HSET', ku, F_MSG, s(exp) .. ' ' .. s(set) .. ' ' ..
                   str(text) .. str(emoji))
        if exp > 0 then redis.call('ZADD', K_MSGDUE, exp, u)
        else redis.call('ZREM', K_MSGDUE, u) end
        U.hm = 1
        U.v = vinc(U.v)
        emit_msg(u, U, R_RESYNC, M)
        changed = true
      end
    end
    if changed then
      redis.call('PERSIST', ku)
      uput(u, U)
    end
  end
  return finish()
end

-- After the asserts: remove this instance's sessions still carrying an
-- older epoch (they ended while the instance could not write). ARGV: cursor,
-- batch, reason. It walks the whole session index (format 5 keeps no set
-- per instance), most of it other instances' entries, which cost a compare
-- each: as many pages as fit in the time budget per call.
OPS.sweep = function()
  if fenced() then return {E_FENCED} end
  local cur, lim, reason = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2])
  -- An id in its first epoch (presenced draws a new one at every start)
  -- owns no session of an older one: nothing to walk the index for.
  if redis.call('HGET', K_EPOCHS, iid .. '\tfirst') == epoch then
    out[2] = '0'
    return finish()
  end
  local tail = '\t' .. iid
  repeat
    local kv, nxt = IX.page(cur, lim, 256)
    for k = 1, #kv, 2 do
      if owned_by(kv[k + 1], tail) then
        local u, U, rr, rec = owned_session(kv[k], kv[k + 1], iid)
        if rr and rr.epoch ~= epoch_n then
          remove_session(kv[k], u, reason, rec, U)
        end
      end
    end
    cur = nxt
    budget_n = 3 -- the next over_budget() asks TIME
  until cur == '0' or over_budget()
  out[2] = cur
  return finish()
end

-- ---- cleanup ----------------------------------------------------------------

-- Fresh start (or presence_reset): remove every session and take every user
-- offline, a batch of users per call, refused (EBUSY) while another
-- instance holds a live lease. Payload: users left.
OPS.wipe = function()
  if fenced() then return {E_FENCED} end
  local lim = tonumber(ARGV[A])
  if redis.call('ZCOUNT', K_LEASE, now, '+inf') > 1 then return {E_BUSY} end
  -- The present users: those holding a session (the index names each
  -- session's user) and those in their offline grace.
  local users, seen = {}, {}
  local function add(u)
    if not seen[u] then
      seen[u] = true
      users[#users + 1] = u
    end
  end
  -- HSCAN from 0 until a batch is found or the pass ends: whatever the
  -- scan finds is removed below, so every call makes progress (and the
  -- commands stay those of the ACL in docs/internals/redis.md).
  local sids, cur = {}, '0'
  repeat
    local kv
    kv, cur = IX.page(cur, lim, IX.N)
    for k = 1, #kv, 2 do
      sids[#sids + 1] = kv[k]
      add((sidx_parse(kv[k + 1])))
    end
  until cur == '0' or #sids >= lim
  -- A whole pass found no entry: the count says so too (it is kept by
  -- every index write; this only guards the wipe's loop, which runs
  -- until nothing is left).
  if #sids == 0 then
    ixd = 0
    redis.call('DEL', K_NSESS)
  end
  local gs = redis.call('ZRANGE', K_GRACE, 0, lim - 1)
  for _, u in ipairs(gs) do add(u) end
  for _, u in ipairs(users) do
    local ss = redis.call('HKEYS', k_user(u))
    for _, sid in ipairs(ss) do
      if is_sid(sid) then remove_session(sid, u, R_LOST) end
    end
    local U = uget(u)
    -- A user in the grace of a shutdown went with it: its instance shut
    -- down while another was live, then that one did too, and no instance
    -- was left to end the grace. Any other grace ends as the wipe's own
    -- (instance_lost), as a reset's does.
    local why = R_LOST
    if U.g == 1 and U.n == 0 and U.gr == R_SHUTDOWN then why = R_SHUTDOWN end
    grace_cancel(u, U)
    if U.st ~= OFF then U.ls = now end
    transition(u, U, OFF, why, nil)
    uput(u, U)
  end
  -- Every wipe call makes progress: an index entry or a grace whose user
  -- no longer holds it (none should exist) goes too.
  for _, sid in ipairs(sids) do ix_del(sid) end
  if #gs > 0 then redis.call('ZREM', K_GRACE, unpack(gs)) end
  out[2] = tostring(present_left())
  return finish()
end

-- The end of a wipe: forget dead instances, one cleanup event without a
-- session list.
OPS.wipe_done = function()
  if fenced() then return {E_FENCED} end
  local all = redis.call('HKEYS', K_INST)
  for _, i in ipairs(all) do
    if i ~= iid and not lease_live(i) then
      redis.call('HDEL', K_INST, i)
      redis.call('ZREM', K_LEASE, i)
      redis.call('ZREM', K_REAP, i)
      redis.call('HDEL', K_REAPER, i)
      redis.call('HDEL', K_REAPC, i)
      redis.call('DEL', k_reapids(i))
    end
  end
  -- Channel members still in their grace leave too.
  for _, key in ipairs(redis.call('ZRANGE', K_CGRACE, 0, -1)) do
    local c, u = string.match(key, '^([^\t]*)\t(.*)$')
    local M = c and mget_h(c, u)
    if M and #M.sids == 0 then member_leave(c, M, R_LOST, nil) end
  end
  redis.call('DEL', K_CGRACE)
  emit(EV_CLEAN, R_LOST, nil, nil, nil, OFF, OFF, 0, '')
  return finish()
end

-- Claim one dead instance: a lease that ran out, or a claim whose reaper
-- died. Payload: the instance id, or '' when there is none.
OPS.reap_claim = function()
  if fenced() then return {E_FENCED} end
  local d = redis.call('ZRANGEBYSCORE', K_LEASE, '-inf', '(' .. now, 'LIMIT',
                       0, 1)
  if #d == 0 then
    d = redis.call('ZRANGEBYSCORE', K_REAP, '-inf', '(' .. now, 'LIMIT', 0, 1)
  end
  if #d == 0 or d[1] == iid then return {0, ''} end
  local dead = d[1]
  local ev = redis.call('HGET', K_INST, dead)
  local ie = ev and (LS.parse(ev))
  local de = ie or '0'
  local prev = redis.call('HGET', K_REAPER, dead)
  if prev then de = string.match(prev, '/([^/]*)$') end
  redis.call('ZREM', K_LEASE, dead)
  -- Claimed, its lease is over whatever Redis's clock does next (format 14
  -- fenced an instance without a zset entry): expiry 0.
  if ie then redis.call('HSET', K_INST, dead, ie .. '\t0') end
  redis.call('ZADD', K_REAP, now + lease_ms, dead)
  redis.call('HSET', K_REAPER, dead, iid .. '/' .. epoch .. '/' .. de)
  -- The scan starts over (a previous reaper's removals are done, and their
  -- ids are kept for the cleanup event).
  redis.call('HSET', K_REAPC, dead, '0')
  return {0, dead}
end

-- Remove a batch of a claimed instance's sessions (those of the dead epoch
-- or older: a dead instance that came back and re-registered keeps its new
-- ones). ARGV: dead id, (unused), HSCAN page size (of the session index). Payload: {cursor, done}.
-- The cursor lives in Redis (reapcur), so the reaper can keep a call queued
-- behind the running one: each continues where the previous stopped, and
-- Redis never waits for the reaper between batches. The removed ids are
-- appended to reapids:<dead> for the cleanup event.
OPS.reap = function()
  if fenced() then return {E_FENCED} end
  local dead, lim = ARGV[A], ARGV[A + 2]
  local claim = redis.call('HGET', K_REAPER, dead)
  local mine = iid .. '/' .. epoch .. '/'
  if not claim or string.sub(claim, 1, #mine) ~= mine then return {E_BUSY} end
  local cur = redis.call('HGET', K_REAPC, dead) or '0'
  if cur == '' then return {0, {'0', '1'}} end
  local de = tonumber(string.sub(claim, #mine + 1))
  redis.call('ZADD', K_REAP, now + lease_ms, dead)
  -- Small HSCAN pages, as many as fit in the time budget: a page larger
  -- than what one call can reap was scanned (and copied into Lua) again by
  -- every call that resumed it.
  local ids = {}
  local done = false
  local tail = '\t' .. dead
  while true do
    -- The session index, whole (format 5: no set per instance); entries of
    -- other owners cost a compare, and no time check.
    local kv, nxt = IX.page(cur, lim, 256)
    local cut = false
    for k = 1, #kv, 2 do
      local sid, v = kv[k], kv[k + 1]
      if owned_by(v, tail) then
        if #ids > 0 and over_budget() then
          -- Out of time: the same cursor again visits what is left of
          -- this page (the removed sessions are gone from the index).
          cut = true
          break
        end
        local u, U, rr, rec = owned_session(sid, v, dead)
        if rr and rr.epoch <= de then
          remove_session(sid, u, R_LOST, rec, U)
          ids[#ids + 1] = sid
        end
      end
    end
    if cut then break end
    cur = nxt
    if cur == '0' then
      done = true
      break
    end
    budget_n = 3 -- the next over_budget() asks TIME
    if over_budget() then break end
  end
  if #ids > 0 then
    -- One list element per call: APPENDing to one string copied the whole
    -- string (megabytes) at each of its reallocations, a 5-13 ms call.
    redis.call('RPUSH', k_reapids(dead), table.concat(ids, '\n') .. '\n')
  end
  redis.call('HSET', K_REAPC, dead, done and '' or cur)
  out[2] = {done and '0' or cur, done and '1' or '0'}
  return finish()
end

-- The end of a reap: one cleanup event with the dead instance's id. The
-- sessions removed are not copied into it: moving 100,000 ids through one
-- command takes Redis tens of milliseconds, so the reaper reads them from
-- reapids:<dead> in pages first (for its callbacks), and the log's copy
-- carries their count; the session.disconnected events before it name
-- them one by one. ARGV: dead id, count of ids.
OPS.reap_done = function()
  if fenced() then return {E_FENCED} end
  local dead = ARGV[A]
  local claim = redis.call('HGET', K_REAPER, dead)
  local mine = iid .. '/' .. epoch .. '/'
  if not claim or string.sub(claim, 1, #mine) ~= mine then return {E_BUSY} end
  local de = string.sub(claim, #mine + 1)
  local count = ARGV[A + 1] or '0'
  redis.call('UNLINK', k_reapids(dead))
  redis.call('HDEL', K_REAPC, dead)
  redis.call('ZREM', K_REAP, dead)
  redis.call('HDEL', K_REAPER, dead)
  if LS.epoch(dead) == de then
    redis.call('HDEL', K_INST, dead)
  end
  emit(EV_CLEAN, R_LOST, nil, nil, nil, OFF, OFF, 0, dead, tonumber(count))
  return finish()
end

-- Low-rate reconciliation: walk the session index a batch at a time and
-- remove sessions whose owner has no live lease and no reaper working on
-- it. ARGV: cursor, batch, period (ms). Payload: next cursor.
-- One instance walks a shard per period: a pass starts (cursor '0') only
-- for the instance that takes the shard's recon key (SET NX, for 9/10 of
-- the period); the others are answered '0' (done). Every instance walked
-- every shard every period before: N instances, N passes over every
-- session, ~3 commands an entry.
-- An entry is skipped on its index value's owner (the same as its
-- record's: both are written together) while that owner's lease is live,
-- looked up once a page: the record is read only for entries of a dead
-- owner (each entry's HMGET and two ZSCOREs were ~25,000 instructions of
-- Redis; on a 12-shard cluster under bench/cluster.py's --instructions the
-- passes were ~5 % of the window).
OPS.reconcile = function()
  if fenced() then return {E_FENCED} end
  local cur, lim, period = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2])
  if cur == '0' and period and period > 0 and not redis.call('SET',
      IX.recon, iid, 'NX', 'PX', s(math.max(1, math.floor(period * 0.9)))) then
    out[2] = '0'
    return out
  end
  local kv, nxt = IX.page(cur, lim, 256)
  local live = {}
  local function alive(i)
    local v = live[i]
    if v == nil then
      v = lease_live(i) or false
      live[i] = v
    end
    return v
  end
  for k = 1, #kv, 2 do
    local sid = kv[k]
    local u, o = sidx_parse(kv[k + 1])
    if not (o and alive(o)) then
      local U, rec = uget(u, sid)
      if not rec then
        ix_del(sid)
      else
        -- Its owner dead and no reaper's claim on it running: orphaned.
        local rr = rec_parse(rec)
        if not alive(rr.iid) then
          local claim = redis.call('ZSCORE', K_REAP, rr.iid)
          if not (claim and tonumber(claim) >= now) then
            remove_session(sid, u, R_LOST, rec, U)
          end
        end
      end
    end
  end
  out[2] = nxt
  return finish()
end

-- Offline grace, cluster-wide: fire due deadlines, each exactly once (the
-- ZREM decides who fires it). ARGV: batch. Payload: ms to the next
-- deadline, -1 if none.
OPS.grace = function()
  if fenced() then return {E_FENCED} end
  local lim = tonumber(ARGV[A])
  local due = redis.call('ZRANGEBYSCORE', K_GRACE, '-inf', now, 'LIMIT', 0, lim)
  for _, u in ipairs(due) do
    redis.call('ZREM', K_GRACE, u)
    local U = uget(u)
    if U.g == 1 then
      U.g = 0
      if U.n == 0 then transition(u, U, OFF, U.gr, nil) end
      uput(u, U)
    end
  end
  -- Channel leaves past their grace, the same way.
  due = redis.call('ZRANGEBYSCORE', K_CGRACE, '-inf', now, 'LIMIT', 0, lim)
  for _, key in ipairs(due) do
    redis.call('ZREM', K_CGRACE, key)
    local c, u = string.match(key, '^([^\t]*)\t(.*)$')
    local M = c and mget_h(c, u)
    if M and M.g == 1 and #M.sids == 0 then member_leave(c, M, M.gr, nil) end
  end
  -- Messages are cheap to clear (no session to look at): more a call,
  -- still within the time budget.
  expire_messages(math.max(lim, 1000))
  local nxt = redis.call('ZRANGE', K_GRACE, 0, 0, 'WITHSCORES')
  local cn = redis.call('ZRANGE', K_CGRACE, 0, 0, 'WITHSCORES')
  local mn = redis.call('ZRANGE', K_MSGDUE, 0, 0, 'WITHSCORES')
  local first = nxt[2] and tonumber(nxt[2])
  if cn[2] and (not first or tonumber(cn[2]) < first) then first = tonumber(cn[2]) end
  if mn[2] and (not first or tonumber(mn[2]) < first) then first = tonumber(mn[2]) end
  if not first then out[2] = '-1'
  else out[2] = s(math.max(0, first - now)) end
  return finish()
end

-- Re-assert this instance's sessions' channels after the sessions
-- (reason resync; only net changes become events). ARGV: n, then n times
-- (session, user, k, then k times (channel, '=' data or '')). Joins the
-- store holds for such a session beyond these are removed.
OPS.cassert = function()
  if fenced() then return {E_FENCED} end
  local n = tonumber(ARGV[A])
  local b = A + 1
  for _ = 1, n do
    local sid, u, k = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2])
    b = b + 3
    local want = {}
    for i = 0, k - 1 do want[ARGV[b + 2 * i]] = true end
    local rec = sget(u, sid)
    if rec then
      local r = rec_parse(rec)
      local online = r.st == ON
      local list = split_tab(r.ch)
      local keep = {}
      for _, c in ipairs(list) do
        if want[c] then keep[#keep + 1] = c
        else join_remove(c, u, sid, online, R_RESYNC, false, sid) end
      end
      sc_put(u, sid, r, keep)
      for i = 0, k - 1 do
        chan_join(sid, u, ARGV[b + 2 * i], ARGV[b + 2 * i + 1], 0, R_RESYNC)
      end
    end
    b = b + 2 * k
  end
  return finish()
end

-- ---- queries ----------------------------------------------------------------

-- HMGET of every field in fs, 256 at a time (unpack's C stack limit is
-- ~8,000; a member may hold more sessions than that).
local function hmget_all(k, fs)
  if #fs <= 256 then return redis.call('HMGET', k, unpack(fs)) end
  local out = {}
  for i = 1, #fs, 256 do
    local r = redis.call('HMGET', k, unpack(fs, i, math.min(i + 255, #fs)))
    for j = 1, #r do out[i + j - 1] = r[j] end
  end
  return out
end

-- A member as reply fields: user, status, version, since (or 'since/veil
-- end', below), '=' data or '',
-- number of sessions, then per session: id, status, joined ms, '=' data or
-- ''. The version field is 'v/sv' (the shown version after the slash) or,
-- with_shown, 'v/sv/shown' (the channel's shown count too). brief: no
-- sessions (their number 0), what a client's snapshot shows: the data from
-- the most recent join alone, no session record read (q_mbrief). h: the
-- member's record when the caller read it.
local function member_reply(c, u, res, with_shown, brief, h)
  local M
  if h then
    M = mrec_parse(h)
    M.u = u
  else
    M = mget(c, u)
    if not M then return false end
  end
  local ns = #M.sids
  if brief then ns = 0 end
  -- The joins' records in one HMGET, the user's and its sessions' in
  -- another (a member was 2 + 2 per session calls: its data read the first
  -- join twice).
  local js, hu
  local d
  if ns > 0 then
    local jf, uf = {}, {''}
    for i, sid in ipairs(M.sids) do
      jf[i] = 'j\t' .. sid
      uf[i + 1] = sid
    end
    uf[ns + 2] = DV.F_VL
    js = hmget_all(k_chan(c), jf)
    hu = hmget_all(k_user(u), uf)
    d = jdata(js[1] or nil)
    avail_note(u, hu[1])
    DV.vt_of(u, hu[ns + 2] or false)
  else
    d = mdata(c, M)
  end
  local vt = DV.vt_of(u)
  res[#res + 1] = u
  res[#res + 1] = s(M.st + 4 * avail_of(u)) -- status + 4 * availability
  local ver = s(M.v) .. '/' .. s(M.sv)
  if with_shown then
    ver = ver .. '/' .. s(CH.count(c) - hidden_of(c))
  end
  res[#res + 1] = ver
  -- 'since', or 'since/veil end' when the user left invisible after it
  -- became a member (DV.vt_of; the other members are shown the later).
  if vt > M.since then
    res[#res + 1] = s(M.since) .. '/' .. s(vt)
  else
    res[#res + 1] = s(M.since)
  end
  res[#res + 1] = d and ('=' .. d) or ''
  res[#res + 1] = s(ns)
  if brief then return true end
  for i, sid in ipairs(M.sids) do
    local j = js[i] or ''
    local rec = hu[i + 1]
    local jst = rec and rec_status(rec) or OFF
    res[#res + 1] = sid
    res[#res + 1] = s(jst)
    res[#res + 1] = j ~= '' and s(jjoined(j)) or '0'
    local jd = jdata(j)
    res[#res + 1] = jd and ('=' .. jd) or ''
  end
  return true
end

-- ARGV: channel, after ('' from the start), limit. Payload: {count, more,
-- n, members..., seq}: the shard's counter last, read in the same call as
-- the count, so the sharded store orders the count against the events of
-- this shard's log (redis_ccount.c). q_mbrief: the members without their
-- sessions (member_reply's brief).
local function q_members(brief)
  local c, after, lim = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2])
  -- 'count/shown' (the invisible members left out of shown)
  local n = CH.count(c)
  local res = {s(n) .. '/' .. s(n - hidden_of(c)), '0', '0'}
  if lim > 0 then
    local us, mrecs
    if CH.z[c] then
      local lo = '-'
      if after ~= '' then lo = '(' .. after end
      us = redis.call('ZRANGEBYLEX', k_cmem(c), lo, '+', 'LIMIT', 0, lim + 1)
    else
      -- A small channel: its members with their records (which
      -- member_reply then need not read again), sorted here.
      us, mrecs = CH.scan(c, after)
      table.sort(us)
      for i = lim + 2, #us do us[i] = nil end
    end
    if #us > lim then
      res[2] = '1'
      us[#us] = nil
    end
    local n = 0
    for _, u in ipairs(us) do
      if member_reply(c, u, res, false, brief, mrecs and mrecs[u]) then
        n = n + 1
      end
    end
    res[3] = s(n)
  end
  res[#res + 1] = redis.call('GET', K_SEQ) or '0'
  return {0, res}
end
-- Whether the index holds session id ARGV[A] (a kick's check, before it
-- goes on the kick stream). Payload '1' or '0'.
OPS.q_has = function()
  return {0, IX.get(ARGV[A]) and '1' or '0'}
end

OPS.q_members = function() return q_members(false) end
OPS.q_mbrief = function() return q_members(true) end

-- Queries asked while other calls were in flight, in one call (redis.c's
-- queue_query): ARGV: n, then per query its op and three arguments.
-- Payload: each query's own reply ({code, payload}), in order. Each query
-- reads the op's arguments at A, moved to its own for the time it runs
-- (begin() puts A back, should a query fail half-way).
local QBATCH = {q_user = true, q_members = true, q_mbrief = true}
OPS.qbatch = function()
  local n = tonumber(ARGV[A])
  local base, res = A, {}
  for k = 1, n do
    local at = base + 1 + 4 * (k - 1)
    local q = ARGV[at]
    if not QBATCH[q] then
      A = base
      return redis.error_reply('presence: not a batched query: ' .. tostring(q))
    end
    A = at + 1
    res[k] = OPS[q]()
  end
  A = base
  return {0, res}
end

-- ---- session ids across shards --------------------------------------------
-- In shards a session lives in its user's shard, where sidx refuses an id
-- held twice only within the shard. A session id a caller chose is also
-- claimed in the id's own shard (redis_shard.c), before its session is
-- made: claims hash id -> user '\t' owning instance, icl:<instance> the
-- ids an instance claimed (dropped with the instance: unclaim_inst).
local function k_claims() return P .. 'claims' end
local function k_icl(i) return P .. 'icl:' .. i end

-- ARGV: id, user, stale ('' or a user whose claim the caller found
-- stale). Payload: {''} claimed (now this instance's), or {other user}.
OPS.claim = function()
  local sid, u, stale = ARGV[A], ARGV[A + 1], ARGV[A + 2]
  local v = redis.call('HGET', k_claims(), sid)
  if v then
    local vu, vi = string.match(v, '^([^\t]*)\t(.*)$')
    if vu ~= u and vu ~= stale then return {0, {vu}} end
    if vi ~= iid then redis.call('SREM', k_icl(vi), sid) end
  end
  redis.call('HSET', k_claims(), sid, u .. '\t' .. iid)
  redis.call('SADD', k_icl(iid), sid)
  return {0, {''}}
end

-- ---- a backend origin's name -----------------------------------------------

-- presenced's GET /v1/backend: each connection claims its origin's name
-- before its welcome, and the newest claim wins (docs/internals/backend.md,
-- "One origin, one connection"). o:<name> holds the claimer (i) and the
-- claim's counter (n), in shard 0 (a call per backend connection, not per
-- session: one shard carries them all). The holder counts while its lease
-- in inst is live, read here: a crashed holder's claim lapses with its
-- lease, and nothing has to reap the hash (the next claim overwrites it,
-- its holder's release deletes it). The counter only grows: the greater
-- of the last + 1 and Redis's clock in ms, so a hash that Redis lost does
-- not restart it below a number an instance still holds. A claim that
-- takes the name from another instance appends {o name n counter i
-- claimer} to the kick stream, which every instance reads, whether the
-- holder's lease is live or not (a holder cut off from Redis still has its
-- connection, and reads on from where it was once back). ARGV: the name.
-- Payload: {counter, '1' when a live instance held it, else '0'}, then,
-- when notices are held for the name (OPS.ohold), a list of them, four
-- elements each, and the id of the last: read, not removed, for this
-- connection to be told before its welcome; its instance removes them once
-- told (OPS.otook). A claim whose answer is lost leaves them for the next
-- one: told twice rather than never (a second `left` of a channel the
-- backend already dropped changes nothing).
OPS.oclaim = function()
  local name = ARGV[A]
  local k = P .. 'o:' .. name
  local notices, last = {}, nil
  for _, e in ipairs(redis.call('XRANGE', P .. 'oh:' .. name, '-', '+',
                                'COUNT', 1024)) do
    local f = e[2]
    notices[#notices + 1] = f[2]
    notices[#notices + 1] = f[4]
    notices[#notices + 1] = f[6]
    notices[#notices + 1] = f[8]
    last = e[1]
  end
  local h = redis.call('HMGET', k, 'i', 'n')
  local n = s(math.max(tonumber(h[2] or '0') + 1, now))
  local held = '0'
  local other = h[1] and h[1] ~= iid
  if other then
    local v = redis.call('HGET', K_INST, h[1])
    if v then
      local _, exp = LS.parse(v)
      if exp >= now then held = '1' end
    end
  end
  redis.call('HSET', k, 'i', iid, 'n', n)
  if other then
    redis.call('XADD', P .. 'kicks', 'MAXLEN', '~', '1000', '*', 'o', name,
               'n', n, 'i', iid)
  end
  if last then return {0, {n, held, notices, last}} end
  return {0, {n, held}}
end

-- The notices up to id ARGV[A + 1] were told to the origin's connection:
-- they go (those held since stay). ARGV: the name, the last id told.
OPS.otook = function()
  local k = P .. 'oh:' .. ARGV[A]
  local ms, seq = string.match(ARGV[A + 1], '^(%d+)%-(%d+)$')
  if not ms then return {0, ''} end
  redis.call('XTRIM', k, 'MINID', ms .. '-' .. s(tonumber(seq) + 1))
  if #redis.call('XRANGE', k, '-', '+', 'COUNT', 1) == 0 then
    redis.call('DEL', k)
  end
  return {0, ''}
end

-- What a detached origin must hear before its next welcome: a channel
-- removal of one of its sessions (DELETE .../members/..., code ''), or a
-- join or update the store refused after its ack (the op's code and
-- message). Held in Redis, not in the memory of the instance that saw it
-- go: the origin's next connection may reach any instance, whose claim
-- (OPS.oclaim) takes them. Without them its SDK re-joins the channel with
-- its re-assert, undoing the removal. oh:<name> in shard 0, a stream (its
-- ids say which were told, OPS.otook), one entry a notice (fields s
-- session, c channel, k code, m message), about the newest 1,024 kept
-- (presenced's in-memory bound is larger; this one keeps a key small that
-- nobody may come back for), for a day. ARGV: the name, then the four.
OPS.ohold = function()
  local k = P .. 'oh:' .. ARGV[A]
  redis.call('XADD', k, 'MAXLEN', '~', '1024', '*', 's', ARGV[A + 1],
             'c', ARGV[A + 2], 'k', ARGV[A + 3], 'm', ARGV[A + 4])
  redis.call('PEXPIRE', k, 86400000)
  return {0, ''}
end

-- The origin ended on its holder: the name is free, so that the next claim
-- says nobody held it. ARGV: the name, the holder's counter.
OPS.orelease = function()
  local k = P .. 'o:' .. ARGV[A]
  local h = redis.call('HMGET', k, 'i', 'n')
  if h[1] == iid and h[2] == ARGV[A + 1] then redis.call('DEL', k) end
  return {0, ''}
end

-- ARGV: id, user. The claim goes if it is still that user's.
OPS.unclaim = function()
  local sid, u = ARGV[A], ARGV[A + 1]
  local v = redis.call('HGET', k_claims(), sid)
  if v then
    local vu, vi = string.match(v, '^([^\t]*)\t(.*)$')
    if vu == u then
      redis.call('HDEL', k_claims(), sid)
      redis.call('SREM', k_icl(vi), sid)
    end
  end
  return {0, {''}}
end

-- ARGV: a dead instance (reaped here). Its claims go, 500 a call.
-- Payload: {'1'} when more are left.
OPS.unclaim_inst = function()
  local dead = ARGV[A]
  local ids = redis.call('SPOP', k_icl(dead), 500)
  for _, sid in ipairs(ids) do
    local v = redis.call('HGET', k_claims(), sid)
    if v and string.match(v, '^[^\t]*\t(.*)$') == dead then
      redis.call('HDEL', k_claims(), sid)
    end
  end
  return {0, {#ids == 500 and '1' or '0'}}
end

-- ARGV: prefix, after, limit. Payload: {more, name, count, name, count...}.
OPS.q_chans = function()
  local prefix, after, lim = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2])
  local lo = '[' .. prefix
  if prefix == '' then lo = '-' end
  if after ~= '' and after >= prefix then lo = '(' .. after end
  local hi = '+'
  if prefix ~= '' then hi = '[' .. prefix .. '\255' end
  local cs = redis.call('ZRANGEBYLEX', K_CHANS, lo, hi, 'LIMIT', 0, lim + 1)
  local res = {'0'}
  if #cs > lim then
    res[1] = '1'
    cs[#cs] = nil
  end
  for _, c in ipairs(cs) do
    res[#res + 1] = c
    -- 'count/shown' (the invisible members left out of shown)
    local n = CH.count(c)
    res[#res + 1] = s(n) .. '/' .. s(n - hidden_of(c))
  end
  return {0, res}
end

-- ARGV: user. Payload: {n, then per channel: name, member fields...}.
OPS.q_uchans = function()
  local u = ARGV[A]
  local cs = uc_list(u)
  table.sort(cs)
  local res = {'0'}
  local n = 0
  for _, c in ipairs(cs) do
    res[#res + 1] = c
    if member_reply(c, u, res, true) then n = n + 1 else res[#res] = nil end
  end
  res[1] = s(n)
  return {0, res}
end

OPS.q_user = function()
  local u = ARGV[A]
  local h = redis.call('HMGET', k_user(u), '', F_MSG, F_AS, DV.F_VL)
  local U = urec_parse(h[1])
  local M = msg_parse(h[2])
  -- Then: availability, since when, message text, emoji ('' none; a
  -- leading '=' otherwise), expiry, set time.
  local function opt(x) if x then return '=' .. x end return '' end
  -- Then: last active (now while a session is online), the shown version,
  -- the number of devices, and per device: name, best status, sessions.
  local res = {s(U.st), s(U.n), s(U.on), s(U.v), s(U.since), s(U.ls), nows(),
               s(U.av), h[3] or '0', opt(M and M.text), opt(M and M.emoji),
               M and s(M.exp) or '0', M and M.set or '0',
               U.on > 0 and nows() or s(U.la), s(U.sv), '0'}
  local nd = 0
  if U.dv == '=' then
    if U.n > 0 then
      nd = 1
      res[#res + 1] = DEV_DEFAULT
      res[#res + 1] = s(best(U.n, U.on))
      res[#res + 1] = s(U.n)
    end
  else
    for _, e in ipairs(DV.list(U)) do
      nd = nd + 1
      res[#res + 1] = e[1]
      res[#res + 1] = s(best(e[2], e[3]))
      res[#res + 1] = s(e[2])
    end
  end
  res[16] = s(nd)
  -- Then the veil's start and end ('0' '0': none), after the devices (an
  -- older decoder stops before them).
  local vf, vt = string.match(h[4] or '', '^(%d+):(%d+)$')
  res[#res + 1] = vf or '0'
  res[#res + 1] = vt or '0'
  return {0, res}
end

OPS.q_sessions = function()
  local all = redis.call('HGETALL', k_user(ARGV[A]))
  local ss = {}
  for k = 1, #all, 2 do
    if is_sid(all[k]) then
      ss[#ss + 1] = all[k]
      ss[#ss + 1] = rec_text(all[k + 1])
    end
  end
  return {0, ss}
end

-- ---- the entry point ----------------------------------------------------------

-- The prefix's global keys and its index's bucket names, made once a
-- prefix (IX.pfx, up to 16 prefixes: each may name up to IX.N buckets,
-- ~1 MB of Lua heap): a primary of a cluster serves several shards, each
-- its own prefix, and their calls alternate; each switch made the 18 names
-- again and started the bucket names afresh (a string and a table slot an
-- operation, garbage at the next switch).
local function set_prefix(p)
  if p == P then return end
  P = p
  local t = IX.pfx[p]
  if not t then
    t = LS.memo(IX.pfx, p, {p .. 'seq', p .. 'log', p .. 'format',
      p .. 'nsess', p .. 'inst', p .. 'lease', {}, p .. 'recon',
      p .. 'epochs', p .. 'grace', p .. 'msgdue', p .. 'npresent',
      p .. 'reap', p .. 'reaper', p .. 'reapcur', p .. 'chans', p .. 'cgrace',
      p .. 'u:{u:', p .. 'c:{c:'}, 16)
  end
  K_SEQ, K_LOG, K_FORMAT, K_NSESS, K_INST, K_LEASE =
    t[1], t[2], t[3], t[4], t[5], t[6]
  IX.keys, IX.recon = t[7], t[8]
  K_EPOCHS, K_GRACE, K_MSGDUE, K_NPRESENT, K_REAP, K_REAPER, K_REAPC =
    t[9], t[10], t[11], t[12], t[13], t[14], t[15]
  K_CHANS, K_CGRACE, PU, PC = t[16], t[17], t[18], t[19]
end

-- A call's state: its arguments, Redis's clock (TIME, once), no events yet.
local function begin(args)
  if not NUM[0] then
    for i = 0, 4095 do
      NUM[i] = string.format('%d', i)
      NUMOF[NUM[i]] = i
      LEN[i] = NUM[i] .. ':'
    end
    MSG_NONE = struct.pack(MSG_TAIL, 0, '', 0, '', 0)
    -- Byte order or not (see CH): any locale but C, POSIX and C.UTF-8
    -- puts 'a' before 'B' and ignores or weighs punctuation apart.
    if not ('B' < 'a' and 'Z' < '_' and '_' < 'a' and 'a-b' < 'a_a' and
            'ab' < 'ab0' and 'a0' < 'aB') then
      CH.ON, CH.OFF = 0, 0
    end
  end
  ARGV = args
  A = A0
  op = args[1]
  -- The per-call memos are emptied, not made anew, and the reply's table
  -- is reused: a table made is 1,000-2,000 instructions of Redis with the
  -- collector's share of it (bench/redis/lua_costs.py), an empty one's
  -- next() ~200.
  if next(avail_memo) then clear(avail_memo) end
  if next(DV.vtm) then clear(DV.vtm) end
  if next(CH.h) then clear(CH.h) end
  if next(CH.n) then
    clear(CH.n)
    clear(CH.z)
  end
  uc_defer = nil
  LS.others = nil
  -- The caller's header: what an instance sends alike on every call, in one
  -- argument. Each argument is ~1,300 instructions of Redis (its parse, its
  -- object, its Lua string; bench/redis/script_ab.py), and these were
  -- seven; parsed once per caller (tonumber is C's strtod, ~500-1,000
  -- instructions each), then found by the string itself (two equal
  -- strings are one Lua string: the compare with the last is a pointer's).
  local h = args[2]
  if h ~= nums_arg.h then
    local hs = nums_arg.hs
    local c = hs[h]
    if not c then
      local e, ml, g, cg, l, r, i, p = string.match(h,
        '^(%d+) (%d+) (%d+)/(%d+) (%d+) (%d+) ([^\t]*)\t(.*)$')
      if not e then
        return redis.error_reply('presence: bad call header')
      end
      c = LS.memo(hs, h, {e, tonumber(e), tonumber(ml), tonumber(g),
                          tonumber(cg), tonumber(l), tonumber(r) * 1000, i, p})
    end
    nums_arg.h = h
    epoch, epoch_n, maxlen, grace_ms, cgrace_ms = c[1], c[2], c[3], c[4], c[5]
    lease_ms, retention_ms, iid = c[6], c[7], c[8]
    set_prefix(c[9])
  end
  local tm = redis.call('TIME')
  if tm[1] ~= nums_arg.sec then
    nums_arg.sec = tm[1]
    nums_arg.sec_n = tonumber(tm[1])
  end
  local sec, us = nums_arg.sec_n, tonumber(tm[2])
  now = sec * 1000 + math.floor(us / 1000)
  now_s = nil
  t0 = sec * 1000000 + us
  budget_n = 0
  npresent_d = 0
  ixd = 0
  out[1], out[2], out[3], out[4], out[5] = 0, '', nil, nil, nil
  -- The token list is kept from call to call (finish() reads only the
  -- first nb): a fresh one grew by doubling, rehashing each time (0.90x
  -- the CPU of an unbatched connect, 0.91-0.95x of a batched operation
  -- in script_ab). After a big call (a reap, a wipe) it starts afresh, so
  -- that the Lua heap does not keep that call's strings.
  if not evs or nb > 4096 then evs = {} end
  nev, nb = 0, 1
  LE.s = nil
end

-- FCALL <name> 0 op prefix instance epoch maxlen grace lease retention ...
-- (the register_function call after this file names it).
local function run_op()
  local w1 = WRITES[op]
  if w1 then
    if fenced() then return {E_FENCED} end
    local code = w1[1](A)
    if code ~= 0 then return {code} end
    return finish()
  end
  local f = OPS[op]
  if f then return f() end
  return redis.error_reply('presence: unknown op ' .. tostring(op))
end

local function presence_main(_, args)
  local e = begin(args)
  if e then return e end
  local r = run_op()
  if npresent_d ~= 0 then
    redis.call('INCRBY', K_NPRESENT, string.format('%d', npresent_d))
  end
  if ixd ~= 0 then redis.call('INCRBY', K_NSESS, s(ixd)) end
  return r
end

-- The queries' entry point, registered with the no-writes flag and called
-- with FCALL_RO (redis.c, common_args): Redis then runs them where it
-- refuses writes (OOM at maxmemory under noeviction, NOREPLICAS, MISCONF),
-- so the API still answers from what Redis holds while the instances wait
-- to re-assert. The queries are the ops named q... (q_user, q_sessions,
-- q_members, q_mbrief, q_uchans, q_chans, q_has, qbatch), and they only
-- read; any other op is refused before it runs (a write in it would fail
-- half-way). (No table of them: the main chunk may hold 200 locals, and a
-- block's count too.)
local function presence_ro(keys, args)
  local o = args[1]
  if type(o) ~= 'string' or string.byte(o, 1) ~= 113 then -- 'q'
    return redis.error_reply('presence: not a read-only op: ' .. tostring(o))
  end
  return presence_main(keys, args)
end
