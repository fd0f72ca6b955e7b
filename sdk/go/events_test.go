// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"net"
	"runtime"
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
		{"wait between attempts", "http://127.0.0.1:1"},
	} {
		api := NewClient(c.url, testAPIKey)
		failed := make(chan struct{}, 8)
		s := api.Events(StreamOptions{Retry: time.Minute, OnError: func(error) { failed <- struct{}{} }})
		done := make(chan bool, 1)
		go func() { done <- s.Next(context.Background()) }()
		if c.url == "http://127.0.0.1:1" {
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
