// SPDX-License-Identifier: MIT

package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTokensCarryEveryClaim(t *testing.T) {
	ctx := context.Background()
	api := NewClient(shared.url(), testAPIKey)
	u := mustUser(t, shared, TokenOptions{UserID: "zoë", TTL: time.Minute, Watch: []string{"bob"}, Meta: map[string]any{"device": "phone"}})
	defer u.close()
	ss, err := api.Sessions(ctx, "zoë")
	if err != nil || len(ss) != 1 || ss[0].SessionID != u.sessionID || string(ss[0].Meta) != `{"device":"phone"}` {
		t.Fatalf("sessions %+v %v", ss, err)
	}
	for _, c := range []struct {
		o    TokenOptions
		what string
	}{
		{TokenOptions{UserID: "bob", ExpiresAt: time.Now().Add(-time.Minute)}, "expired"},
		{TokenOptions{UserID: "bob", NotBefore: time.Now().Add(time.Hour)}, "not yet valid"},
		{TokenOptions{UserID: "bob", Secret: []byte("wrong")}, "wrong secret"},
		{TokenOptions{UserID: "bob", Audience: "elsewhere"}, "audience (none configured: any aud refused)"},
	} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, status, err := dialUser(cctx, shared, c.o)
		cancel()
		if err == nil || status != 401 {
			t.Errorf("%s: status %d err %v, want 401", c.what, status, err)
		}
	}
	if _, err := MintToken(TokenOptions{Secret: []byte("k")}); err == nil {
		t.Error("no user id accepted")
	}
	tok, _ := MintToken(TokenOptions{Secret: []byte("k"), UserID: "a", TTL: 10 * time.Second, Now: func() time.Time { return time.Unix(1000, 0) }, Claims: map[string]any{"device": "web"}})
	var claims map[string]any
	part, _ := b64.DecodeString(splitToken(tok)[1])
	json.Unmarshal(part, &claims)
	if fmt.Sprint(claims) != "map[device:web exp:1010 iat:1000 sub:a]" {
		t.Errorf("claims %v", claims)
	}
}

// Audiences: aud as an array, as the Node and Python SDKs' audience takes a
// list; a presenced with --jwt-audience accepts the token when one of them is
// its own (Audience alone could name one).
func TestTokenWithManyAudiences(t *testing.T) {
	d := ownDaemon(t, "--jwt-audience", "presence")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, status, err := dialUser(ctx, d, TokenOptions{UserID: "aud-a", Audiences: []string{"billing", "presence"}})
	if err != nil || status != 101 {
		t.Fatalf("aud [billing presence]: status %d %v", status, err)
	}
	u.close()
	if _, status, err := dialUser(ctx, d, TokenOptions{UserID: "aud-b", Audiences: []string{"billing", "chat"}}); err == nil || status != 401 {
		t.Fatalf("aud [billing chat]: status %d %v, want 401", status, err)
	}
	tok, _ := MintToken(TokenOptions{Secret: []byte("k"), UserID: "a", Audience: "x", Audiences: []string{"y"}})
	var claims map[string]any
	part, _ := b64.DecodeString(splitToken(tok)[1])
	json.Unmarshal(part, &claims)
	if fmt.Sprint(claims["aud"]) != "[x y]" {
		t.Errorf("aud of Audience x and Audiences [y]: %v", claims["aud"])
	}
}

func splitToken(t string) []string {
	var out []string
	start := 0
	for i := 0; i < len(t); i++ {
		if t[i] == '.' {
			out = append(out, t[start:i])
			start = i + 1
		}
	}
	return append(out, t[start:])
}

