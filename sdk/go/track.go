// SPDX-License-Identifier: MIT

package presence

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"
)

// Reporting an app server's own long-lived connections (WebSocket handlers,
// SSE streams, gRPC streams) as sessions of a Backend, the Node SDK's
// trackWebSocketServer for net/http: the session opens when the handler
// starts and closes when it returns, by whatever path it returns (a panic
// included), so that no session is left online after its connection is gone.

// Track opens a session of userID (as Open) and returns its id and done,
// which closes it. done may be called more than once and from any goroutine;
// only the first call closes the session. Call it with defer:
//
//	session, done := b.Track("alice", presence.OpenOptions{Device: "web"})
//	defer done()
//
// For an OpenOptions.Status other than online or idle nothing is opened:
// session is "" and done does nothing.
func (b *Backend) Track(userID string, o OpenOptions) (session string, done func()) {
	session = b.Open(userID, o)
	if session == "" {
		return "", func() {}
	}
	var once sync.Once
	return session, func() { once.Do(func() { b.Close(session) }) }
}

type sessionKey struct{}

// ContextWithSession returns ctx carrying a session id, as TrackHandler does
// for the request it hands on (for a handler of your own built on Track).
func ContextWithSession(ctx context.Context, session string) context.Context {
	return context.WithValue(ctx, sessionKey{}, session)
}

// SessionFromContext: the session TrackHandler opened for this request (ok
// false when none was: the request was not identified). With it the handler
// reports what its client says, such as b.SetStatus(session, "idle") or
// b.Join(session, channel, data).
func SessionFromContext(ctx context.Context) (session string, ok bool) {
	session, ok = ctx.Value(sessionKey{}).(string)
	return session, ok && session != ""
}

// TrackHandler wraps the handler of a long-lived connection (a WebSocket
// endpoint, whatever library accepts it): for each request identify names
// the user (from your own authentication: a cookie, a token); a session of
// that user is open from the moment next accepts the connection until next
// returns. A panic in next closes the session too and goes on up (net/http
// logs it and drops the connection). Requests identify refuses (ok false)
// are served by next without a session. Two connections of one user are two
// sessions: the user is online while either is open.
//
// The session opens at the accept, not when next starts: at the upgrade's
// 101 Switching Protocols or the connection's hijack (what every WebSocket
// library does once it accepts), or at a 2xx answer or the first write (an
// SSE stream). A request next refuses (a WebSocket library's 403 for a
// foreign Origin, 426 for a plain GET, your own 401) never shows the user
// online, as the Node SDK's trackWebSocketServer and the Python SDK's
// TrackASGI track accepted connections only. The session id is in the
// request's context from the start (SessionFromContext).
//
//	http.Handle("/ws", presence.TrackHandler(b, func(r *http.Request) (string, bool) {
//		u := currentUser(r)
//		if u == nil {
//			return "", false // served without a session
//		}
//		return u.ID, true
//	}, wsHandler))
//
// For meta or a device per session, use TrackHandlerWith.
func TrackHandler(b *Backend, identify func(*http.Request) (userID string, ok bool), next http.Handler) http.Handler {
	return TrackHandlerWith(b, func(r *http.Request) (string, OpenOptions, bool) {
		userID, ok := identify(r)
		return userID, OpenOptions{}, ok
	}, next)
}

// TrackHandlerWith is TrackHandler with the session's OpenOptions (meta,
// device, a first status) chosen per request.
func TrackHandlerWith(b *Backend, identify func(*http.Request) (userID string, o OpenOptions, ok bool), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, o, ok := identify(r)
		// A status presenced refuses opens nothing (as Track): no session.
		if !ok || (o.Status != "" && !validStatus(o.Status)) {
			next.ServeHTTP(w, r)
			return
		}
		if o.Session == "" {
			o.Session = randomID()
		}
		t := &tracked{b: b, user: userID, o: o}
		// Deferred, not called after ServeHTTP: it runs on a panic as well,
		// and the panic carries on once the session is closed.
		defer t.close()
		next.ServeHTTP(t.writer(w), r.WithContext(ContextWithSession(r.Context(), o.Session)))
	})
}

// tracked is one request's session, opened when the handler accepts the
// connection (see TrackHandler) and closed when it returns.
type tracked struct {
	b    *Backend
	user string
	o    OpenOptions
	mu   sync.Mutex
	done func() // nil until opened
	shut bool   // closed: a late accept opens nothing
}

func (t *tracked) open() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil && !t.shut {
		_, t.done = t.b.Track(t.user, t.o)
	}
}

func (t *tracked) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shut = true
	if t.done != nil {
		t.done()
	}
}

// writer wraps w to see the accept; it is an http.Hijacker exactly when w
// is one, so that a library's own check (w.(http.Hijacker)) answers as
// before (an HTTP/2 request: not one).
func (t *tracked) writer(w http.ResponseWriter) http.ResponseWriter {
	tw := &trackWriter{ResponseWriter: w, t: t}
	if hj, ok := w.(http.Hijacker); ok {
		return &trackHijacker{tw, hj}
	}
	return tw
}

type trackWriter struct {
	http.ResponseWriter
	t     *tracked
	wrote bool
}

func (w *trackWriter) WriteHeader(code int) {
	if !w.wrote && code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // 1xx informational: the answer is still to come
		return
	}
	if !w.wrote {
		w.wrote = true
		if code == http.StatusSwitchingProtocols || (code >= 200 && code < 300) {
			w.t.open()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK) // as net/http does for a Write before WriteHeader
	}
	return w.ResponseWriter.Write(p)
}

// Flush: an SSE stream flushes after each event; one that flushes first
// answers 200, as net/http would.
func (w *trackWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap: http.ResponseController (Go 1.20) reaches w's own methods.
func (w *trackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type trackHijacker struct {
	*trackWriter
	hj http.Hijacker
}

// Hijack: a library that writes its 101 on the raw connection (gorilla)
// accepts here.
func (w *trackHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := w.hj.Hijack()
	if err == nil {
		w.t.open()
	}
	return c, rw, err
}
