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

// A request the handler refuses (coder/websocket: 403 for a foreign Origin,
// 426 for a plain GET) opened a session all the same, before the handler
// ran, and closed it when the handler returned: the user went online and
// offline (events, webhooks; online for --offline-grace-ms), here from a
// page of another site that sent the user's cookie. Now the session opens at
// the accept, as in the Node and Python SDKs.
func TestTrackHandlerRefusedRequestOpensNoSession(t *testing.T) {
	b, api := trackBackend(t, "go-track-e")
	srv := trackServer(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"an upgrade from a foreign Origin", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
			"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"a plain GET", nil, http.StatusUpgradeRequired},
	} {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/ws?user=victim", nil)
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("%s: %d, not %d", c.name, resp.StatusCode, c.want)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	u, err := api.GetUser(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	if u.Version != 0 || u.LastSeen != 0 {
		t.Fatalf("refused requests showed the user online: version %d, last seen %d", u.Version, u.LastSeen)
	}
	// Accepted, it is tracked as before, with its session id from the start.
	c := dialApp(t, srv, "victim")
	userIs(t, api, "victim", "online", 1)
	c.Write(ctx, websocket.MessageText, []byte("idle"))
	userIs(t, api, "victim", "idle", 1)
	c.Close(websocket.StatusNormalClosure, "")
	userIs(t, api, "victim", "offline", 0)
}