// A session's device kind is in the session list as presenced sends it; the
// Session type had no field for it, so a Go backend could not tell a phone's
// session from a browser's.
func TestSessionsCarryTheirDevice(t *testing.T) {
	ctx := context.Background()
	api := NewClient(shared.url(), testAPIKey)
	phone := mustUser(t, shared, TokenOptions{UserID: "dora", Device: "mobile"})
	tab := mustUser(t, shared, TokenOptions{UserID: "dora"})
	defer phone.close()
	defer tab.close()
	ss, err := api.Sessions(ctx, "dora")
	if err != nil || len(ss) != 2 {
		t.Fatalf("sessions %+v %v", ss, err)
	}
	byID := map[string]string{ss[0].SessionID: ss[0].Device, ss[1].SessionID: ss[1].Device}
	if byID[phone.sessionID] != "mobile" || byID[tab.sessionID] != "web" {
		t.Fatalf("devices %v, want mobile for %s and web for %s", byID, phone.sessionID, tab.sessionID)
	}
}

func TestUsersSessionsKick(t *testing.T) {
	ctx := context.Background()
	api := NewClient(shared.url(), testAPIKey)
	a := mustUser(t, shared, TokenOptions{UserID: "alice"})
	b := mustUser(t, shared, TokenOptions{UserID: "alice"})
	usr, err := api.GetUser(ctx, "alice")
	if err != nil || usr.Status != "online" || usr.Sessions != 2 {
		t.Fatalf("alice %+v %v", usr, err)
	}
	many, err := api.GetUsers(ctx, []string{"alice", "nobody", "zoë,x"})
	if err != nil || len(many) != 3 || many[0].Status != "online" || many[1].Status != "offline" || many[2].UserID != "zoë,x" {
		t.Fatalf("many %+v %v", many, err)
	}
	ss, _ := api.Sessions(ctx, "alice")
	got := []string{ss[0].SessionID, ss[1].SessionID}
	want := []string{a.sessionID, b.sessionID}
	sort.Strings(got)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sessions %v want %v", got, want)
	}
	if err := api.Kick(ctx, a.sessionID); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-a.closed:
		if code != 4003 {
			t.Errorf("kicked with %d, want 4003", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
	b.close()
	waitFor(t, "alice offline", func() bool { u, _ := api.GetUser(ctx, "alice"); return u != nil && u.Status == "offline" })
}

func TestErrorsAreTyped(t *testing.T) {
	ctx := context.Background()
	api := NewClient(shared.url(), testAPIKey)
	err := api.Kick(ctx, "no-such-session")
	var pe *Error
	if !errors.As(err, &pe) || pe.Status != 404 || pe.Code != CodeNoSession || !IsCode(err, CodeNoSession) {
		t.Errorf("kick unknown: %v", err)
	}
	if _, err := NewClient(shared.url(), "wrong").GetUser(ctx, "a"); !IsCode(err, CodeUnauthorized) {
		t.Errorf("wrong key: %v", err)
	}
	long := make([]byte, 200)
	for i := range long {
		long[i] = 'x'
	}
	if _, err := api.GetUser(ctx, string(long)); !IsCode(err, CodeBadUserID) {
		t.Errorf("long id: %v", err)
	}
	// A port nothing listens on (port 1 was taken once by another suite's presenced, run as root).
	_, err = NewClient(fmt.Sprintf("http://127.0.0.1:%d", freePort()), testAPIKey).Health(ctx)
	if !errors.As(err, &pe) || pe.Code != CodeNetwork || !pe.Retryable() {
		t.Errorf("no daemon: %v", err)
	}
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = fmt.Sprint("u", i)
	}
	if us, err := api.GetUsers(ctx, ids); err != nil || len(us) != 2500 {
		t.Errorf("2500 ids: %d %v", len(us), err)
	}
}

// feed reads the stream in a goroutine of its own (Next blocks, and connects
// lazily) into a channel, so that the test's goroutine stays free to dial
// users and to fail; the channel closes when the stream ends.
func feed(ctx context.Context, s *Stream) <-chan StreamItem {
	ch := make(chan StreamItem, 1024)
	go func() {
		defer close(ch)
		for s.Next(ctx) {
			ch <- s.Item()
		}
	}()
	return ch
}

