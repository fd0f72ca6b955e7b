// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	done chan struct{} // closed when cmd has exited
}

func (d *daemon) url() string { return fmt.Sprintf("http://127.0.0.1:%d", d.port) }

var (
	givenMu sync.Mutex
	given   = map[int]bool{} // ports freePort handed out already
)

// freePort: a loopback port nothing listens on, in 16000-17999: below Linux's
// ephemeral range (a port bound to 0 and closed again is free for any
// outgoing connection, another suite's run beside this one, to take before
// presenced binds it) and apart from the other suites' ranges (the Node SDK
// 12000-13999, the Python SDK 14000-15999, the browser 18000-19999, the
// integration suites 23000-29999).
func freePort() int {
	givenMu.Lock()
	defer givenMu.Unlock()
	for i := 0; i < 200; i++ {
		port := 16000 + rand.Intn(2000)
		if given[port] { // a caller may take several before binding any
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			given[port] = true
			return port
		}
	}
	panic("freePort: no free port in 16000-17999")
}

func presencedPath() string {
	if p := os.Getenv("PRESENCED"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../build/presenced")
	return p
}

// startDaemon: a port taken between freePort and presenced's bind makes it
// exit at once; another port is tried then (a restart, d.start, keeps its
// port).
func startDaemon(args ...string) (*daemon, error) {
	d := &daemon{args: args}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		d.port = freePort()
		if err = d.start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return d, err
}

func (d *daemon) start() error {
	argv := append([]string{"--listen", fmt.Sprintf("127.0.0.1:%d", d.port), "--api-key", testAPIKey,
		"--jwt-secret", testJWTSecret, "--log-level", "warn", "--offline-grace-ms", "0"}, d.args...)
	d.cmd = exec.Command(presencedPath(), argv...)
	var errOut strings.Builder
	// Read once the process has exited (Wait has copied everything by then).
	d.cmd.Stderr = io.MultiWriter(os.Stderr, &errOut)
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("presenced (%s): %w (set PRESENCED)", presencedPath(), err)
	}
	d.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(d.cmd, d.done)
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		select {
		case <-d.done:
			d.cmd = nil
			return fmt.Errorf("presenced exited: %s", errOut.String())
		default:
		}
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

// ownDaemon: a presenced of the test's own, with these flags, stopped when
// the test ends.
func ownDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	d, err := startDaemon(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
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
