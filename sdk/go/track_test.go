// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// An app server of the test's own (net/http and coder/websocket) reports its
// WebSocket connections through TrackHandler; real clients connect to it and
// presenced (offline grace 0) says who is online.

func trackServer(t *testing.T, b *Backend) *httptest.Server {
	t.Helper()
	ws := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session, ok := SessionFromContext(r.Context())
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			_, msg, err := c.Read(context.Background())
			if err != nil {
				return
			}
			switch m := string(msg); m {
			case "idle", "online": // the client's own activity: the app's business
				if !ok || !b.SetStatus(session, m) {
					c.Write(context.Background(), websocket.MessageText, []byte("no session"))
				}
			case "panic":
				panic("the handler failed")
			}
		}
	})
	srv := httptest.NewUnstartedServer(TrackHandler(b, func(r *http.Request) (string, bool) {
		u := r.URL.Query().Get("user")
		return u, u != ""
	}, ws))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic's stack: expected
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func dialApp(t *testing.T, srv *httptest.Server, user string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(srv.URL, "http", "ws", 1)+"/ws?user="+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func trackBackend(t *testing.T, origin string) (*Backend, *Client) {
	t.Helper()
	d := backendDaemon(t)
	t.Cleanup(d.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := NewBackend(BackendOptions{URL: d.url(), APIKey: testAPIKey, Origin: origin})
	if _, err := b.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.End(context.Background(), true) })
	return b, NewClient(d.url(), testAPIKey)
}

// userIs waits until presenced reports the user with this status and number of sessions.
func userIs(t *testing.T, api *Client, userID, status string, sessions int) {
	t.Helper()
	waitFor(t, userID+" "+status, func() bool {
		u, err := api.GetUser(context.Background(), userID)
		return err == nil && u.Status == status && u.Sessions == sessions
	})
}

func TestTrackHandlerOnlineWhileConnected(t *testing.T) {
	b, api := trackBackend(t, "go-track-a")
	srv := trackServer(t, b)
	c1 := dialApp(t, srv, "alice")
	userIs(t, api, "alice", "online", 1)
	c2 := dialApp(t, srv, "alice") // a second tab: one user, two sessions
	userIs(t, api, "alice", "online", 2)
	// The session id reaches the handler: the client's idle is reported.
	c1.Write(context.Background(), websocket.MessageText, []byte("idle"))
	c2.Write(context.Background(), websocket.MessageText, []byte("idle"))
	userIs(t, api, "alice", "idle", 2)
	c1.Close(websocket.StatusNormalClosure, "")
	userIs(t, api, "alice", "idle", 1)
	c2.Close(websocket.StatusGoingAway, "")
	userIs(t, api, "alice", "offline", 0)
	if n := len(b.Sessions()); n != 0 {
		t.Fatalf("%d sessions left in the backend's list", n)
	}
}

func TestTrackHandlerPanicClosesSession(t *testing.T) {
	b, api := trackBackend(t, "go-track-b")
	srv := trackServer(t, b)
	c := dialApp(t, srv, "bob")
	defer c.CloseNow()
	userIs(t, api, "bob", "online", 1)
	c.Write(context.Background(), websocket.MessageText, []byte("panic"))
	userIs(t, api, "bob", "offline", 0)
}

func TestTrackHandlerUnidentifiedHasNoSession(t *testing.T) {
	b, _ := trackBackend(t, "go-track-c")
	srv := trackServer(t, b)
	c := dialApp(t, srv, "")
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Write(ctx, websocket.MessageText, []byte("idle"))
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "no session" {
		t.Fatalf("read %q %v", msg, err)
	}
	if n := len(b.Sessions()); n != 0 {
		t.Fatalf("%d sessions opened for an unidentified request", n)
	}
}

func TestTrackDoneOnce(t *testing.T) {
	b, api := trackBackend(t, "go-track-d")
	s1, done1 := b.Track("carol", OpenOptions{Device: "web"})
	_, done2 := b.Track("carol", OpenOptions{})
	userIs(t, api, "carol", "online", 2)
	done1()
	done1() // a second call does nothing
	userIs(t, api, "carol", "online", 1)
	if _, held := b.Sessions()[s1]; held {
		t.Fatal("done left the session in the list")
	}
	done2()
	userIs(t, api, "carol", "offline", 0)
	if s, done := b.Track("dave", OpenOptions{Status: "away"}); s != "" {
		t.Fatalf("a status presenced refuses opened %q", s)
	} else {
		done()
	}
}
