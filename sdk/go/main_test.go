// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The tests run against a real presenced: $PRESENCED, else build/presenced of
// the repository, on a free loopback port, stopped by its pid.

const (
	testAPIKey    = "sdk-go-test-key-0123456789-abcdefgh"
	testJWTSecret = "sdk-go-jwt-secret-0123456789-abcdef"
)

var shared *daemon

func TestMain(m *testing.M) {
	d, err := startDaemon("--log-capacity", "64")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = d
	// Example() (example_test.go) reads where presenced is from the environment, as a program would.
	os.Setenv("PRESENCED_URL", d.url())
	os.Setenv("PRESENCED_API_KEY", testAPIKey)
	os.Setenv("PRESENCED_JWT_SECRET", testJWTSecret)
	code := m.Run()
	d.stop()
	os.Exit(code)
}

type daemon struct {
	args []string
	port int
	cmd  *exec.Cmd
}

func (d *daemon) url() string { return fmt.Sprintf("http://127.0.0.1:%d", d.port) }

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func presencedPath() string {
	if p := os.Getenv("PRESENCED"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../build/presenced")
	return p
}

func startDaemon(args ...string) (*daemon, error) {
	d := &daemon{args: args, port: freePort()}
	return d, d.start()
}

func (d *daemon) start() error {
	argv := append([]string{"--listen", fmt.Sprintf("127.0.0.1:%d", d.port), "--api-key", testAPIKey,
		"--jwt-secret", testJWTSecret, "--log-level", "warn", "--offline-grace-ms", "0"}, d.args...)
	d.cmd = exec.Command(presencedPath(), argv...)
	d.cmd.Stderr = os.Stderr
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("presenced (%s): %w (set PRESENCED)", presencedPath(), err)
	}
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		if r, err := http.Get(d.url() + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop()
	return fmt.Errorf("presenced did not become healthy")
}

func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
}

// user is a client's WebSocket session.
type user struct {
	conn      *websocket.Conn
	sessionID string
	msgs      chan map[string]any
	closed    chan websocket.StatusCode
}

func dialUser(ctx context.Context, d *daemon, o TokenOptions) (*user, int, error) {
	if o.Secret == nil {
		o.Secret = []byte(testJWTSecret)
	}
	tok, err := MintToken(o)
	if err != nil {
		return nil, 0, err
	}
	c, res, err := websocket.Dial(ctx, strings.Replace(d.url(), "http", "ws", 1)+"/v1/ws?token="+tok, nil)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		return nil, status, err
	}
	u := &user{conn: c, msgs: make(chan map[string]any, 64), closed: make(chan websocket.StatusCode, 1)}
	go func() {
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				u.closed <- websocket.CloseStatus(err)
				close(u.msgs)
				return
			}
			var m map[string]any
			json.Unmarshal(data, &m)
			u.msgs <- m
		}
	}()
	w := <-u.msgs
	if w == nil || w["type"] != "welcome" {
		return nil, 0, fmt.Errorf("no welcome: %v", w)
	}
	u.sessionID = w["session_id"].(string)
	return u, 101, nil
}

func mustUser(t *testing.T, d *daemon, o TokenOptions) *user {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	u, _, err := dialUser(ctx, d, o)
	if err != nil {
		t.Fatalf("user %s: %v", o.UserID, err)
	}
	return u
}

func (u *user) close() { u.conn.Close(websocket.StatusNormalClosure, "") }

func waitFor(t *testing.T, what string, fn func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !fn() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