// readUntil takes items until pred holds (bounded).
func readUntil(t *testing.T, ch <-chan StreamItem, pred func(StreamItem) bool, timeout time.Duration) []StreamItem {
	t.Helper()
	var got []StreamItem
	deadline := time.After(timeout)
	for {
		select {
		case it, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended after %v", brief(got))
			}
			got = append(got, it)
			if pred(it) {
				return got
			}
		case <-deadline:
			t.Fatalf("timed out after %v", brief(got))
		}
	}
}

func brief(items []StreamItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		if it.Gap != nil {
			out[i] = "gap"
		} else {
			out[i] = it.Type + " " + it.Event.UserID
		}
	}
	return out
}

func TestEventStreamResumesByCursor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := NewClient(shared.url(), testAPIKey)
	connected := make(chan struct{}, 4)
	s := api.Events(StreamOptions{Retry: 50 * time.Millisecond, OnConnect: func() { connected <- struct{}{} }})
	items := feed(ctx, s)
	<-connected
	c := mustUser(t, shared, TokenOptions{UserID: "carol"})
	got := readUntil(t, items, func(i StreamItem) bool { return i.Type == "user.online" }, 10*time.Second)
	if fmt.Sprint(brief(got)) != "[session.connected carol user.online carol]" {
		t.Fatalf("got %v", brief(got))
	}
	cursor := s.Cursor()
	if cursor != fmt.Sprint(got[1].Event.Seq) {
		t.Fatalf("cursor %s", cursor)
	}
	s.Close()
	c.close()
	waitFor(t, "carol offline", func() bool { u, _ := api.GetUser(ctx, "carol"); return u != nil && u.Status == "offline" })
	d := mustUser(t, shared, TokenOptions{UserID: "dave"})
	defer d.close()
	r := api.Events(StreamOptions{After: cursor})
	defer r.Close()
	rest := readUntil(t, feed(ctx, r), func(i StreamItem) bool { return i.Type == "user.online" && i.Event.UserID == "dave" }, 10*time.Second)
	if fmt.Sprint(brief(rest)) != "[session.disconnected carol user.offline carol session.connected dave user.online dave]" {
		t.Fatalf("resumed %v", brief(rest))
	}
	if fmt.Sprint(rest[0].Event.Seq-1) != cursor {
		t.Errorf("resumed at %d after %s", rest[0].Event.Seq, cursor)
	}
}

func TestGapsAreSurfaced(t *testing.T) {
	d := ownDaemon(t, "--log-capacity", "16")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api := NewClient(d.url(), testAPIKey)
	for i := 0; i < 10; i++ {
		mustUser(t, d, TokenOptions{UserID: fmt.Sprint("filler", i)}).close()
	}
	waitFor(t, "fillers gone", func() bool { u, _ := api.GetUser(ctx, "filler9"); return u != nil && u.Status == "offline" })
	old := api.Events(StreamOptions{After: "0"})
	g := readUntil(t, feed(ctx, old), func(StreamItem) bool { return true }, 5*time.Second)
	old.Close()
	if g[0].Gap == nil || g[0].Gap.After != 0 || g[0].Gap.Oldest <= 1 {
		t.Fatalf("want a gap, got %+v", g[0])
	}

	// A live stream across a restart of presenced: it reconnects by itself;
	// its cursor is beyond the new log's end: a gap, then the new events.
	connects := make(chan struct{}, 8)
	live := api.Events(StreamOptions{Retry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		OnConnect: func() { connects <- struct{}{} }})
	defer live.Close()
	items := feed(ctx, live)
	<-connects
	mustUser(t, d, TokenOptions{UserID: "erin"}).close()
	readUntil(t, items, func(i StreamItem) bool { return i.Type == "user.offline" }, 10*time.Second)
	d.stop()
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connects:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not reconnect")
	}
	f := mustUser(t, d, TokenOptions{UserID: "frank"})
	defer f.close()
	after := readUntil(t, items, func(i StreamItem) bool { return i.Event != nil && i.Event.UserID == "frank" && i.Type == "user.online" }, 20*time.Second)
	b := brief(after)
	gapAt, frankAt := -1, -1
	for i, x := range b {
		if x == "gap" && gapAt < 0 {
			gapAt = i
		}
		if x == "session.connected frank" {
			frankAt = i
		}
	}
	if gapAt < 0 || gapAt > frankAt {
		t.Fatalf("no gap before the new events: %v", b)
	}
}

