// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// BackendOptions of NewBackend.
type BackendOptions struct {
	URL    string // presenced's base URL, http(s)://host:port (ws(s):// too)
	APIKey string
	Origin string // a stable name of this process (the same after a restart)
	// Retry is the first reconnect delay (250 ms), doubling up to MaxRetry (10 s).
	Retry, MaxRetry time.Duration
	MaxOps          int // ops per frame at most (1000, and at most the server's max_ops: presenced spends less per op in frames of 1000 than of 10,000)
	// OnRejected: an op presenced refused (the protocol's per-op code); a
	// Flush returns after it. The callbacks run on the connection's reader:
	// they may call Open, Close and the like, not Flush or End (which wait on it).
	OnRejected func(op BackendOp, code, message string)
	// OnEnded: a session ended by someone else (a kick); it has left Sessions.
	OnEnded func(session, user, reason string)
	// OnLeft: a session removed from a channel by presenced's API
	// (RemoveFromChannel; reason "kicked"). The channel has left the
	// session's Channels, so no re-assert joins it again, also when the
	// removal came while the connection was down (presenced tells it before
	// the next welcome).
	OnLeft func(session, user, channel, reason string)
	// OnLeftNotice is OnLeft with the whole notice: a join or update that
	// Redis refused after its ack (reason "refused") has the op's Code
	// (CodeTooManyChannels, CodeNoSession, CodeNotJoined, CodeInternal) and
	// a Message, which OnLeft's arguments cannot carry. When set, OnLeft is
	// not called.
	OnLeftNotice func(LeftNotice)
	// OnError: a lost connection or a refused frame (it reconnects by itself).
	OnError func(error)
	// OnConnect: every welcome, the first and each reconnect's, once the
	// re-assert is queued (the Node SDK's 'ready' event): the end of an
	// outage, for a log or a metric. It runs on the reader too.
	OnConnect func(BackendWelcome)
}

// LeftNotice is a session of this origin taken out of a channel
// (protocol.md 5.4): by the API (RemoveFromChannel, Reason "kicked"), or a
// join or update that Redis refused after its ack (Reason "refused", with
// the op's Code and Message).
type LeftNotice struct {
	Session, User, Channel string
	Reason                 string
	Code, Message          string // of a refused one; "" for a removal
}

