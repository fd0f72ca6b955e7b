#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Instructions of Redis per unbatched connect, for one version of the store's script.

    bench/redis/connect_instructions.py REV|FILE [--uuid20] [--population N] [--connects M]

One redis-server under valgrind's callgrind (started here on a unix socket, stopped by pid)
loads the script (a git revision's src/store/lua/presence.lua, or a file) as the store does,
registers an instance, connects N sessions (default 3,008), then counts the instructions of M
more (default 2,000), each a connect call of its own (16 pipelined), each session its own user,
its id a random UUID: sent as text, or with --uuid20 in the 20-byte form a format-11-or-later
build sends (src/core/uuid.h). Prints the count per connect and the commands Redis ran for
them (INFO commandstats), so that where a change's cost goes can be seen call by call; the
index's growth with the sessions is in it (docs/internals/redis.md, "The session index").
Needs valgrind (a bench tool, not one of `make test`'s dependencies).
"""
import os
import shutil
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import script_ab as sa  # noqa: E402


def main():
    args = sys.argv[1:]
    if not args or args[0] in ('-h', '--help'):
        print(__doc__)
        return 0 if args else 2
    packed = '--uuid20' in args
    if packed:
        args.remove('--uuid20')
    population, connects = 3008, 2000
    for flag in ('--population', '--connects'):
        if flag in args:
            i = args.index(flag)
            v = int(args[i + 1])
            del args[i:i + 2]
            if flag == '--population':
                population = v
            else:
                connects = v
    if len(args) != 1:
        print(__doc__)
        return 2
    if not shutil.which('valgrind'):
        sys.exit('connect_instructions.py: needs valgrind (Debian: apt-get install valgrind)')
    text = sa.script_text(args[0])
    wrap = ('valgrind', '--tool=callgrind', '--callgrind-out-file=cg.out')
    with sa.redis_server('connect-instr-', wrap) as (sock, pid):
        c = sa.Conn(sock)
        c.cmd('FUNCTION', 'LOAD', 'REPLACE', b'#!lua name=ci\n' + text +
              b"\nredis.register_function('ci', presence_main)\n")
        ep = [0]

        def call(op, *a):
            return ('FCALL', 'ci', 0, op) + sa.header(text, 'ci:', 'inst-a', ep[0]) + a

        ep[0] = c.cmd(*call('register', 1, 0))[1][0]

        def run(n):
            for _ in range(0, n, 16):
                cmds = []
                for _ in range(16):
                    t = str(uuid.uuid4())
                    cmds.append(call('connect', sa.sid20(t) if packed else t, 'u' + t, '', 0))
                c.pipe(cmds)

        run(population)
        sa.callgrind_instructions(pid)
        c.cmd('CONFIG', 'RESETSTAT')
        run(connects)
        n = sa.callgrind_instructions(pid)
        stats = c.cmd('INFO', 'commandstats').decode()
    print('%s: %.0f instructions per connect (%d connects after %d, ids %s)' % (
        args[0], n / connects, connects, population, '20-byte' if packed else 'text'))
    for line in stats.splitlines():
        if line.startswith('cmdstat_') and 'config' not in line:
            name, rest = line[8:].split(':', 1)
            calls = int(rest.split('calls=')[1].split(',')[0])
            print('  %-10s %6.2f calls per connect' % (name, calls / connects))
    return 0


if __name__ == '__main__':
    sys.exit(main())