// A filtered stream is sent an id-only block after events it skips: its
// cursor moves past them, Next returns nothing for them, and a resume after
// more skipped events than the log holds (16) gets no gap.
func TestFilteredStreamCursorMovesPastSkippedEvents(t *testing.T) {
	d := ownDaemon(t, "--log-capacity", "16")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api := NewClient(d.url(), testAPIKey)
	connected := make(chan struct{}, 8)
	s := api.Events(StreamOptions{Types: []string{"user.offline"}, Retry: 50 * time.Millisecond,
		OnConnect: func() { connected <- struct{}{} }})
	defer s.Close()
	// The first item is read in a goroutine (Next connects lazily); after
	// it, Next is called from this one only.
	first := make(chan StreamItem, 1)
	go func() {
		if s.Next(ctx) {
			first <- s.Item()
		}
		close(first)
	}()
	<-connected
	mustUser(t, d, TokenOptions{UserID: "skip-first"}).close()
	var seen StreamItem
	select {
	case seen = <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("no user.offline of skip-first")
	}
	if seen.Event == nil || seen.Type != "user.offline" || seen.Event.UserID != "skip-first" || s.Cursor() != fmt.Sprint(seen.Event.Seq) {
		t.Fatalf("first item %+v, cursor %s", seen, s.Cursor())
	}
	// 40 events the filter skips: session.connected and user.online of each.
	var held []*user
	for i := 0; i < 20; i++ {
		held = append(held, mustUser(t, d, TokenOptions{UserID: fmt.Sprint("skip", i)}))
	}
	defer func() {
		for _, u := range held {
			u.close()
		}
	}()
	newest := fmt.Sprint(seen.Event.Seq + 40)
	// Each Next waits a while and ends with its ctx, dropping the connection:
	// the next one resumes from the cursor, which must be past the skipped
	// events (else the evicted cursor gives a gap, returned as an item).
	for deadline := time.Now().Add(5 * time.Second); s.Cursor() != newest; {
		if time.Now().After(deadline) {
			t.Fatalf("the cursor did not move over the skipped events to %s: %s", newest, s.Cursor())
		}
		nctx, ncancel := context.WithTimeout(ctx, 300*time.Millisecond)
		got := s.Next(nctx)
		ncancel()
		if got {
			t.Fatalf("an item for the skipped events: %v", brief([]StreamItem{s.Item()}))
		}
	}
	cursor := s.Cursor()
	s.Close()

	r := api.Events(StreamOptions{Types: []string{"user.offline"}, After: cursor,
		OnConnect: func() { connected <- struct{}{} }})
	defer r.Close()
	items := feed(ctx, r)
	<-connected
	held[0].close()
	got := readUntil(t, items, func(StreamItem) bool { return true }, 10*time.Second)
	if fmt.Sprint(brief(got)) != "[user.offline skip0]" {
		t.Fatalf("resumed from %s: %v, want [user.offline skip0]", cursor, brief(got))
	}
}

