// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestStatusSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	api := NewClient(shared.url(), testAPIKey)
	connected := make(chan struct{}, 1)
	s := api.Events(StreamOptions{OnConnect: func() { connected <- struct{}{} }})
	var kinds []string
	var typed []Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s.Next(ctx) {
			if it := s.Item(); it.Event != nil && it.Event.UserID == "gina" && strings.HasPrefix(it.Type, "user.") {
				kinds = append(kinds, it.Type)
				typed = append(typed, *it.Event)
				if len(kinds) == 4 {
					return
				}
			}
		}
	}()
	<-connected
	phone := mustUser(t, shared, TokenOptions{UserID: "gina", Device: "mobile"})
	defer phone.close()
	waitFor(t, "gina online", func() bool { u, _ := api.GetUser(ctx, "gina"); return u != nil && u.Status == "online" })
	if u, _ := api.GetUser(ctx, "gina"); u.Devices["mobile"].Sessions != 1 {
		t.Fatalf("devices %+v", u.Devices)
	}
	// What presenced stored comes back, as from the Node and Python SDKs:
	// the message's expiry as presenced reckoned it.
	if a, err := api.SetAvailability(ctx, "gina", "dnd"); err != nil || a.UserID != "gina" || a.Availability != "dnd" {
		t.Fatalf("SetAvailability: %+v %v", a, err)
	}
	before := time.Now()
	m, err := api.SetMessage(ctx, "gina", "Lunch", "🥪", 30*time.Minute)
	if err != nil || m == nil || m.Text != "Lunch" || m.Emoji != "🥪" ||
		m.Expires < before.Add(30*time.Minute).UnixMilli()-1000 || m.Expires > time.Now().Add(30*time.Minute).UnixMilli()+1000 {
		t.Fatalf("SetMessage: %+v %v", m, err)
	}
	u, _ := api.GetUser(ctx, "gina")
	if u.Availability != "dnd" || u.Message == nil || u.Message.Emoji != "🥪" || u.Message.Expires < time.Now().Add(29*time.Minute).UnixMilli() {
		t.Fatalf("gina %+v %+v", u, u.Message)
	}
	if err := api.ClearMessage(ctx, "gina"); err != nil {
		t.Fatal(err)
	}
	if u, _ := api.GetUser(ctx, "gina"); u.Message != nil {
		t.Fatalf("message kept: %+v", u.Message)
	}
	if m, err := api.SetMessage(ctx, "gina", "", "", 0); err != nil || m != nil {
		t.Fatalf("SetMessage of no text and no emoji (clears): %+v %v", m, err)
	}
	// Until a time, as Node's expiresAt and Python's expires_at_ms (a user
	// nobody watches here: the stream above counts gina's events).
	until := time.Now().Add(2 * time.Hour).Truncate(time.Millisecond)
	if m, err := api.SetMessageUntil(ctx, "gina-until", "Away", "", until); err != nil || m == nil || m.Expires != until.UnixMilli() {
		t.Fatalf("SetMessageUntil: %+v %v", m, err)
	}
	if u, _ := api.GetUser(ctx, "gina-until"); u == nil || u.Message == nil || u.Message.Expires != until.UnixMilli() {
		t.Fatalf("gina-until: %+v", u)
	}
	if _, err := api.SetMessageUntil(ctx, "gina-until", "Away", "", time.Now().Add(-time.Hour)); !IsCode(err, CodeBadExpiry) {
		t.Fatalf("SetMessageUntil in the past: %v", err)
	}
	if a, err := api.SetAvailability(ctx, "gina", "asleep"); !IsCode(err, "bad_availability") || a != nil {
		t.Errorf("bad availability: %+v %v", a, err)
	}
	if m, err := api.SetMessage(ctx, "gina", strings.Repeat("x", 500), "", 0); !IsCode(err, "bad_message") || m != nil {
		t.Errorf("long message: %+v %v", m, err)
	}
	// Not whole seconds: refused, not cut to 1 s (or sent as 0) without a word.
	for _, d := range []time.Duration{1500 * time.Millisecond, 500 * time.Millisecond} {
		if _, err := api.SetMessage(ctx, "gina-frac", "x", "", d); !IsCode(err, "bad_expiry") {
			t.Errorf("expiresIn %v: %v", d, err)
		}
	}
	<-done
	s.Close()
	if strings.Join(kinds, " ") != "user.online user.availability user.message user.message" {
		t.Fatalf("events %v", kinds)
	}
	// What they carry, typed (it was in Raw only): the availabilities, the message.
	if a := typed[1]; a.From != "auto" || a.To != "dnd" || a.Status != "online" {
		t.Errorf("user.availability %+v", a)
	}
	if m := typed[2]; m.Message == nil || m.Message.Text != "Lunch" || m.Message.Emoji != "🥪" || m.Availability != "dnd" {
		t.Errorf("user.message %+v %+v", m, m.Message)
	}
	if c := typed[3]; c.Message != nil {
		t.Errorf("cleared message %+v", c.Message)
	}
}

func TestEventStreamFiltersByType(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	api := NewClient(shared.url(), testAPIKey)
	connected := make(chan struct{}, 1)
	s := api.Events(StreamOptions{Types: []string{"user.availability"}, OnConnect: func() { connected <- struct{}{} }})
	defer s.Close()
	items := feed(ctx, s)
	<-connected
	api.SetAvailability(ctx, "hal", "away")
	u := mustUser(t, shared, TokenOptions{UserID: "hal"})
	defer u.close()
	api.SetAvailability(ctx, "hal", "dnd")
	got := readUntil(t, items, func(i StreamItem) bool { return i.Event != nil && i.Event.To == "dnd" }, 10*time.Second)
	if fmt.Sprint(brief(got)) != "[user.availability hal user.availability hal]" {
		t.Fatalf("filtered stream: %v", brief(got))
	}
	bad := api.Events(StreamOptions{Types: []string{"bogus"}})
	if bad.Next(ctx) || !IsCode(bad.Err(), "bad_request") {
		t.Fatalf("bogus type: %v", bad.Err())
	}
}
