// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Close from another goroutine ends a Next that waits: on an answer that
// does not come, and between two attempts (Retry long); Err is nil then, and
// no goroutine of the stream is left.
func TestStreamCloseEndsAWaitingNext(t *testing.T) {
	// A listener that accepts and never answers: the connect waits.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	before := runtime.NumGoroutine()
	for _, c := range []struct {
		what string
		url  string
	}{
		{"connect without an answer", "http://" + ln.Addr().String()},
		{"wait between attempts", fmt.Sprintf("http://127.0.0.1:%d", freePort())},
	} {
		api := NewClient(c.url, testAPIKey)
		failed := make(chan struct{}, 8)
		s := api.Events(StreamOptions{Retry: time.Minute, OnError: func(error) { failed <- struct{}{} }})
		done := make(chan bool, 1)
		go func() { done <- s.Next(context.Background()) }()
		if c.what == "wait between attempts" {
			<-failed // the first attempt failed: Next waits a minute
		} else {
			<-accepted
		}
		time.Sleep(50 * time.Millisecond)
		s.Close()
		select {
		case ok := <-done:
			if ok || s.Err() != nil {
				t.Errorf("%s: Next %v, Err %v after Close", c.what, ok, s.Err())
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: Next still blocked 3 s after Close", c.what)
		}
	}
	ln.Close()
	waitFor(t, "the streams' goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
}

// A ctx per Next call, ended when the call returns (the usual Go idiom),
// bounds that call's wait and does not cut the connection for the next one.
func TestStreamNextWithACtxPerCall(t *testing.T) {
	api := NewClient(shared.url(), testAPIKey)
	var errs []error
	connected := make(chan struct{}, 8)
	s := api.Events(StreamOptions{Types: []string{"user.online"}, OnError: func(err error) { errs = append(errs, err) },
		OnConnect: func() { connected <- struct{}{} }})
	defer s.Close()
	next := func(d time.Duration) bool {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return s.Next(ctx)
	}
	// Nothing comes: the call ends at its deadline, with its ctx's error.
	start := time.Now()
	if next(300*time.Millisecond) || !errors.Is(s.Err(), context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("an idle Next: Err %v after %v", s.Err(), time.Since(start))
	}
	<-connected
	go func() {
		for i := 0; i < 4; i++ {
			time.Sleep(150 * time.Millisecond)
			api.PutSession(context.Background(), fmt.Sprint("pc-s", i), fmt.Sprint("pc-u", i), 5*time.Second, nil)
		}
	}()
	var got []string
	for len(got) < 4 {
		if !next(10 * time.Second) {
			t.Fatalf("Next: %v after %v", s.Err(), got)
		}
		if u := s.Item().Event.UserID; strings.HasPrefix(u, "pc-u") {
			got = append(got, u)
		}
	}
	if fmt.Sprint(got) != "[pc-u0 pc-u1 pc-u2 pc-u3]" || s.Connects != 2 || len(errs) != 0 {
		t.Fatalf("got %v with %d connections, errors %v", got, s.Connects, errs)
	}
}

// A presenced that stops answering without closing the connection (a host
// gone, a stalled process: SIGSTOP here) is noticed by the missing
// keepalives: the stream reconnects, and resumes once it answers again.
func TestStreamNoticesASilentConnection(t *testing.T) {
	d := ownDaemon(t, "--sse-keepalive-ms", "100")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := NewClient(d.url(), testAPIKey)
	errs := make(chan error, 16)
	connected := make(chan struct{}, 16)
	s := api.Events(StreamOptions{ReadTimeout: 2500 * time.Millisecond, Retry: 50 * time.Millisecond, MaxRetry: 100 * time.Millisecond,
		Types: []string{"user.online"}, OnError: func(err error) { errs <- err }, OnConnect: func() { connected <- struct{}{} }})
	defer s.Close()
	items := feed(ctx, s)
	<-connected
	if _, err := api.PutSession(ctx, "silent-1", "silent-a", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	readUntil(t, items, func(i StreamItem) bool { return i.Event != nil && i.Event.UserID == "silent-a" }, 5*time.Second)
	time.Sleep(3 * time.Second) // keepalives (each second at most) keep it up meanwhile
	select {
	case err := <-errs:
		t.Fatalf("dropped while keepalives came: %v", err)
	default:
	}
	d.cmd.Process.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	select {
	case err := <-errs:
		if time.Since(stopped) < time.Second {
			t.Errorf("noticed %v after SIGSTOP, before ReadTimeout", time.Since(stopped))
		}
		if !IsCode(err, CodeNetwork) || !strings.Contains(err.Error(), "silent") {
			t.Errorf("OnError: %v", err)
		}
	case <-time.After(8 * time.Second):
		d.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatal("a silent connection was not noticed")
	}
	d.cmd.Process.Signal(syscall.SIGCONT)
	if _, err := api.PutSession(ctx, "silent-2", "silent-b", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	got := readUntil(t, items, func(i StreamItem) bool { return i.Event != nil && i.Event.UserID == "silent-b" }, 10*time.Second)
	if fmt.Sprint(brief(got)) != "[user.online silent-b]" {
		t.Fatalf("after the silence: %v", brief(got))
	}
}

// A caller slower than ReadTimeout between two Next calls is not taken for
// a silent connection: keepalives wait in the socket meanwhile.
func TestStreamSlowConsumerIsNotSilence(t *testing.T) {
	d := ownDaemon(t, "--sse-keepalive-ms", "100")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := NewClient(d.url(), testAPIKey)
	var errs []error
	s := api.Events(StreamOptions{After: "0", ReadTimeout: 1500 * time.Millisecond, Types: []string{"user.online"},
		OnError: func(err error) { errs = append(errs, err) }})
	defer s.Close()
	api.PutSession(ctx, "slow-c1", "slow-c", 10*time.Second, nil)
	if !s.Next(ctx) {
		t.Fatal(s.Err())
	}
	time.Sleep(2500 * time.Millisecond) // handling the item
	api.PutSession(ctx, "slow-d1", "slow-d", 10*time.Second, nil)
	if !s.Next(ctx) || s.Item().Event.UserID != "slow-d" {
		t.Fatalf("next: %v %+v", s.Err(), s.Item())
	}
	if s.Connects != 1 || len(errs) != 0 {
		t.Fatalf("%d connections, errors %v", s.Connects, errs)
	}
}
