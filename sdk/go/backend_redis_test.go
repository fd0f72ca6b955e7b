// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startRedis: a private redis-server on a unix socket in the test's own
// directory (no port to collide with the other suites'), no persistence,
// stopped by its pid when the test ends; the --store value for presenced.
// A skip when none is installed.
func startRedis(t *testing.T) string {
	t.Helper()
	exe, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(exe, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	waitFor(t, "redis-server PING", func() bool {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("PING\r\n"))
		buf := make([]byte, 7)
		n, _ := c.Read(buf)
		return strings.HasPrefix(string(buf[:n]), "+PONG")
	})
	return "unix:" + sock
}

// A join the Redis store refuses after its ack (protocol.md 5.4) is told
// with the op's code: OnLeftNotice gets it (CodeTooManyChannels here), where
// OnLeft had only the reason "refused", so an app could not tell a channel
// limit from a session the store lost. Two presenced share the redis-server
// (a session may be in 2 channels); the origin moves from A to B, whose
// record of the session it takes over has no channel: B acknowledges the
// join of a third channel, and the store, which counts the first two,
// refuses it.
func TestBackendRefusedJoinHasItsCode(t *testing.T) {
	store := startRedis(t)
	flags := []string{"--store", store, "--max-channels-per-session", "2", "--redis-timeout-ms", "5000"}
	A, B := ownDaemon(t, flags...), ownDaemon(t, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	apiB := NewClient(B.url(), testAPIKey)

	a := NewBackend(BackendOptions{URL: A.url(), APIKey: testAPIKey, Origin: "go-jr"})
	if _, err := a.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	s := a.Open("jr-u", OpenOptions{Session: "go-jr-s1"})
	a.Join(s, "jr-a", nil)
	a.Join(s, "jr-b", nil)
	a.Flush(ctx)
	waitFor(t, "B sees jr-b", func() bool { c, _ := apiB.Channel(ctx, "jr-b"); return c != nil && c.Count == 1 })
	a.End(ctx, false)

	notices := make(chan LeftNotice, 4)
	b := NewBackend(BackendOptions{URL: B.url(), APIKey: testAPIKey, Origin: "go-jr",
		OnLeftNotice: func(n LeftNotice) { notices <- n }})
	defer b.End(ctx, true)
	b.Open("jr-u", OpenOptions{Session: s})
	b.Join(s, "jr-c", map[string]any{"x": 1})
	if _, err := b.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-notices:
		msg := n.Message
		n.Message = ""
		want := LeftNotice{Session: s, User: "jr-u", Channel: "jr-c", Reason: "refused", Code: CodeTooManyChannels}
		if n != want || msg == "" {
			t.Fatalf("left notice %+v (message %q), want %+v and a message", n, msg, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no left notice")
	}
	if chs := b.Sessions()[s].Channels; len(chs) != 0 {
		t.Fatalf("channels held after the refusal: %v", chs)
	}
	if c, _ := apiB.Channel(ctx, "jr-c"); c == nil || c.Count != 0 {
		t.Fatalf("jr-c: %+v", c)
	}
}
