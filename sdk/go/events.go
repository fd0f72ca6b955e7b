// SPDX-License-Identifier: MIT

package presence

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event is one event of the log (GET /v1/events, webhooks). Fields beyond
// these (of later protocol additions) are in Raw.
type Event struct {
	Seq        int64           `json:"seq"`
	Type       string          `json:"type"`
	TS         int64           `json:"ts"`
	Reason     string          `json:"reason"`
	UserID     string          `json:"user_id,omitempty"`
	SessionID  string          `json:"session_id,omitempty"`
	From       string          `json:"from,omitempty"`
	To         string          `json:"to,omitempty"`
	Version    int64           `json:"version,omitempty"`
	Meta       json.RawMessage `json:"meta,omitempty"`
	Instance   string          `json:"instance,omitempty"`
	SessionIDs []string        `json:"session_ids,omitempty"`
	// What the event types beyond a status change carry (api.md, protocol.md
	// 2.1), typed as the Node SDK's PresenceEvent: a Go backend had to decode
	// Raw itself to apply a channel event or a status message.
	Device       string          `json:"device,omitempty"`       // session events: the device kind
	Status       string          `json:"status,omitempty"`       // user.availability, user.message: the user's status
	Availability string          `json:"availability,omitempty"` // user events: what the person set
	Message      *StatusMessage  `json:"message,omitempty"`      // user.message: nil when cleared
	Channel      string          `json:"channel,omitempty"`      // channel events
	Data         json.RawMessage `json:"data,omitempty"`         // channel events: the member's data (or null)
	Count        int             `json:"count,omitempty"`        // channel events: members after it
	ShownCount   int             `json:"shown_count,omitempty"`  // channel events: members shown (invisible ones left out)
	FreshStart   bool            `json:"fresh_start,omitempty"`  // cleanup: presenced started with no presence
	Raw          json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the whole object in Raw wherever an Event is decoded
// (a webhook's Delivery too, not only the stream), so that the fields beyond
// these are there: a channel event's channel, data and count.
func (e *Event) UnmarshalJSON(data []byte) error {
	type plain Event
	if err := json.Unmarshal(data, (*plain)(e)); err != nil {
		return err
	}
	e.Raw = append(json.RawMessage(nil), data...)
	return nil
}

// Gap says events were lost: re-read the users you care about, then go on.
type Gap struct {
	After  int64 `json:"after"`
	Oldest int64 `json:"oldest"`
	Missed int64 `json:"missed,omitempty"` // webhooks only
}

// StreamItem is an event, or (Gap != nil) a gap.
type StreamItem struct {
	Type  string
	Event *Event
	Gap   *Gap
}

// StreamOptions of Client.Events.
type StreamOptions struct {
	// After resumes after this seq (a saved cursor); "" starts at new events.
	After string
	// Retry is the first reconnect delay (500 ms), doubling up to MaxRetry (15 s).
	Retry, MaxRetry time.Duration
	// OnError sees each failed or lost connection (it is retried).
	OnError func(error)
	// OnConnect is called on each established connection.
	OnConnect func()
	// ReadTimeout: a connection silent this long (no event, no keepalive,
	// which presenced sends every 15 s) is dropped and made again, as on a
	// host that vanished without closing it (60 s, as the Python SDK's; < 0: none).
	ReadTimeout time.Duration
	// Types keeps only these event types ("user.*", "channel.join", ...);
	// ChannelPrefix only channel events of channels starting with it.
	Types         []string
	ChannelPrefix string
}

// Stream reads GET /v1/events, reconnecting by itself and resuming after the
// last event returned (Last-Event-ID): nothing still in presenced's log is
// lost or repeated. Use it from one goroutine; Close may be called from any.
type Stream struct {
	c        *Client
	o        StreamOptions
	cursor   string
	item     StreamItem
	err      error
	sc       *bufio.Scanner
	body     interface{ Close() error }
	mu       sync.Mutex
	closed   bool
	stop     chan struct{}      // closed by Close: ends a wait between attempts
	cancel   context.CancelFunc // of the connection's request: ends a connect in progress
	idle     *time.Timer        // ReadTimeout: drops a silent connection
	silent   bool               // the connection was dropped for its silence
	Connects int
}

// Events opens the event stream (lazily, on the first Next).
func (c *Client) Events(o StreamOptions) *Stream {
	if o.Retry == 0 {
		o.Retry = 500 * time.Millisecond
	}
	if o.MaxRetry == 0 {
		o.MaxRetry = 15 * time.Second
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 60 * time.Second
	}
	return &Stream{c: c, o: o, cursor: o.After, stop: make(chan struct{})}
}

// Cursor is past the last event returned (and past the events a filter
// skipped after it): save it, pass it as After.
func (s *Stream) Cursor() string { return s.cursor }

// Item is what the last successful Next read.
func (s *Stream) Item() StreamItem { return s.item }

// Err is why Next returned false: ctx's error, or a fatal *Error (a wrong key
// or a refused cursor, which retrying does not heal); nil after Close.
func (s *Stream) Err() error { return s.err }

// Close ends the stream; a Next in progress returns false.
func (s *Stream) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.stop)
	if s.cancel != nil {
		s.cancel()
	}
	if s.body != nil {
		s.body.Close()
	}
}

