#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What a Redis Functions call costs before its script decides anything, in instructions.

    bench/redis/call_costs.py [--calls N]

The fixed part of every store call, beside the parts lua_costs.py prices inside one: one
redis-server (7.0, under valgrind's callgrind, started here on a unix socket and stopped by
pid) runs N commands of each kind below (default 2,000, 16 pipelined), after N of the same
to warm it, and prints redis-server's instructions per command: a plain command for scale,
an FCALL that returns at once (with no argument, then with a key and six arguments of the
sizes a connect sends), one that returns a two-element table, one that runs one HSET, one
that asks TIME, an EVALSHA for comparison, and one that runs an unbatched connect's nine
commands with its records and events given, as made elsewhere: the least a connect costs
Redis while the script keeps those commands; and a batch of 16 status changes done the same
way (each change's records read and written, the batch's numbers, log entry, clock and fence
once), printed per change. Set beside connect_instructions.py's count of
a whole connect (docs/benchmarks.md, "What keeps the missed rows from their targets"), it
says how much of a call is Redis's own cost per command and how much is the script's Lua.
Needs valgrind (a bench tool, not one of `make test`'s dependencies).
"""
import hashlib
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import script_ab as sa  # noqa: E402

LIB = b"""#!lua name=calls
local function noop(k, a) return 0 end
local function pair(k, a) return {0, a[1]} end
local function hset(k, a) redis.call('HSET', k[1], a[1], a[2]) return 0 end
local function time(k, a) redis.call('TIME') return 0 end
-- An unbatched connect's nine commands with nothing decided: the records
-- and the events come made (as an instance would send them), the keys are
-- made as the store's script makes them, the reply is a connect's.
local function nine(k, a)
  local sid, u = a[2], a[3]
  redis.call('TIME')
  redis.call('HGET', 'presence:inst', 'instance-a')
  -- The index's bucket, one of 16,381 as the store's (IX.hash): here the
  -- id's number, which spreads these ids as evenly.
  local b = tonumber(string.sub(sid, 5)) % 16381
  if redis.call('HSETNX', 'presence:i:' .. b, sid, u .. '\tinstance-a') == 0 then
    return {-6}
  end
  local uk = 'presence:u:{u:' .. u .. '}'
  redis.call('HGET', uk, '')
  redis.call('HSET', uk, '', a[4], sid, a[5])
  local seq = redis.call('INCRBY', 'presence:seq', 2)
  redis.call('XADD', 'presence:log', 'MAXLEN', '~', '65536', '*', 'e', a[6])
  redis.call('INCRBY', 'presence:nsess', 1)
  redis.call('INCRBY', 'presence:npresent', 1)
  return {0, '', seq, 2, a[6]}
end
-- A batch of status changes of sessions already there, nothing decided:
-- for each (session id, user) pair from a[5] on, the user's and the
-- session's records read in one HMGET and written in one HSET (records
-- a[2] and a[3] as given); then the batch's numbers, its one log entry
-- (a[4], its events), the clock and the fence, once.
local function batch(k, a)
  redis.call('TIME')
  redis.call('HGET', 'presence:inst', 'instance-a')
  local n = 0
  for i = 5, #a, 2 do
    local uk = 'presence:u:{u:' .. a[i + 1] .. '}'
    redis.call('HMGET', uk, '', a[i])
    redis.call('HSET', uk, '', a[2], a[i], a[3])
    n = n + 1
  end
  local seq = redis.call('INCRBY', 'presence:seq', 2 * n)
  redis.call('XADD', 'presence:log', 'MAXLEN', '~', '65536', '*', 'e', a[4])
  return {0, '', seq, 2 * n, a[4]}
