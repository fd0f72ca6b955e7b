// SPDX-License-Identifier: MIT

package presence

import (
	"context"
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
// that user is open while next serves the request and closed when it
// returns. A panic in next closes the session too and goes on up (net/http
// logs it and drops the connection). Requests identify refuses (ok false)
// are served by next without a session. Two connections of one user are two
// sessions: the user is online while either is open.
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
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		session, done := b.Track(userID, o)
		// Deferred, not called after ServeHTTP: it runs on a panic as well,
		// and the panic carries on once the session is closed.
		defer done()
		next.ServeHTTP(w, r.WithContext(ContextWithSession(r.Context(), session)))
	})
}