// An id with '+' (an e-mail address with a tag) is asked as itself: the
// daemon reads a bare '+' in a path as a space, so it must go as %2B.
func TestIDsArePercentEncoded(t *testing.T) {
	ctx := context.Background()
	api := NewClient(shared.url(), testAPIKey)
	id := "ann+tag@example.com&x=1:$"
	u := mustUser(t, shared, TokenOptions{UserID: id})
	defer u.close()
	got, err := api.GetUser(ctx, id)
	if err != nil || got.UserID != id || got.Status != "online" {
		t.Fatalf("GetUser(%q): %+v %v", id, got, err)
	}
	ss, err := api.Sessions(ctx, id)
	if err != nil || len(ss) != 1 || ss[0].SessionID != u.sessionID {
		t.Fatalf("Sessions(%q): %+v %v", id, ss, err)
	}
	if other, err := api.GetUser(ctx, "ann tag@example.com&x=1:$"); err != nil || other.Status != "offline" {
		t.Fatalf("the id with a space: %+v %v", other, err)
	}
}

// An empty id or channel name is the caller's bug, said as such before any
// request: it was sent as another path, answered 404 not_found "no such
// endpoint" (Kick of "" looked like a missing route, not a gone session).
func TestEmptyArgumentsAreRefused(t *testing.T) {
	ctx := context.Background()
	api := NewClient(shared.url(), testAPIKey)
	_, e1 := api.GetUser(ctx, "")
	_, e2 := api.Sessions(ctx, "")
	_, e3 := api.Channel(ctx, "")
	_, e4 := api.ChannelMembers(ctx, "", 10, "")
	_, e5 := api.UserChannels(ctx, "")
	_, e6 := api.PutSession(ctx, "", "ann", time.Minute, nil)
	_, e7 := api.PutSession(ctx, "s-1", "", time.Minute, nil)
	_, e8 := api.SetAvailability(ctx, "", "dnd")
	_, e9 := api.SetMessage(ctx, "", "hi", "", 0)
	_, e10 := api.AllChannelMembers(ctx, "", 0)
	_, e11 := api.SetMessageUntil(ctx, "", "hi", "", time.Now().Add(time.Hour))
	for i, err := range []error{e1, e2, api.Kick(ctx, ""), e3, e4, e5, api.RemoveFromChannel(ctx, "room:1", ""),
		api.RemoveFromChannel(ctx, "", "ann"), e8, e9, api.ClearMessage(ctx, ""), e6, e7, e10, e11} {
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != CodeBadArgument || pe.Status != 0 || pe.Retryable() || !strings.Contains(pe.Message, "must not be empty") {
			t.Errorf("call %d: %v", i, err)
		}
	}
}

// A Client written as a literal, without HTTP, works as NewClient's does.
func TestClientLiteralWithoutHTTP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panicked: %v", r)
		}
	}()
	api := &Client{URL: shared.url(), APIKey: testAPIKey}
	if h, err := api.Health(ctx); err != nil || h.Status != "ok" {
		t.Fatalf("health %+v %v", h, err)
	}
	connected := make(chan struct{}, 1)
	s := api.Events(StreamOptions{OnConnect: func() { connected <- struct{}{} }})
	defer s.Close()
	items := feed(ctx, s)
	<-connected
	mustUser(t, shared, TokenOptions{UserID: "lit"}).close()
	readUntil(t, items, func(i StreamItem) bool { return i.Type == "user.online" && i.Event.UserID == "lit" }, 5*time.Second)
}

// An API key read from a file, with its newline (or spaces around it),
// works in the HTTP API, the event stream and the Backend.
func TestAPIKeyFromAFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := " " + testAPIKey + "\n"
	api := NewClient(shared.url(), key)
	if _, err := api.GetUser(ctx, "anyone"); err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	s := api.Events(StreamOptions{After: "0"})
	defer s.Close()
	if !s.Next(ctx) {
		t.Fatalf("stream: %v", s.Err())
	}
	b := NewBackend(BackendOptions{URL: shared.url(), APIKey: key, Origin: "go-key-file"})
	if _, err := b.Connect(ctx); err != nil {
		t.Fatalf("backend: %v", err)
	}
	b.End(ctx, true)
}

