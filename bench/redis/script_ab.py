#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Two versions of the Redis store's script, A/B, call by call (docs/benchmarks.md).

    bench/redis/script_ab.py OLD NEW [--rounds 20] [--memory 20000] [--rows a,b] [--instructions]
                             [--separate] [--maxlen 100000]

OLD and NEW are presence.lua files or git revisions (`git show REV:src/store/lua/presence.lua`).
A file that defines presence_main is loaded as a Functions library and run with FCALL, as the
store does; an older one with SCRIPT LOAD and EVALSHA. One redis-server (started here on a
unix socket in a temp dir, stopped by pid) holds both under their own prefixes; blocks of
calls alternate old/new, the order swapped each round, and each block is costed by
redis-server's CPU time (/proc/<pid>/schedstat), not the wall clock, so a loaded host's
preemption counts for neither. Then, unless --memory 0, Redis's memory per session for each:
--memory sessions (UUID-long ids, each its own user) connected in batches of 60, used_memory
added over their number, the log's entries included (and the log apart, MEMORY USAGE), the
same as bench_redis's figure. --rows: only these rows (their keys, as in the JSON). Prints a table and one JSON object (medians and ranges, us; the means beside the medians, which share out the Lua collector's steps: redis-server runs one every 50th call, so they fall in some rounds only).

--separate: each version in a redis-server of its own (their blocks still alternate).

--uuids both|new20: the rows' session ids are UUIDs (derived from the names they had) instead
of short names; with new20 the new version is sent each in the 20-byte form a format-11 build
sends (src/core/uuid.h), the old one the text, as each build does for presenced's own sessions.

