#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Redis bytes of a channel's hash, for two versions of the store's script.

    bench/redis/channel_memory.py OLD NEW

OLD and NEW are presence.lua files or git revisions, as for script_ab.py (whose
connection and loading this reuses). One redis-server (started here on a unix
socket in a temp dir, default configuration, stopped by pid) holds both under
their own prefixes. For each, sessions with UUID-long ids connect and join
channels of three shapes, in batches as an instance sends them:

  pairs     300 channels of 2 members, each member one session, no data (the
            Centrifugo comparison's idle layout), and again with 15 bytes of
            data ('={"name":"ann"}')
  mid       one channel of 100 members with data ('={"name":"u<i>"}')
  big       one channel of 2,000 members with the same data

and prints `MEMORY USAGE` of each channel's hash (`c:{c:<name>}`, SAMPLES 0)
and its encoding, per channel or per member, and the member zset
(`cm:{c:<name>}`, 0 where there is none: format 14 keeps one only for a
channel of more than 32 members) beside each. A hash stays a listpack while it holds
at most hash-max-listpack-entries fields (512 on Redis 7.0) of at most
hash-max-listpack-value bytes (64): which side of those limits a layout puts
a channel on is most of what it costs. Not part of `make test`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import script_ab as sa  # noqa: E402


def sid_of(i, k, tag):
    # 36 characters, the length of the UUIDs presenced gives its sessions
    return '%08x-5eed-4000-8000-%011d%s' % (i, k, tag)


def measure(c, name, text, pre):
    c.cmd('FUNCTION', 'LOAD', 'REPLACE', b'#!lua name=' + name.encode() + b'\n' +
          text + b"\nredis.register_function('" + name.encode() +
          b"', presence_main)\n")

    def call(op, *a, ep=0):
        return ('FCALL', name, 0, op) + sa.header(text, pre, 'inst-abcd', ep) + a
    ep = c.cmd(*call('register', 1, 0))[1][0]
    rows = []
    for dm, tag in (('', 'n'), ('={"name":"ann"}', 'd')):
        total, ztotal = 0, 0
        for ch in range(300):
            w = []
            for i in (ch, ch + 1):
                sid, u = sid_of(i, ch, tag), 'pu%d%s' % (i, tag)
                w += ['connect', sid, u, '', 0,
                      'join', sid, u, 'pair%d%s' % (ch, tag), dm, 0]
            c.cmd(*call('batch', 4, *w, ep=ep))
            total += c.cmd('MEMORY', 'USAGE', pre + 'c:{c:pair%d%s}' % (ch, tag),
                           'SAMPLES', '0')
            # None: no member zset (format 14 keeps one only past 32 members)
            ztotal += c.cmd('MEMORY', 'USAGE', pre + 'cm:{c:pair%d%s}' % (ch, tag),
                            'SAMPLES', '0') or 0
        enc = c.cmd('OBJECT', 'ENCODING', pre + 'c:{c:pair0%s}' % tag).decode()
        rows.append(('pairs, %s' % ('data' if dm else 'no data'), enc,
                     total / 300, 'B a 2-member channel', ztotal / 300))
    for chan, members in (('mid', 100), ('big', 2000)):
        for k in range(0, members, 50):
            w = []
            for i in range(k, k + 50):
                sid, u = sid_of(i, i, chan[0]), 'user%05d%s' % (i, chan)
                w += ['connect', sid, u, '', 0,
                      'join', sid, u, chan, '={"name":"u%d"}' % i, 0]
            c.cmd(*call('batch', 100, *w, ep=ep))
        mc = c.cmd('MEMORY', 'USAGE', pre + 'c:{c:%s}' % chan, 'SAMPLES', '0')
        mz = c.cmd('MEMORY', 'USAGE', pre + 'cm:{c:%s}' % chan, 'SAMPLES', '0')
        enc = c.cmd('OBJECT', 'ENCODING', pre + 'c:{c:%s}' % chan).decode()
        rows.append(('%s (%d members), data' % (chan, members), enc,
                     mc / members, 'B a member', mz / members))
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    texts = [sa.script_text(sys.argv[1]), sa.script_text(sys.argv[2])]
    with sa.redis_server('channel-memory-') as (sock, _):
        c = sa.Conn(sock)
        res = [measure(c, 'cm_%s' % v, t, 'p%s:' % v)
               for v, t in zip(('old', 'new'), texts)]
    print('%-28s %-22s %-22s %s' % ('channel hash', 'old', 'new', 'new/old'))
    for a, b in zip(*res):
        print('%-28s %-22s %-22s %.2f  (%s)' % (
            a[0], '%.1f %s' % (a[2], a[1]), '%.1f %s' % (b[2], b[1]),
            b[2] / a[2], a[3]))
        if a[4] is not None:
            print('%-28s %-22s %-22s' % ('  its member zset',
                                         '%.1f' % a[4], '%.1f' % b[4]))


if __name__ == '__main__':
    main()