func (s *Stream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Stream) connect() error {
	if err := checkURL(s.c.URL); err != nil {
		return fatalError{e: err}
	}
	q := url.Values{}
	if len(s.o.Types) > 0 {
		q.Set("types", strings.Join(s.o.Types, ","))
	}
	if s.o.ChannelPrefix != "" {
		q.Set("channel_prefix", s.o.ChannelPrefix)
	}
	path := "/v1/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	// The connection outlives the Next that opened it (a ctx per call, ended
	// when Next returns, must not cut it): its request has a context of its
	// own, which Close ends, and Next's ctx too while that Next waits.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.silent = false
	s.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, "GET", s.c.URL+path, nil)
	if err != nil {
		cancel()
		return err
	}
	if s.o.ReadTimeout > 0 {
		// Armed for the answer's head too: a host that accepts and never answers.
		s.idle = time.AfterFunc(s.o.ReadTimeout, func() {
			s.mu.Lock()
			s.silent = true
			s.mu.Unlock()
			cancel()
		})
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", bearer(s.c.APIKey))
	if s.cursor != "" {
		req.Header.Set("Last-Event-ID", s.cursor)
	}
	// The API client's timeout would cut a stream that never ends.
	hc := *s.c.httpClient()
	hc.Timeout = 0
	res, err := hc.Do(req)
	if err != nil {
		cancel()
		return s.connectionEnded(err)
	}
	if res.StatusCode != 200 {
		defer cancel()
		s.connectionEnded(nil)
		data := make([]byte, 4096)
		n, _ := res.Body.Read(data)
		res.Body.Close()
		e := decodeError(res.StatusCode, data[:n])
		if res.StatusCode == 400 || res.StatusCode == 401 {
			return fatalError{e: e}
		}
		return e
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		res.Body.Close()
		s.connectionEnded(nil)
		return errClosed
	}
	s.body = res.Body
	s.mu.Unlock()
	s.sc = bufio.NewScanner(res.Body)
	s.sc.Buffer(make([]byte, 64<<10), 16<<20)
	s.Connects++
	if s.o.OnConnect != nil {
		s.o.OnConnect()
	}
	return nil
}

// connectionEnded stops the silence timer; err, or the silence if that is
// what ended the connection, is what OnError sees.
func (s *Stream) connectionEnded(err error) error {
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.silent {
		return &Error{Code: CodeNetwork, Message: fmt.Sprintf("the event stream was silent for %s (no keepalive): reconnecting", s.o.ReadTimeout)}
	}
	return err
}

type fatalError struct{ e *Error }

func (f fatalError) Error() string { return f.e.Error() }

type closedError struct{}

func (closedError) Error() string { return "presence: stream closed" }

var errClosed = closedError{}