--maxlen: the log's length in the calls' header (100,000, the store's default): smaller, the
rows run with a full log, which a running store always has (its trim in every call's cost).

--instructions: redis-server runs under valgrind's callgrind and each block is costed by the
instructions it executed (callgrind_control --zero before it, --dump after), not by CPU time:
a count that does not move with the host's load (the CPU time of a block swings +-40 % on this
shared VM), for changes too small for the time to show. It is a count of instructions, not of
cycles: a cache miss or a stall costs one. Slow (~50x): use a few rounds. Needs valgrind
(Debian's package; not one of `make test`'s dependencies: this is a bench tool).
"""
import contextlib, json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time

N = 60  # writes per batch call
MAXLEN = 100000  # --maxlen


def script_text(spec):
    if os.path.exists(spec):
        return open(spec, 'rb').read()
    return subprocess.check_output(['git', 'show', spec + ':src/store/lua/presence.lua'])


def header(text, prefix, inst, epoch, maxlen=None, grace=0, lease=3600000, retention=0):
    """The arguments after the op that script text takes: since 2026-12-06 one header,
    "<epoch> <maxlen> <grace>/<channel grace> <lease> <retention> <instance>\\t<prefix>"
    (presence.lua's begin()), before it seven (prefix, instance, epoch, maxlen, grace,
    lease, retention). A version of either kind can be measured against the other.
    maxlen None: MAXLEN (--maxlen)."""
    if maxlen is None:
        maxlen = MAXLEN
    if re.search(rb'^local A0 = 3$', text, re.M):
        if isinstance(epoch, bytes):
            epoch = epoch.decode()
        g = str(grace) if '/' in str(grace) else '%s/0' % grace
        return ('%s %d %s %d %d %s\t%s' % (epoch, maxlen, g, lease, retention, inst, prefix),)
    return (prefix, inst, epoch, maxlen, grace, lease, retention)


@contextlib.contextmanager
def redis_server(prefix, wrap=()):
    """A redis-server of its own on a unix socket in a temp dir, no
    persistence, default configuration otherwise: (socket path, pid), stopped
    by pid and its dir removed on the way out. wrap: a command to run it
    under (valgrind), whose pid is then the server's."""
    d = tempfile.mkdtemp(prefix=prefix)
    sock = os.path.join(d, 'redis.sock')
    srv = subprocess.Popen(list(wrap) + [
        'redis-server', '--port', '0', '--unixsocket', sock, '--save', '', '--appendonly', 'no',
        '--dir', d, '--logfile', 'redis.log'] + (
            # Under valgrind a block of calls takes long enough for the
            # server's timer (10 a second by default) to run in most of
            # them: its expiry and rehash work would be counted as theirs.
            ['--hz', '1'] if wrap else []), cwd=d)
    try:
        for _ in range(3000 if wrap else 500):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        time.sleep(0.1)
        yield sock, srv.pid
    finally:
        srv.kill()
        srv.wait()
        shutil.rmtree(d, ignore_errors=True)


class Conn:
    def __init__(self, path):
        self.sk = socket.socket(socket.AF_UNIX)
        self.sk.connect(path)
        self.f = self.sk.makefile('rb')

    @staticmethod
    def enc(*a):
        a = [x if isinstance(x, bytes) else str(x).encode() for x in a]
        return b'*%d\r\n' % len(a) + b''.join(b'$%d\r\n%s\r\n' % (len(x), x) for x in a)

    def rd(self):
        line = self.f.readline()
        t, r = line[:1], line[1:-2]
        if t == b'+':
            return r
        if t == b'-':
            return RuntimeError(r.decode())
        if t == b':':
            return int(r)
        if t == b'$':
            n = int(r)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b'*':
            n = int(r)
            return None if n < 0 else [self.rd() for _ in range(n)]
        raise RuntimeError('bad reply %r' % line)

    def pipe(self, cmds):
        self.sk.sendall(b''.join(self.enc(*c) for c in cmds))
        out = [self.rd() for _ in cmds]
        for r in out:
            if isinstance(r, Exception):
                raise r
        return out

    def cmd(self, *a):
        return self.pipe([a])[0]


# --uuids: 'text' (short names), 'both' (UUIDs), 'new20' (UUIDs, the new side's packed)
SIDS = 'text'


def sid20(text):
    """A UUID's 20-byte form (src/core/uuid.h): 0xff, then its 128 bits 7 to a byte, each byte
    0x80 | its bits, the last 2 bits padded with zeros."""
    import uuid
    n = int.from_bytes(uuid.UUID(text).bytes, 'big') << 5
    return bytes([0xff]) + bytes(0x80 | ((n >> (7 * (18 - k))) & 0x7f) for k in range(19))


def sid_of(v, name):
    """The session id version v is sent for a row's session called name."""
    if SIDS == 'text':
        return name
    import uuid
    text = name if len(name) == 36 else str(uuid.uuid5(uuid.NAMESPACE_OID, name))
    return sid20(text) if SIDS == 'new20' and v == 'new' else text


def main():
    global SIDS
    args = sys.argv[1:]
    rounds, memory = 20, 20000
    instr = '--instructions' in args
    if instr:
        args.remove('--instructions')
    separate = instr or '--separate' in args
    if '--separate' in args:
        args.remove('--separate')
    if '--maxlen' in args:
        i = args.index('--maxlen')
        global MAXLEN
        MAXLEN = int(args[i + 1])
        del args[i:i + 2]
    if '--rounds' in args:
        i = args.index('--rounds')
        rounds = int(args[i + 1])
        del args[i:i + 2]
    if '--memory' in args:
        i = args.index('--memory')
        memory = int(args[i + 1])
        del args[i:i + 2]
    if '--uuids' in args:
        i = args.index('--uuids')
        SIDS = args[i + 1]
        if SIDS not in ('both', 'new20'):
            sys.exit('script_ab.py: --uuids both|new20')
        del args[i:i + 2]
    only = None
    if '--rows' in args:
        i = args.index('--rows')
        only = args[i + 1].split(',')
        del args[i:i + 2]
    if len(args) != 2 or args[0] in ('-h', '--help'):
        print(__doc__)
        return 0 if args[:1] in (['-h'], ['--help']) else 2
    texts = {'old': script_text(args[0]), 'new': script_text(args[1])}
    if instr and not shutil.which('valgrind'):
        sys.exit('script_ab.py: --instructions needs valgrind (Debian: apt-get install valgrind)')
    wrap = ('valgrind', '--tool=callgrind', '--callgrind-out-file=cg.out',
            '--collect-atstart=yes') if instr else ()
    if not separate:
        with redis_server('script-ab-') as (sock, pid):
            c = Conn(sock)
            return run({'old': c, 'new': c}, {'old': pid, 'new': pid}, texts, rounds, memory,
                       only)
    # With --separate (and under callgrind) each version has a redis-server
    # (a Lua state) of its own: in one state the collector's work for one
    # version's garbage is done, and counted, in whichever version's call
    # it falls.
    with redis_server('script-ab-old-', wrap) as (so, po), \
            redis_server('script-ab-new-', wrap) as (sn, pn):
        return run({'old': Conn(so), 'new': Conn(sn)}, {'old': po, 'new': pn}, texts, rounds,
                   memory, only, instr)


def callgrind_instructions(pid):
    """Instructions the callgrind-run process executed since the last call:
    a dump of the counts (their 'summary:' line), then zeroed."""
    subprocess.run(['callgrind_control', '--dump', str(pid)], capture_output=True, check=True)
    d = os.path.dirname(os.readlink('/proc/%d/cwd' % pid) + '/')
    dumps = sorted((f for f in os.listdir(d) if f.startswith('cg.out.')),
                   key=lambda f: int(f.split('.')[2].split('-')[0]))
    with open(os.path.join(d, dumps[-1])) as f:
        n = next(int(l.split()[1]) for l in f if l.startswith('summary:'))
    for f in dumps:
        os.unlink(os.path.join(d, f))
    subprocess.run(['callgrind_control', '--zero', str(pid)], capture_output=True, check=True)
    return n


def run(C, pids, texts, rounds, memory, only=None, instr=False):
    """C, pids: each version's connection and redis-server (the same one
    unless --separate or --instructions)."""
    seen = {'old': 0, 'new': 0}

    def cpu_us(v):
        if instr:  # thousands of instructions so far, in the "us" column's place
            seen[v] += callgrind_instructions(pids[v])
            return seen[v] / 1000
        with open('/proc/%d/schedstat' % pids[v]) as f:
            return int(f.read().split()[0]) / 1000

    V = {}
    for v in ('old', 'new'):
        if b'presence_main' in texts[v]:
            name = 'ab_' + v
            C[v].cmd('FUNCTION', 'LOAD', 'REPLACE', b'#!lua name=' + name.encode() + b'\n' + texts[v] +
                  b"\nredis.register_function('" + name.encode() + b"', presence_main)\n")
            V[v] = ('FCALL', name)
        else:
            V[v] = ('EVALSHA', C[v].cmd('SCRIPT', 'LOAD', texts[v]).decode())
    ep = {}

    def call(v, op, *a, prefix='ab'):
        return V[v] + (0, op) + header(texts[v], prefix + v + ':', 'inst-a',
                                       ep.get(prefix + v, 0)) + a

    for v in V:
        ep['ab' + v] = C[v].cmd(*call(v, 'register', 1, 0))[1][0]

    def writes(v, kind, r, i):
        sid, u = sid_of(v, 'm-%d-%d' % (r, i)), 'u%d' % i
        return {'connect': ['connect', sid, u, '', 0], 'idle': ['status', sid, u, 2, 3],
                'online': ['status', sid, u, 1, 3], 'end': ['end', sid, u, 2]}[kind]

    def batch_mix(v, r):
        for kind in ('connect', 'idle', 'online', 'end'):
            w = []
            for i in range(N):
                w += writes(v, kind, r, i)
            C[v].pipe([call(v, 'batch', N, *w)])
        return 4 * N

    def status_flips(v, r):
        # the same 60 sessions (held from the setup below) idle, then
        # online: status changes alone, the commonest write
        for st in (2, 1):
            w = []
            for i in range(N):
                w += ['status', sid_of(v, 'flip-%d' % i), 'fu%d' % i, st, 3]
            C[v].pipe([call(v, 'batch', N, *w)])
        return 2 * N

    def unbatched(v, r):
        for k in range(0, 480, 16):
            C[v].pipe([call(v, 'connect', sid_of(v, 'c%d-%d-%d' % (r, k, j)),
                            'cu%d-%d-%d' % (r, k, j), '', 0)
                    for j in range(16)])
        return 480

    def query(v, r):
        for k in range(0, 480, 16):
            C[v].pipe([call(v, 'q_user', 'u%d' % j) for j in range(16)])
        return 480

    def channels(v, r):
        for op in ('join', 'leave'):
            w = []
            for i in range(N):
                sid, u, ch = sid_of(v, 'ch-%d' % i), 'cu%d' % (i % 20), 'room-%d' % (i % 50)
                w += ['join', sid, u, ch, '={"n":1}', 0] if op == 'join' else ['leave', sid, u, ch]
            C[v].pipe([call(v, 'batch', N, *w)])
        return 2 * N

    def member_brief(v, r):
        # the same rooms, listed as a WebSocket snapshot asks (no sessions)
        for k in range(0, 480, 16):
            C[v].pipe([call(v, 'q_mbrief', 'mroom-%d' % ((k + j) % 30), '', 100) for j in range(16)])
        return 480

    def cycle(v, r):
        # the Centrifugo comparison's cycle, 15 at a time: a session connects,
        # joins its own channel and the next one's, ends (its leaves in it)
        w, e = [], []
        for i in range(15):
            sid, u = sid_of(v, 'cy-%d-%d' % (r, i)), 'cyu%d' % i
            w += ['connect', sid, u, '', 0, 'join', sid, u, 'pr:%d' % i, '', 0,
                  'join', sid, u, 'pr:%d' % (i + 1), '', 0]
            e += ['end', sid, u, 2]
        C[v].pipe([call(v, 'batch', 45, *w)])
        C[v].pipe([call(v, 'batch', 15, *e)])
        return 2 * 2 * 15  # per join or leave, as the comparison counts

    def member_query(v, r):
        # a join's snapshot: 30 rooms of 2 members, one session each
        for k in range(0, 480, 16):
            C[v].pipe([call(v, 'q_members', 'mroom-%d' % ((k + j) % 30), '', 100) for j in range(16)])
        return 480

    for v in V:
        # A population first: 1,500 sessions held throughout, so that the
        # session index is the hashtable a deployment has, not a listpack
        # of the few sessions a row holds (Redis keeps a hash of up to 512
        # entries as a listpack, where each HSETNX or HDEL is a scan of
        # it: ~35,000 instructions a connect at 240 entries). 1,500 and
        # the rows' sessions stay below the next growth of its table
        # (2,048), whose incremental rehash would be counted in the rows.
        for k in range(0, 1500, N):
            w = []
            for i in range(k, k + N):
                w += ['connect', 'bg-%08d-0000-4000-8000-000000000000' % i, 'bgu%d' % i, '', 0]
            C[v].pipe([call(v, 'batch', N, *w)])
    for v in V:  # status_flips' sessions, each its own user
        w = []
        for i in range(N):
            w += ['connect', sid_of(v, 'flip-%d' % i), 'fu%d' % i, '', 0]
        C[v].pipe([call(v, 'batch', N, *w)])
    for v in V:  # the channel runs' sessions, and the member query's rooms
        w = []
        for i in range(N):
            w += ['connect', sid_of(v, 'ch-%d' % i), 'cu%d' % (i % 20), '', 0]
        C[v].pipe([call(v, 'batch', N, *w)])
        w = []
        for i in range(N):
            w += ['join', sid_of(v, 'ch-%d' % i), 'cu%d' % (i % 20), 'mroom-%d' % (i % 30),
                  '={"n":1}', 0]
        C[v].pipe([call(v, 'batch', N, *w)])

    rows = [('batched_session_op', 'session op in a batch of 60 (connect, idle, online, end)', batch_mix),
            ('status_op', 'status change in a batch of 60 (idle, then online)', status_flips),
            ('unbatched_connect', 'one unbatched connect (16 pipelined)', unbatched),
            ('user_query', 'one user query (q_user)', query),
            ('channel_op', 'channel join or leave in a batch of 60', channels),
            ('member_query', "a 2-member room's members (q_members, a join's snapshot)", member_query),
            ('cycle', 'connect, 2 joins, end (per join or leave, as the Centrifugo row)', cycle),
            ('member_brief', "the same room's members as a snapshot asks (q_mbrief)", member_brief)]
    unit = 'k instr' if instr else 'us'
    key_all = 'k_instructions' if instr else 'us_redis_cpu'
    out = {'rounds': rounds, 'old': V['old'][0], 'new': V['new'][0],
           'loadavg1': os.getloadavg()[0], key_all: {}}
    for key, label, fn in rows:
        if only and key not in only:
            continue
        per = {'old': [], 'new': []}
        for r in range(rounds):
            for v in (('old', 'new') if r % 2 == 0 else ('new', 'old')):
                t0 = cpu_us(v)
                n = fn(v, r)
                per[v].append((cpu_us(v) - t0) / n)
        mo, mn = statistics.median(per['old']), statistics.median(per['new'])
        # The mean beside the median: Lua's collector runs in steps that
        # fall in some rounds and not in others (redis-server asks for one
        # every 50th call), which the median of the rounds leaves out and
        # the mean shares out; a change that allocates less shows there.
        ao, an = statistics.mean(per['old']), statistics.mean(per['new'])
        out[key_all][key] = {
            'old': round(mo, 2), 'old_range': [round(min(per['old']), 2), round(max(per['old']), 2)],
            'new': round(mn, 2), 'new_range': [round(min(per['new']), 2), round(max(per['new']), 2)],
            'new_over_old': round(mn / mo, 3),
            'old_mean': round(ao, 2), 'new_mean': round(an, 2),
            'new_over_old_mean': round(an / ao, 3)}
        print('%-58s old %7.2f %s  new %7.2f %s  new/old %.3f (means %.3f)' % (
            label, mo, unit, mn, unit, mn / mo, an / ao), file=sys.stderr)
    if memory > 0:
        out['redis_bytes_per_session'] = bytes_per_session(C, call, ep, memory)
    out['loadavg1_end'] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


def bytes_per_session(C, call, ep, n):
    """used_memory added by n connects under a fresh prefix of each version's, per session
    (the log included: at n below the log's cap of 100,000 events each session's share is its
    connect's events)."""
    import uuid

    def used(c):
        info = c.cmd('INFO', 'memory').decode()
        return int(info.split('used_memory:')[1].split('\r\n')[0])

    res = {}
    for v in ('old', 'new'):
        c = C[v]
        ep['mem' + v] = c.cmd(*call(v, 'register', 1, 0, prefix='mem'))[1][0]
        m0 = used(c)
        for k in range(0, n, 60):
            w = []
            for _ in range(min(60, n - k)):
                w += ['connect', sid_of(v, str(uuid.uuid4())), str(uuid.uuid4()), '', 0]
            c.pipe([call(v, 'batch', len(w) // 5, *w, prefix='mem')])
        log = c.cmd('MEMORY', 'USAGE', 'mem%s:log' % v, 'SAMPLES', '0') or 0
        total = (used(c) - m0) / n
        res[v] = {'with_log': round(total, 1), 'without_log': round(total - log / n, 1)}
        print('%-58s %s %7.1f B (without the log %.1f B)' % (
            'Redis memory per session, %d sessions, log included' % n, v, total, total - log / n),
            file=sys.stderr)
    return res


if __name__ == '__main__':
    sys.exit(main())