end
redis.register_function('noop', noop)
redis.register_function('pair', pair)
redis.register_function('hset', hset)
redis.register_function('time', time)
redis.register_function('nine', nine)
redis.register_function('batch', batch)
"""
RETURN0 = b'return 0'
RETURN0_SHA = hashlib.sha1(RETURN0).hexdigest()
# A connect's arguments: op, the caller's header (~50 bytes), session id, user, meta, limit.
HEADER = '1 65536 10000/0 15000 86400 instance-a\tpresence:'


def args6(i):
    return ('k', 'connect', HEADER, 'sid-%08d' % i, 'u%d' % i, '', '0')


CASES = [
    ('PING', lambda i, n: ('PING',)),
    ('HSET (a plain command)', lambda i, n: ('HSET', 'h%d' % (i % 100), 'f%d' % i, 'v' * 40)),
    ('FCALL, returns 0', lambda i, n: ('FCALL', 'noop', 0)),
    ('FCALL, 1 key + 6 arguments, returns 0', lambda i, n: ('FCALL', 'noop', 1) + args6(i)),
    ('the same, returns {0, ARGV[1]}', lambda i, n: ('FCALL', 'pair', 1) + args6(i)),
    ('FCALL running one HSET', lambda i, n: ('FCALL', 'hset', 1, 'h%d' % (i % 100), 'f%d' % i,
                                          'v' * 40)),
    ('FCALL asking TIME', lambda i, n: ('FCALL', 'time', 0)),
    ("EVALSHA of 'return 0'", lambda i, n: ('EVALSHA', RETURN0_SHA, 0)),
    # A new session of a new user each: a 20-byte id, a user record of a
    # new user's size, a session record, the two events' entry.
    ("a connect's nine commands, nothing decided", lambda i, n: (
        'FCALL', 'nine', 1, 'k', HEADER, 'sid-%016d' % i, 'u%d' % i, 'U' * 52, 'S' * 30,
        'E' * 110)),
    # 16 status changes in one call (the batched mix's calls carry up to
    # 64 operations), a user of its own each: printed per change.
    ("a batch's status change, nothing decided", lambda i, n: (
        'FCALL', 'batch', 1, 'k', HEADER, 'U' * 52, 'S' * 30, 'E' * (16 * 60)) + tuple(
            x for j in range(16) for x in ('sid-%016d' % (i % n * 16 + j),
                                           'u%d' % (i % n * 16 + j)))),
]
# Rows whose command carries this many operations: printed per operation.
PER_OP = {"a batch's status change, nothing decided": 16}


def main():
    args = sys.argv[1:]
    if args and args[0] in ('-h', '--help'):
        print(__doc__)
        return 0
    n = 2000
    if args[:1] == ['--calls'] and len(args) == 2 and args[1].isdigit():
        n = int(args[1])
    elif args:
        print(__doc__)
        return 2
    if not shutil.which('valgrind'):
        sys.exit('call_costs.py: needs valgrind (Debian: apt-get install valgrind)')
    wrap = ('valgrind', '--tool=callgrind', '--callgrind-out-file=cg.out')
    with sa.redis_server('call-costs-', wrap) as (sock, pid):
        c = sa.Conn(sock)
        c.cmd('FUNCTION', 'LOAD', 'REPLACE', LIB)
        c.cmd('SCRIPT', 'LOAD', RETURN0)
        for name, make in CASES:
            # The first pass warms, the second counts. A command's number i
            # runs on over both passes (a connect's session id is new in
            # each); i % N is the same command again (a batch's status
            # changes find the sessions the first pass wrote).
            for p in range(2):
                sa.callgrind_instructions(pid)
                for j in range(0, n, 16):
                    for r in c.pipe([make(p * n + j + k, n) for k in range(min(16, n - j))]):
                        # A script's reply starts with 0 when it did the
                        # whole of its work (a connect of an id already
                        # there stops early, with -6).
                        if isinstance(r, list) and r and r[0] != 0:
                            sys.exit('call_costs.py: %s answered %r' % (name, r))
                count = sa.callgrind_instructions(pid)
            per = PER_OP.get(name, 1)
            print('%-40s %8.0f instructions a %s' % (name, count / n / per,
                                                    'change' if per > 1 else 'command'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