// BackendOp is one operation of a batch (protocol.md section 5.2).
type BackendOp struct {
	Op      string          `json:"op"`
	Session string          `json:"session"`
	User    string          `json:"user,omitempty"`
	Status  string          `json:"status,omitempty"`
	Meta    json.RawMessage `json:"meta,omitempty"`
	Device  string          `json:"device,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// MarshalJSON writes "user" on an open even when empty (then presenced
// answers bad_user_id, as for any invalid id), and leaves it out elsewhere.
func (op BackendOp) MarshalJSON() ([]byte, error) {
	type plain BackendOp
	if op.Op != "open" || op.User != "" {
		return json.Marshal(plain(op))
	}
	return json.Marshal(struct {
		plain
		User string `json:"user"`
	}{plain(op), ""})
}

// HeldSession is a session this process reports.
type HeldSession struct {
	User     string
	Status   string
	Meta     json.RawMessage
	Device   string
	Channels map[string]json.RawMessage
}

// BackendWelcome is the server's first frame.
type BackendWelcome struct {
	Protocol    int    `json:"protocol"`
	Origin      string `json:"origin"`
	Resumed     bool   `json:"resumed"`
	Sessions    int    `json:"sessions"`
	LeaseMS     int64  `json:"lease_ms"`
	ResumeMS    int64  `json:"resume_ms"`
	HeartbeatMS int64  `json:"heartbeat_ms"`
	MaxOps      int    `json:"max_ops"`
}

// Backend is the backend session connection (protocol.md section 5): this
// process's sessions, reported over one WebSocket, batched and acknowledged.
// It keeps the list itself and re-asserts it (sync, then the channel joins)
// after every reconnect, so presenced emits only net differences; operations
// made while disconnected just change the list. Safe for concurrent use.
type Backend struct {
	o BackendOptions

	mu       sync.Mutex
	sessions map[string]*HeldSession
	leftDown map[string]map[string]bool
	queue    []BackendOp
	inflight map[int64][]BackendOp
	syncSent map[int64][]byte // sync frames not yet acknowledged, to send again when rate limited
	seq      int64
	conn     *websocket.Conn
	ready    bool
	closed   bool
	kick     chan struct{}
	acked    *sync.Cond
	welcome  *BackendWelcome
	connects int
	cancel   context.CancelFunc
	done     chan struct{}
	welcomed chan struct{} // closed at the first welcome of this start (a second Connect waits on it)
	startErr error         // the refusal that ended this start before its welcome
	// Deprecated: OpsAcked and OpErrors change under the connection's lock;
	// reading them while it runs is a data race. Read Stats instead.
	OpsAcked int64
	OpErrors int64
	opsSent  int64
	connGen  int
}

// NewBackend prepares a connection; Connect starts it.
func NewBackend(o BackendOptions) *Backend {
	if o.Retry == 0 {
		o.Retry = 250 * time.Millisecond
	}
	if o.MaxRetry == 0 {
		o.MaxRetry = 10 * time.Second
	}
	if o.MaxOps == 0 {
		o.MaxOps = 1000
	}
	b := &Backend{o: o, sessions: map[string]*HeldSession{}, leftDown: map[string]map[string]bool{},
		inflight: map[int64][]BackendOp{}, syncSent: map[int64][]byte{}, kick: make(chan struct{}, 1)}
	b.acked = sync.NewCond(&b.mu)
	return b
}

func (b *Backend) wsURL() string {
	u := strings.TrimRight(b.o.URL, "/")
	if strings.HasPrefix(u, "http") {
		u = "ws" + strings.TrimPrefix(u, "http")
	}
	return u + "/v1/backend?origin=" + url.QueryEscape(b.o.Origin)
}

// backendURL: the Backend takes ws(s):// too, as the Node and Python SDKs'
// BackendConnection do (it answered CodeBadURL to ws://127.0.0.1:7070).
func backendURL(base string) *Error {
	if strings.HasPrefix(base, "ws://") || strings.HasPrefix(base, "wss://") {
		return checkURL("http" + strings.TrimPrefix(base, "ws"))
	}
	return checkURL(base)
}

// Connect starts the connection (reconnecting until End) and waits for the
// first welcome. When it fails (ctx ended first, or presenced refused the key:
// an *Error with the daemon's code, e.g. CodeUnauthorized) nothing goes on
// dialing, and Connect may be called again. A Connect while started waits for
// the same connection's welcome (or says why it stopped); after End, make a
// new Backend.
func (b *Backend) Connect(ctx context.Context) (*BackendWelcome, error) {
	if err := backendURL(b.o.URL); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.cancel != nil {
		if b.closed {
			b.mu.Unlock()
			return nil, errEndedBackend
		}
		// Started already (two start-up paths): wait for the same
		// connection's welcome, as the Node and Python SDKs' connect() does;
		// it was an error, unlike theirs.
		welcomed, done := b.welcomed, b.done
		b.mu.Unlock()
		return b.waitStarted(ctx, welcomed, done)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan struct{}), make(chan error, 1)
	b.cancel, b.done, b.welcomed, b.startErr = cancel, done, make(chan struct{}), nil
	b.mu.Unlock()
	go b.run(rctx, done, ready)
	var err error
	select {
	case err = <-ready:
		if err == nil {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.welcome, nil
		}
	case <-ctx.Done():
		err = ctx.Err()
	case <-done: // End from another goroutine, or a refusal reported on ready
		select {
		case err = <-ready:
		default:
		}
		if err == nil {
			err = errEnded
		}
	}
	cancel()
	<-done
	b.mu.Lock()
	if !b.closed { // after End, no new start
		b.cancel = nil
	}
	b.mu.Unlock()
	return nil, err
}

// waitStarted: a second Connect's wait for the first one's welcome; the
// error that stopped that start (taken over, refused) rather than the
// welcome of before once it has stopped.
func (b *Backend) waitStarted(ctx context.Context, welcomed, done chan struct{}) (*BackendWelcome, error) {
	select {
	case <-done:
	case <-welcomed:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-done:
		if b.startErr != nil {
			return nil, b.startErr
		}
		return nil, errEnded
	default:
		return b.welcome, nil
	}
}

var errEnded = errors.New("presence: Backend.Connect: End was called before the first welcome")

var errEndedBackend = errors.New("presence: Backend.Connect: End was called; make a new Backend")

func (b *Backend) run(ctx context.Context, done chan struct{}, ready chan error) {
	defer close(done)
	delay := b.o.Retry
	first := true
	for ctx.Err() == nil {
		hdr := http.Header{"Authorization": {bearer(b.o.APIKey)}}
		// Bounded: a host that takes the connection and never answers the
		// upgrade (stalled, or gone behind a proxy) is tried again.
		dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
		c, res, err := websocket.Dial(dctx, b.wsURL(), &websocket.DialOptions{HTTPHeader: hdr})
		dcancel()
		if err != nil {
			// 409 bad_origin: a reserved origin name ("http", the origin of
			// PUT /v1/sessions), which was retried for ever.
			if res != nil && (res.StatusCode == 401 || res.StatusCode == 400 || res.StatusCode == 409) {
				// The daemon's code from the body (the dial keeps its first
				// KiB), as the HTTP API's errors have it: retrying cannot heal it.
				body, _ := io.ReadAll(res.Body)
				e := decodeError(res.StatusCode, body)
				e.Err = err
				b.mu.Lock()
				b.startErr = e // for a later Connect
				b.mu.Unlock()
				if first {
					ready <- e
				} else if b.o.OnError != nil {
					b.o.OnError(e)
				}
				return
			}
			if b.o.OnError != nil && ctx.Err() == nil {
				b.o.OnError(err)
			}
		} else {
			c.SetReadLimit(-1)
			delay = b.o.Retry
			if b.serve(ctx, c, &first, ready) {
				b.mu.Lock()
				b.startErr = b.takenOverError(nil) // for a later Connect
				b.mu.Unlock()
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if delay *= 2; delay > b.o.MaxRetry {
			delay = b.o.MaxRetry
		}
	}
}

// serve reads one connection until it ends; true when the origin was taken
// over (close 4009): only another process can take over a live connection
// of ours (a reconnect of our own replaces a dead one), and taking it back
// would start a loop in which each sync ends the other's sessions, so the
// newer connection keeps it and this Backend stops, as the Node SDK's does.
func (b *Backend) serve(ctx context.Context, c *websocket.Conn, first *bool, ready chan error) (takenOver bool) {
	b.mu.Lock()
	b.conn = c
	b.connGen++
	b.mu.Unlock()
	writerDone, pingerDone := make(chan struct{}), make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	go func() { defer close(writerDone); b.writer(cctx, c) }()
	var silent int32 // set by the pinger when presenced stopped answering
	pinging := false
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			if atomic.LoadInt32(&silent) != 0 {
				err = &Error{Code: CodeNetwork, Message: "presenced did not answer a ping: reconnecting", Err: err}
			}
			if takenOver {
				break // reported with the error frame before the close
			}
			if websocket.CloseStatus(err) == 4009 {
				takenOver = true
				err = b.takenOverError(err)
			}
			// End's own close (after bye, or the plain close) is no error.
			b.mu.Lock()
			ending := b.closed
			b.mu.Unlock()
			if b.o.OnError != nil && ctx.Err() == nil && !ending {
				b.o.OnError(err)
			}
			break
		}
		var m struct {
			Type    string `json:"type"`
			Seq     int64  `json:"seq"`
			Session string `json:"session"`
			Channel string `json:"channel"`
			Reason  string `json:"reason"`
			Code    string `json:"code"`
			Message string `json:"message"`
			RetryMS int64  `json:"retry_ms"`
			Errors  []struct {
				Index   int    `json:"index"`
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"errors"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch m.Type {
		case "welcome":
			var w BackendWelcome
			json.Unmarshal(data, &w)
			b.mu.Lock()
			b.welcome = &w
			b.connects++
			if w.MaxOps > 0 && w.MaxOps < b.o.MaxOps {
				b.o.MaxOps = w.MaxOps
			}
			b.reassertLocked()
			b.ready = true
			b.mu.Unlock()
			if !pinging {
				pinging = true
				go func() { defer close(pingerDone); b.pinger(cctx, c, w.HeartbeatMS, &silent) }()
			}
			b.poke()
			if b.o.OnConnect != nil {
				b.o.OnConnect(w)
			}
			if *first {
				*first = false
				b.mu.Lock()
				close(b.welcomed)
				b.mu.Unlock()
				ready <- nil
			}
		case "ack":
			b.mu.Lock()
			ops, ok := b.inflight[m.Seq]
			delete(b.syncSent, m.Seq)
			type rej struct {
				op         BackendOp
				code, text string
			}
			var rejected []rej
			if ok {
				b.OpsAcked += int64(len(ops))
				for _, e := range m.Errors {
					if e.Index < len(ops) && ops[e.Index].Op == "leave" && e.Code == "not_joined" {
						continue // a leave sent again after a reconnect: left already
					}
					if e.Index < len(ops) {
						b.OpErrors++
						b.undoLocked(ops[e.Index], e.Code)
						rejected = append(rejected, rej{ops[e.Index], e.Code, e.Message})
					}
				}
			}
			b.mu.Unlock()
			// OnRejected runs before the batch counts as acknowledged, so that
			// a Flush returns after it (outside the lock: it may call back).
			if b.o.OnRejected != nil {
				for _, r := range rejected {
					b.o.OnRejected(r.op, r.code, r.text)
				}
			}
			b.mu.Lock()
			delete(b.inflight, m.Seq)
			b.acked.Broadcast()
			b.mu.Unlock()
		case "ended":
			b.mu.Lock()
			user := ""
			if s := b.sessions[m.Session]; s != nil {
				user = s.User
			}
			delete(b.sessions, m.Session)
			b.mu.Unlock()
			if b.o.OnEnded != nil {
				b.o.OnEnded(m.Session, user, m.Reason)
			}
		case "left":
			// A removal by presenced's API: out of the list, or the next
			// re-assert would join the channel again. presenced sends those
			// of a detached origin before the welcome, so the re-assert that
			// the welcome starts no longer carries them.
			b.mu.Lock()
			user, had := "", false
			if s := b.sessions[m.Session]; s != nil {
				if _, had = s.Channels[m.Channel]; had {
					user = s.User
					delete(s.Channels, m.Channel)
					delete(b.leftDown[m.Session], m.Channel)
				}
			}
			b.mu.Unlock()
			if had && b.o.OnLeftNotice != nil {
				b.o.OnLeftNotice(LeftNotice{Session: m.Session, User: user, Channel: m.Channel,
					Reason: m.Reason, Code: m.Code, Message: m.Message})
			} else if had && b.o.OnLeft != nil {
				b.o.OnLeft(m.Session, user, m.Channel, m.Reason)
			}
		case "error":
			if m.Code == "origin_taken_over" { // the close 4009 follows
				takenOver = true
				if b.o.OnError != nil {
					b.o.OnError(b.takenOverError(nil))
				}
				continue
			}
			b.mu.Lock()
			if frame, ok := b.syncSent[m.Seq]; ok && m.Code == "rate_limited" {
				// The same sync frame again later, on this connection (a
				// reconnect re-asserts anew): dropped, its sessions were never
				// opened again after a restart of presenced. Still in flight,
				// so a Flush waits for it.
				gen := b.connGen
				time.AfterFunc(time.Duration(m.RetryMS+1)*time.Millisecond, func() {
					b.mu.Lock()
					c := b.conn
					if b.connGen != gen || c == nil || b.syncSent[m.Seq] == nil {
						c = nil
					}
					b.mu.Unlock()
					if c != nil {
						c.Write(context.Background(), websocket.MessageText, frame)
					}
				})
			} else if ops, ok := b.inflight[m.Seq]; ok {
				delete(b.inflight, m.Seq)
				delete(b.syncSent, m.Seq)
				if m.Code == "rate_limited" {
					var again []BackendOp
					for _, op := range ops {
						if op.Op != "sync" {
							again = append(again, op)
						}
					}
					b.queue = append(again, b.queue...)
					time.AfterFunc(time.Duration(m.RetryMS+1)*time.Millisecond, b.poke)
				}
				b.acked.Broadcast()
			}
			b.mu.Unlock()
			if b.o.OnError != nil {
				// An *Error with the frame's code (CodeRateLimited,
				// CodeBadField...), for errors.As and IsCode, as the Node
				// SDK's 'error' has it; it was a plain string.
				b.o.OnError(&Error{Code: m.Code, Message: "backend frame refused: " + m.Message})
			}
		}
	}
	cancel()
	<-writerDone
	if pinging {
		<-pingerDone
	}
	b.mu.Lock()
	// Unsent or unacknowledged ops are in the list: the re-assert carries them,
	// all but a leave (a resumed origin keeps its memberships): keep those.
	unsent := b.queue
	for _, ops := range b.inflight {
		unsent = append(unsent, ops...)
	}
	for _, op := range unsent {
		if op.Op == "leave" && b.sessions[op.Session] != nil {
			if b.leftDown[op.Session] == nil {
				b.leftDown[op.Session] = map[string]bool{}
			}
			b.leftDown[op.Session][op.Channel] = true
		}
	}
	b.ready = false
	b.conn = nil
	b.queue = nil
	b.inflight = map[int64][]BackendOp{}
	b.syncSent = map[int64][]byte{}
	b.acked.Broadcast()
	b.mu.Unlock()
	return takenOver
}

const dialTimeout = 10 * time.Second

// pinger pings presenced every heartbeat of its welcome and drops the
// connection when a pong does not come within one: a host that vanished
// or stalled without closing it would otherwise leave the Backend on it for
// ever (its sessions ending origin_lost while it thinks it reports them).
func (b *Backend) pinger(ctx context.Context, c *websocket.Conn, heartbeatMS int64, silent *int32) {
	every := time.Duration(heartbeatMS) * time.Millisecond
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := c.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				atomic.StoreInt32(silent, 1)
				c.CloseNow()
			}
			return
		}
	}
}

func (b *Backend) takenOverError(cause error) *Error {
	return &Error{Code: CodeOriginTakenOver, Message: "origin " + b.o.Origin +
		" taken over by another connection (is another process using this origin?): stopped", Err: cause}
}

func (b *Backend) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// writer sends the queue as batches whenever poked.
func (b *Backend) writer(ctx context.Context, c *websocket.Conn) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		for {
			b.mu.Lock()
			if !b.ready || len(b.queue) == 0 {
				b.mu.Unlock()
				break
			}
			n := len(b.queue)
			if n > b.o.MaxOps {
				n = b.o.MaxOps
			}
			ops := b.queue[:n:n]
			b.queue = b.queue[n:]
			b.seq++
			seq := b.seq
			b.inflight[seq] = ops
			b.opsSent += int64(n)
			b.mu.Unlock()
			frame, _ := json.Marshal(map[string]any{"type": "batch", "seq": seq, "ops": ops})
			if err := c.Write(ctx, websocket.MessageText, frame); err != nil {
				return
			}
		}
	}
}

func (b *Backend) undoLocked(op BackendOp, code string) {
	s := b.sessions[op.Session]
	switch {
	case op.Op == "open" && code != "internal":
		if s != nil && s.User == op.User {
			delete(b.sessions, op.Session)
		}
	case op.Op == "join":
		if s != nil {
			delete(s.Channels, op.Channel)
		}
	case code == "no_session" || code == "session_owned":
		delete(b.sessions, op.Session)
	}
}

// reassertLocked sends the whole list (sync frames) and queues the channel joins first.
func (b *Backend) reassertLocked() {
	type item struct {
		Session string          `json:"session"`
		User    string          `json:"user"`
		Status  string          `json:"status"`
		Meta    json.RawMessage `json:"meta,omitempty"`
		Device  string          `json:"device,omitempty"`
	}
	items := make([]item, 0, len(b.sessions))
	for id, s := range b.sessions {
		items = append(items, item{id, s.User, s.Status, s.Meta, s.Device})
	}
	for i := 0; ; i += b.o.MaxOps {
		j := i + b.o.MaxOps
		if j > len(items) {
			j = len(items)
		}
		b.seq++
		ops := make([]BackendOp, j-i)
		for k, it := range items[i:j] {
			ops[k] = BackendOp{Op: "sync", Session: it.Session, User: it.User, Status: it.Status}
		}
		b.inflight[b.seq] = ops
		b.opsSent += int64(len(ops))
		frame, _ := json.Marshal(map[string]any{"type": "sync", "seq": b.seq, "sessions": items[i:j], "done": j >= len(items)})
		b.syncSent[b.seq] = frame
		// Written under the lock, from the reader goroutine: the sync precedes
		// every op of this connection, and no op can slip between the list
		// read above and the ready flag set after it.
		err := b.conn.Write(context.Background(), websocket.MessageText, frame)
		if err != nil || j >= len(items) {
			break
		}
	}
	var ops []BackendOp
	for id, chans := range b.leftDown {
		if b.sessions[id] != nil {
			for ch := range chans {
				ops = append(ops, BackendOp{Op: "leave", Session: id, Channel: ch})
			}
		}
	}
	b.leftDown = map[string]map[string]bool{}
	for id, s := range b.sessions {
		for ch, data := range s.Channels {
			ops = append(ops, BackendOp{Op: "join", Session: id, Channel: ch, Data: data})
		}
	}
	b.queue = append(ops, b.queue...)
}

func (b *Backend) pushLocked(op BackendOp) {
	if b.ready {
		b.queue = append(b.queue, op)
		b.poke()
	}
}

func randomID() string {
	var x [16]byte
	rand.Read(x[:])
	return hex.EncodeToString(x[:])
}

// OpenOptions of Open.
type OpenOptions struct {
	Session string // "" : a random id
	Status  string // "online" (default) or "idle"
	Meta    map[string]any
	Device  string
}

// Open starts a session of this origin and returns its id; "" (nothing
// done) for a Status other than online or idle.
func (b *Backend) Open(userID string, o OpenOptions) string {
	status := o.Status
	if status == "" {
		status = "online"
	}
	if !validStatus(status) {
		return ""
	}
	id := o.Session
	if id == "" {
		id = randomID()
	}
	var meta json.RawMessage
	if o.Meta != nil {
		meta, _ = json.Marshal(o.Meta)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sessions[id] = &HeldSession{User: userID, Status: status, Meta: meta, Device: o.Device, Channels: map[string]json.RawMessage{}}
	op := BackendOp{Op: "open", Session: id, User: userID, Meta: meta, Device: o.Device}
	if status != "online" {
		op.Status = status
	}
	b.pushLocked(op)
	return id
}

// validStatus: a status presenced takes for a session. Another one must not
// enter the list: presenced refuses it, and the re-assert after the next
// reconnect would carry it, be refused again and so end the session.
func validStatus(status string) bool { return status == "online" || status == "idle" }

// SetStatus: "online" or "idle" (the seed's setStatusOnline / setStatusIdle);
// false when there is no such session or the status is neither.
func (b *Backend) SetStatus(session, status string) bool {
	if !validStatus(status) {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[session]
	if s == nil {
		return false
	}
	if s.Status != status {
		s.Status = status
		b.pushLocked(BackendOp{Op: "status", Session: session, Status: status})
	}
	return true
}

// Close ends a session.
func (b *Backend) Close(session string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sessions[session] == nil {
		return false
	}
	delete(b.sessions, session)
	delete(b.leftDown, session)
	b.pushLocked(BackendOp{Op: "close", Session: session})
	return true
}

// Join a channel with data (nil: none); joining again replaces the data.
func (b *Backend) Join(session, channel string, data map[string]any) bool {
	return b.setChannel("join", session, channel, data)
}

// Update a joined channel's data.
func (b *Backend) Update(session, channel string, data map[string]any) bool {
	return b.setChannel("update", session, channel, data)
}

// setChannel records a join or an update in the list and queues it; an update
// of a channel the session has not joined is refused here already.
func (b *Backend) setChannel(op, session, channel string, data map[string]any) bool {
	raw := json.RawMessage("null")
	if data != nil {
		raw, _ = json.Marshal(data)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[session]
	if s == nil {
		return false
	}
	if _, ok := s.Channels[channel]; !ok && op == "update" {
		return false
	}
	s.Channels[channel] = raw
	b.pushLocked(BackendOp{Op: op, Session: session, Channel: channel, Data: raw})
	return true
}

// Leave a channel.
func (b *Backend) Leave(session, channel string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[session]
	if s == nil {
		return false
	}
	if _, ok := s.Channels[channel]; !ok {
		return false
	}
	delete(s.Channels, channel)
	if b.ready {
		b.pushLocked(BackendOp{Op: "leave", Session: session, Channel: channel})
	} else {
		if b.leftDown[session] == nil {
			b.leftDown[session] = map[string]bool{}
		}
		b.leftDown[session][channel] = true
	}
	return true
}

// Sessions is a copy of the list of sessions this process holds.
func (b *Backend) Sessions() map[string]HeldSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]HeldSession, len(b.sessions))
	for id, s := range b.sessions {
		c := *s
		// A map of its own: the session's was handed out, so a Join or a
		// Leave from another goroutine changed the copy under its reader
		// (a concurrent map read and write, which ends the process).
		c.Channels = make(map[string]json.RawMessage, len(s.Channels))
		for ch, data := range s.Channels {
			c.Channels[ch] = data
		}
		out[id] = c
	}
	return out
}

// BackendStats counts the operations of a Backend (sync items included), as
// the Node and Python SDKs' stats.
type BackendStats struct {
	OpsSent  int64 // sent in a batch or sync frame (again after a reconnect)
	OpsAcked int64 // acknowledged, refused ones included
	OpErrors int64 // refused (OnRejected)
}

// Stats: the counts so far, read under the lock (the OpsAcked and OpErrors
// fields could not be read safely while connected, and nothing counted the
// operations sent).
func (b *Backend) Stats() BackendStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BackendStats{OpsSent: b.opsSent, OpsAcked: b.OpsAcked, OpErrors: b.OpErrors}
}

// Connects counts the welcomes received.
func (b *Backend) Connects() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.connects
}

// Flush waits until every operation so far is acknowledged (or the connection
// was lost: the re-assert carries them), or ctx ends.
func (b *Backend) Flush(ctx context.Context) error {
	b.poke()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			b.mu.Lock()
			b.acked.Broadcast()
			b.mu.Unlock()
		case <-stop:
		}
	}()
	b.mu.Lock()
	defer b.mu.Unlock()
	// Ops still queued get a seq above the current one when sent: wait for those too.
	for ctx.Err() == nil && b.ready && (len(b.queue) > 0 || len(b.inflight) > 0) {
		b.acked.Wait()
	}
	return ctx.Err()
}

// Reconnect drops the connection (tests, failover): it reconnects and re-asserts.
func (b *Backend) Reconnect() {
	b.mu.Lock()
	c := b.conn
	b.mu.Unlock()
	if c != nil {
		c.CloseNow()
	}
}

// End stops. bye ends every session of this origin now; otherwise presenced
// keeps them for its resume window (a restarted process with the same origin
// takes them back). ctx bounds the wait for presenced; its error if it ended.
func (b *Backend) End(ctx context.Context, bye bool) error {
	b.Flush(ctx)
	b.mu.Lock()
	c := b.conn
	b.closed = true
	cancel, done := b.cancel, b.done
	b.mu.Unlock()
	if c != nil {
		if bye {
			c.Write(ctx, websocket.MessageText, []byte(`{"type":"bye"}`))
			// the server closes with 1000 after ending the sessions
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			for {
				b.mu.Lock()
				gone := b.conn == nil
				b.mu.Unlock()
				if gone || waitCtx.Err() != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
		} else {
			// Close waits up to 5 s for presenced's close frame, whatever ctx
			// says: on a stalled presenced, ctx ends the wait by ending the
			// reader, whose cancelled Read drops the connection (presenced
			// detaches the origin all the same).
			closed := make(chan struct{})
			go func() { defer close(closed); c.Close(websocket.StatusNormalClosure, "") }()
			select {
			case <-closed:
			case <-ctx.Done():
				if cancel != nil {
					cancel()
				}
				c.CloseNow()
				<-closed
			}
		}
	}
	if cancel != nil {
		cancel()
		<-done
	}
	return ctx.Err()
}
