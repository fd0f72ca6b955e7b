#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What one Lua construct costs inside a Redis Functions call, in instructions.

    bench/redis/lua_costs.py [NAME ...]

One redis-server (7.0, under valgrind's callgrind, started here on a unix socket and stopped
by pid) loads a small library whose function runs one construct n times; each construct is
called 100 times with n = 0 and 100 times with n = 100, and the difference over the 10,000
runs is its cost. Instructions, not time: the count does not move with the host's load (see
script_ab.py --instructions). The constructs are the ones the store's script (presence.lua)
is made of, with the shapes it uses (a UUID-long session id, an event's pack format), so that
a change to the script can be priced before it is made (docs/benchmarks.md). Needs valgrind
(Debian's package; a bench tool, not one of `make test`'s dependencies).
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import script_ab as sa  # noqa: E402

LIB = r'''#!lua name=costs
-- format 8's user event (every field) and format 9's session event of the
-- default device (what it has, small numbers sharing an integer)
local EV_FMT = '<HBBBI6I6I2sI2sI2sI4s'
local UEV_FMT = EV_FMT .. 'I6'
local EV9_FMT = '<I6I4I2sI2sI6'
local URC_FMT = '<BBBBBI4I4I4I6I6I6I4ss'
local sid, u = 'f70a3608-29da-4401-806c-4d556b4d3cc9', 'u0000001'
local P = 'presence:'
local function ln(x) if x then return #x + 1 end return 0 end
-- (a library's top level has no struct: made at the first call)
local urec
local C = {
  loop = function(n) for _ = 1, n do end end,
  call = function(n) for _ = 1, n do local _ = ln(sid) end end,
  inline = function(n) for _ = 1, n do local _ = sid and #sid + 1 or 0 end end,
  field = function(n) local t = {a = 1} for _ = 1, n do local _ = t.a end end,
  table4 = function(n) for _ = 1, n do local _ = {st = 1, n = 2, on = 3, v = 4} end end,
  concat = function(n) for _ = 1, n do local _ = P .. 'u:{u:' .. u .. '}' end end,
  concat_num = function(n) for i = 1, n do local _ = 'abc' .. sid .. i end end,
  format_d = function(n) for _ = 1, n do local _ = string.format('%d', 1796505224543) end end,
  sub = function(n) for _ = 1, n do local _ = string.sub(sid, 3) end end,
  byte = function(n) for _ = 1, n do local _ = string.byte(sid, 1) end end,
  pack_i6 = function(n) for _ = 1, n do local _ = struct.pack('<I6', 1796505224543) end end,
  pack_event = function(n)
    for _ = 1, n do
      local _ = struct.pack(UEV_FMT, 515, 1, 1, 1, 12345, 0, 0, '', #sid + 1, sid,
                            #u + 1, u, 0, '', 77)
    end
  end,
  pack_event9 = function(n)
    for _ = 1, n do
      local _ = struct.pack(EV9_FMT, 515 + 16777216 * 257, 12345, #sid + 1, sid,
                            #u + 1, u, 77 * 65536 + 257)
    end
  end,
  unpack_user = function(n)
    urec = urec or struct.pack(URC_FMT, 1, 0, 0, 0, 0, 1, 1, 7, 1, 1, 1, 7, '=', '=')
    for _ = 1, n do local _ = {struct.unpack(URC_FMT, urec)} end
  end,
  hget = function(n) for _ = 1, n do redis.call('HGET', 'h', 'f') end end,
  hmget3 = function(n) for _ = 1, n do redis.call('HMGET', 'h', 'f', 'g', 'k') end end,
}
redis.register_function('costs', function(_, a) C[a[1]](tonumber(a[2])) return 0 end)
'''

NAMES = ['loop', 'call', 'inline', 'field', 'table4', 'concat', 'concat_num', 'format_d',
         'sub', 'byte', 'pack_i6', 'pack_event', 'pack_event9', 'unpack_user', 'hget', 'hmget3']


def main():
    names = sys.argv[1:] or NAMES
    if any(n in ('-h', '--help') or n not in NAMES for n in names):
        print(__doc__)
        print('constructs: ' + ' '.join(NAMES))
        return 0 if names[:1] in (['-h'], ['--help']) else 2
    if not shutil.which('valgrind'):
        sys.exit('lua_costs.py: needs valgrind (Debian: apt-get install valgrind)')
    wrap = ('valgrind', '--tool=callgrind', '--callgrind-out-file=cg.out')
    with sa.redis_server('lua-costs-', wrap) as (sock, pid):
        c = sa.Conn(sock)
        c.cmd('FUNCTION', 'LOAD', LIB)
        for name in names:
            sa.callgrind_instructions(pid)
            c.pipe([('FCALL', 'costs', 0, name, 0)] * 100)
            base = sa.callgrind_instructions(pid)
            c.pipe([('FCALL', 'costs', 0, name, 100)] * 100)
            total = sa.callgrind_instructions(pid)
            print('%-12s %8.0f instructions' % (name, (total - base) / 10000.0), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