// Health on a presenced whose Redis is away: the 503 comes with the Health
// (StoreReady false) and the code CodeStoreUnavailable.
func TestHealthOfAStoreAway(t *testing.T) {
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server")
	}
	port := freePort()
	rs := exec.Command(redis, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	rsDone := make(chan struct{})
	go func() { rs.Wait(); close(rsDone) }()
	stopRedis := func() {
		rs.Process.Signal(syscall.SIGTERM)
		<-rsDone
	}
	defer func() {
		select {
		case <-rsDone:
		default:
			stopRedis()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	d := ownDaemon(t, "--store", fmt.Sprintf("redis://127.0.0.1:%d/0", port))
	ctx := context.Background()
	api := NewClient(d.url(), testAPIKey)
	waitFor(t, "the store ready", func() bool { h, err := api.Health(ctx); return err == nil && h.StoreReady })
	stopRedis()
	var h *Health
	waitFor(t, "a 503", func() bool { h, err = api.Health(ctx); return err != nil })
	var pe *Error
	if !errors.As(err, &pe) || pe.Status != 503 || !IsCode(err, CodeStoreUnavailable) || h == nil || h.StoreReady || h.Store != "redis" {
		t.Fatalf("Health: %+v %#v", h, err)
	}
}

// A URL without its scheme (or host) is a CodeBadURL *Error at once, from the
// API, the event stream and the Backend, not retried for ever.
func TestABadURLIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, u := range []string{"127.0.0.1:7070", "localhost:7070", "ftp://127.0.0.1:7070", "http://"} {
		_, err := NewClient(u, testAPIKey).GetUser(ctx, "a")
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != CodeBadURL || pe.Retryable() {
			t.Errorf("%q GetUser: %#v", u, err)
		}
		s := NewClient(u, testAPIKey).Events(StreamOptions{})
		if s.Next(ctx) || !IsCode(s.Err(), CodeBadURL) {
			t.Errorf("%q stream: %v", u, s.Err())
		}
		b := NewBackend(BackendOptions{URL: u, APIKey: testAPIKey, Origin: "go-bad-url"})
		if _, err := b.Connect(ctx); !IsCode(err, CodeBadURL) {
			t.Errorf("%q Connect: %v", u, err)
		}
	}
	for _, u := range []string{"ws://", "wss:/x", "ws:127.0.0.1:7070"} {
		if _, err := NewBackend(BackendOptions{URL: u, APIKey: testAPIKey, Origin: "go-bad-url"}).Connect(ctx); !IsCode(err, CodeBadURL) {
			t.Errorf("%q Connect: %v", u, err)
		}
	}
	// A Backend takes ws:// as the Node and Python SDKs' do (it was CodeBadURL).
	b := NewBackend(BackendOptions{URL: "ws" + strings.TrimPrefix(shared.url(), "http") + "/", APIKey: testAPIKey, Origin: "go-ws-url"})
	if w, err := b.Connect(ctx); err != nil || w.Origin != "go-ws-url" {
		t.Fatalf("ws:// Connect: %+v %v", w, err)
	}
	b.End(ctx, true)
}

// A negative TTL, or one under a second (cut to whole seconds), minted a token
// dead on arrival; the Node and Python SDKs refuse theirs too. A token expired
// on purpose is ExpiresAt's.
func TestMintTokenRefusesATTLUnderASecond(t *testing.T) {
	for _, ttl := range []time.Duration{-time.Minute, -1, 500 * time.Millisecond} {
		if _, err := MintToken(TokenOptions{Secret: []byte(testJWTSecret), UserID: "tess", TTL: ttl}); err == nil {
			t.Errorf("TTL %v: minted", ttl)
		}
	}
	for _, o := range []TokenOptions{{TTL: time.Second}, {}, {ExpiresAt: time.Now().Add(-time.Minute)}} {
		o.Secret, o.UserID = []byte(testJWTSecret), "tess"
		if _, err := MintToken(o); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