// Next reads the next item, reconnecting as needed; false when ctx ends, the
// stream is closed, or a fatal error came (see Err).
func (s *Stream) Next(ctx context.Context) bool {
	if ctx.Done() != nil {
		// ctx ending drops the connection, which ends a connect or a read in
		// progress; the next Next connects again and resumes.
		stop, exited := make(chan struct{}), make(chan struct{})
		defer func() { close(stop); <-exited }()
		go func() {
			defer close(exited)
			select {
			case <-ctx.Done():
				s.mu.Lock()
				if s.cancel != nil {
					s.cancel()
				}
				s.mu.Unlock()
			case <-stop:
			}
		}()
	}
	delay := s.o.Retry
	for {
		if s.isClosed() {
			return false
		}
		if ctx.Err() != nil {
			s.err = ctx.Err()
			return false
		}
		if s.sc == nil {
			if err := s.connect(); err != nil {
				if f, ok := err.(fatalError); ok {
					s.err = f.e
					return false
				}
				if err == errClosed || s.isClosed() {
					return false
				}
				if ctx.Err() != nil {
					s.err = ctx.Err()
					return false
				}
				if s.o.OnError != nil {
					s.o.OnError(err)
				}
				wait := time.NewTimer(delay)
				select {
				case <-ctx.Done():
					wait.Stop()
					s.err = ctx.Err()
					return false
				case <-s.stop:
					wait.Stop()
					return false
				case <-wait.C:
				}
				if delay *= 2; delay > s.o.MaxRetry {
					delay = s.o.MaxRetry
				}
				continue
			}
			delay = s.o.Retry
		}
		// The silence is counted while Next reads, not while the caller
		// handles an item: keepalives wait in the socket meanwhile.
		if s.idle != nil {
			s.idle.Reset(s.o.ReadTimeout)
		}
		if ok := s.readEvent(); ok {
			if s.idle != nil {
				s.idle.Stop()
			}
			return true
		}
		// the connection ended (presenced shut down, network): reconnect and resume
		s.mu.Lock()
		if s.body != nil {
			s.body.Close()
			s.body = nil
		}
		if s.cancel != nil {
			s.cancel()
			s.cancel = nil
		}
		s.mu.Unlock()
		if err := s.connectionEnded(s.sc.Err()); err != nil && s.o.OnError != nil && !s.isClosed() && ctx.Err() == nil {
			s.o.OnError(err)
		}
		s.sc = nil
	}
}

// readEvent reads lines up to one complete event; false at the end of the connection.
func (s *Stream) readEvent() bool {
	var id, typ string
	var data []string
	for s.sc.Scan() {
		if s.idle != nil {
			s.idle.Reset(s.o.ReadTimeout)
		}
		line := strings.TrimSuffix(s.sc.Text(), "\r")
		if line == "" {
			if len(data) == 0 {
				// An id-only block: events a filtered stream skipped. The
				// cursor moves past them and nothing is returned (kept back,
				// a resume from a cursor the log had evicted got a spurious gap).
				if id != "" {
					s.cursor = id
				}
				id, typ = "", ""
				continue
			}
			raw := []byte(strings.Join(data, "\n"))
			if typ == "gap" {
				var g Gap
				if json.Unmarshal(raw, &g) != nil {
					data = nil
					continue
				}
				s.item = StreamItem{Type: "gap", Gap: &g}
				return true
			}
			var e Event
			if json.Unmarshal(raw, &e) != nil {
				id, typ, data = "", "", nil
				continue
			}
			e.Raw = raw
			if id != "" {
				s.cursor = id
			} else if e.Seq != 0 {
				s.cursor = strconv.FormatInt(e.Seq, 10)
			}
			if typ == "" {
				typ = e.Type
			}
			s.item = StreamItem{Type: typ, Event: &e}
			return true
		}
		if strings.HasPrefix(line, ":") {
			continue // keepalive comment
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			data = append(data, value)
		case "id":
			id = value
		case "event":
			typ = value
		}
	}
	return false
}
