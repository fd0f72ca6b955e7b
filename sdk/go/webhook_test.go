// SPDX-License-Identifier: MIT

package presence

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

const hookSecret = "sdk-go-webhook-secret-0123456789ab"

type recorder struct {
	mu       sync.Mutex
	events   []Event
	captured []capturedReq
	attempts int
}

type capturedReq struct {
	header http.Header
	body   []byte
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Type
	}
	return out
}

func sign(ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

func TestWebhookHandler(t *testing.T) {
	rec := &recorder{}
	h := NewWebhookHandler([]byte(hookSecret), func(_ context.Context, d *Delivery) error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.attempts++
		if rec.attempts == 1 {
			return errors.New("database down") // presenced retries the batch
		}
		rec.events = append(rec.events, d.Events...)
		return nil
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.captured = append(rec.captured, capturedReq{r.Header.Clone(), body})
		rec.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	hookURL := fmt.Sprintf("http://%s/hook", ln.Addr())

	d := ownDaemon(t, "--webhook", "url="+hookURL+",secret="+hookSecret+",name=go",
		"--webhook-batch-ms", "10", "--webhook-retry-min-ms", "50", "--webhook-retry-max-ms", "100")
	mustUser(t, d, TokenOptions{UserID: "alice"}).close()
	// The daemon's first event is its fresh-start cleanup (docs/webhooks.md).
	waitFor(t, "deliveries", func() bool { return len(rec.types()) >= 5 })
	if fmt.Sprint(rec.types()) != "[cleanup session.connected user.online session.disconnected user.offline]" {
		t.Fatalf("delivered %v", rec.types())
	}
	if rec.attempts < 2 {
		t.Error("the failed delivery was not retried")
	}

	post := func(hdr map[string]string, body []byte) (int, string) {
		req, _ := http.NewRequest("POST", hookURL, bytes.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var e struct{ Error struct{ Code string } }
		json.NewDecoder(res.Body).Decode(&e)
		return res.StatusCode, e.Error.Code
	}
	c := rec.captured[len(rec.captured)-1]
	ts, sig := c.header.Get("Presence-Timestamp"), c.header.Get("Presence-Signature")
	n := len(rec.types())
	check := func(what string, status int, code string, wantStatus int, wantCode string) {
		if status != wantStatus || code != wantCode {
			t.Errorf("%s: %d %s, want %d %s", what, status, code, wantStatus, wantCode)
		}
	}
	s, code := post(map[string]string{"Presence-Timestamp": ts, "Presence-Signature": sig}, c.body)
	check("replay", s, code, 409, "replayed")
	// The same capture with an entry that matches nothing added: still the
	// delivery seen, refused as a replay.
	for _, padded := range []string{sig + ",v1=00", "v1=00, " + sig} {
		s, code = post(map[string]string{"Presence-Timestamp": ts, "Presence-Signature": padded}, c.body)
		check("replay, "+padded, s, code, 409, "replayed")
	}
	s, code = post(map[string]string{"Presence-Timestamp": ts, "Presence-Signature": sig}, bytes.Replace(c.body, []byte("alice"), []byte("malle"), 1))
	check("forged", s, code, 401, "bad_signature")
	old := strconv.FormatInt(time.Now().Add(-10*time.Minute).UnixMilli(), 10)
	s, code = post(map[string]string{"Presence-Timestamp": old, "Presence-Signature": sign(old, c.body)}, c.body)
	check("stale", s, code, 401, "stale")
	s, code = post(map[string]string{"Presence-Timestamp": ts}, c.body)
	check("unsigned", s, code, 401, "missing_signature")
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	s, code = post(map[string]string{"Presence-Timestamp": now, "Presence-Signature": sign(now, c.body)}, c.body)
	check("re-sent batch", s, code, 204, "")
	if len(rec.types()) != n {
		t.Error("a re-sent batch was applied twice")
	}
}

func TestVerifyRotationAndGuard(t *testing.T) {
	body := []byte(`{"instance":"i1","first_seq":1,"last_seq":2,"events":[{"seq":1},{"seq":2}]}`)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	hdr := http.Header{}
	hdr.Set("Presence-Timestamp", ts)
	hdr.Set("Presence-Signature", "v1=00, "+sign(ts, body))
	g := NewGuard(5 * time.Minute)
	o := VerifyOptions{Secrets: [][]byte{[]byte("old"), []byte(hookSecret)}, Guard: g}
	d, err := VerifyWebhook(o, hdr, body)
	if err != nil || len(d.Events) != 2 {
		t.Fatalf("%v %+v", err, d)
	}
	// The captured request again, its junk entry dropped or another added:
	// the entry that verified was seen, so it is a replay (the raw header
	// was the key).
	for _, replay := range []string{sign(ts, body), sign(ts, body) + ",v1=11"} {
		hdr.Set("Presence-Signature", replay)
		var we *WebhookError
		if _, err = VerifyWebhook(o, hdr, body); !errors.As(err, &we) || we.Code != "replayed" {
			t.Errorf("replay %s: %v", replay, err)
		}
	}
	// A retry of the batch (a new timestamp, signed anew) with a junk entry:
	// accepted, its events dropped by seq.
	ts2 := strconv.FormatInt(time.Now().UnixMilli()+1, 10)
	h2 := http.Header{}
	h2.Set("Presence-Timestamp", ts2)
	h2.Set("Presence-Signature", sign(ts2, body)+",v1=11")
	d, err = VerifyWebhook(o, h2, body)
	if err != nil || d.Duplicates != 2 || len(d.Events) != 0 || g.LastSeq("i1") != 2 {
		t.Fatalf("re-sent: %v %+v", err, d)
	}
	// Rotation, both entries sent: a replay carrying only one is still refused.
	ts3 := strconv.FormatInt(time.Now().UnixMilli()+2, 10)
	signOld := func() string {
		mac := hmac.New(sha256.New, []byte("old"))
		mac.Write([]byte(ts3 + "."))
		mac.Write(body)
		return "v1=" + hex.EncodeToString(mac.Sum(nil))
	}()
	h3 := http.Header{}
	h3.Set("Presence-Timestamp", ts3)
	h3.Set("Presence-Signature", signOld+","+sign(ts3, body))
	if d, err = VerifyWebhook(o, h3, body); err != nil || d.Duplicates != 2 {
		t.Fatalf("both entries: %v %+v", err, d)
	}
	for _, one := range []string{signOld, sign(ts3, body)} {
		h3.Set("Presence-Signature", one)
		var we *WebhookError
		if _, err = VerifyWebhook(o, h3, body); !errors.As(err, &we) || we.Code != "replayed" {
			t.Errorf("one entry of two, %s: %v", one, err)
		}
	}
	_, err = VerifyWebhook(VerifyOptions{Secrets: [][]byte{[]byte("other")}}, hdr, body)
	var we *WebhookError
	if !errors.As(err, &we) || we.Code != "bad_signature" || we.Status != 401 {
		t.Errorf("other secret: %v", err)
	}
}

// An empty secret (an unset environment variable) accepts nothing, not a
// request signed with the empty key.
func TestEmptySecretAcceptsNothing(t *testing.T) {
	body := []byte(`{"instance":"i1","first_seq":1,"last_seq":1,"events":[{"seq":1,"type":"user.online","user_id":"mallory"}]}`)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	mac := hmac.New(sha256.New, nil)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	hdr := http.Header{}
	hdr.Set("Presence-Timestamp", ts)
	hdr.Set("Presence-Signature", "v1="+hex.EncodeToString(mac.Sum(nil)))
	for _, secrets := range [][][]byte{nil, {nil}, {[]byte("")}} {
		d, err := VerifyWebhook(VerifyOptions{Secrets: secrets}, hdr, body)
		var we *WebhookError
		if !errors.As(err, &we) || we.Status != 500 || we.Code != "no_secret" {
			t.Errorf("secrets %q: %+v %v", secrets, d, err)
		}
	}
	called := false
	h := NewWebhookHandler([]byte(""), func(context.Context, *Delivery) error { called = true; return nil })
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/hook", bytes.NewReader(body))
	req.Header = hdr
	h.ServeHTTP(rec, req)
	if called || rec.Code != 500 {
		t.Errorf("handler with an empty secret: %d, delivered %v", rec.Code, called)
	}
}

// A delivered event keeps its fields beyond Event's in Raw, as the stream's
// do: a channel event's channel (api.md's example).
func TestDeliveredEventsKeepRaw(t *testing.T) {
	ev := `{"seq":412,"type":"channel.join","ts":1764320005000,"reason":"explicit","channel":"room:1","user_id":"cat","data":{"name":"Cat"},"count":3}`
	body := []byte(`{"instance":"i3","first_seq":412,"last_seq":412,"events":[` + ev + `]}`)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	hdr := http.Header{}
	hdr.Set("Presence-Timestamp", ts)
	hdr.Set("Presence-Signature", sign(ts, body))
	d, err := VerifyWebhook(VerifyOptions{Secrets: [][]byte{[]byte(hookSecret)}}, hdr, body)
	if err != nil || len(d.Events) != 1 {
		t.Fatalf("%v %+v", err, d)
	}
	var extra struct {
		Channel string
		Count   int
	}
	if json.Unmarshal(d.Events[0].Raw, &extra); extra.Channel != "room:1" || extra.Count != 3 || d.Events[0].UserID != "cat" {
		t.Fatalf("event %+v, Raw %s", d.Events[0], d.Events[0].Raw)
	}
	// and typed, as the Node SDK's PresenceEvent (they were in Raw only)
	if e := d.Events[0]; e.Channel != "room:1" || e.Count != 3 || string(e.Data) != `{"name":"Cat"}` {
		t.Fatalf("typed channel fields %+v", e)
	}
}

// A failed delivery lets its own events through again, not those applied
// before it: a batch that overlaps applied ones, failing, re-applies nothing.
func TestForgetKeepsWhatWasApplied(t *testing.T) {
	var mu sync.Mutex
	var applied []int64
	fail := false
	h := NewWebhookHandler([]byte(hookSecret), func(_ context.Context, d *Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			return errors.New("database down")
		}
		for _, e := range d.Events {
			applied = append(applied, e.Seq)
		}
		return nil
	})
	deliver := func(first, last int64, failing bool) int {
		events := ""
		for q := first; q <= last; q++ {
			if events != "" {
				events += ","
			}
			events += fmt.Sprintf(`{"seq":%d,"type":"user.online"}`, q)
		}
		body := []byte(fmt.Sprintf(`{"instance":"i4","first_seq":%d,"last_seq":%d,"events":[%s]}`, first, last, events))
		time.Sleep(2 * time.Millisecond) // a new timestamp: a new signature, as presenced's retries have
		ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
		req := httptest.NewRequest("POST", "/hook", bytes.NewReader(body))
		req.Header.Set("Presence-Timestamp", ts)
		req.Header.Set("Presence-Signature", sign(ts, body))
		mu.Lock()
		fail = failing
		mu.Unlock()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	deliver(1, 5, false)
	if code := deliver(3, 8, true); code != 500 {
		t.Fatalf("failing handler: %d", code)
	}
	deliver(3, 8, false) // presenced's retry
	deliver(6, 8, true)  // all applied already; the handler fails anyway
	deliver(6, 8, false)
	if fmt.Sprint(applied) != "[1 2 3 4 5 6 7 8]" {
		t.Fatalf("applied %v", applied)
	}
}

// A handler slower than presenced's --webhook-timeout-ms: presenced retries
// the batch while the first attempt still runs. If that attempt then fails,
// its events must still be delivered (the retry must not be answered 2xx
// as if they were applied).
func TestSlowFailingHandlerLosesNothing(t *testing.T) {
	var mu sync.Mutex
	var applied []string
	attempts := 0
	h := NewWebhookHandler([]byte(hookSecret), func(_ context.Context, d *Delivery) error {
		mu.Lock()
		attempts++
		first := attempts == 1
		mu.Unlock()
		if first {
			time.Sleep(1500 * time.Millisecond) // the database hangs, then fails
			return errors.New("database timeout")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range d.Events {
			applied = append(applied, e.Type+" "+e.UserID)
		}
		return nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	d := ownDaemon(t, "--webhook", "url=http://"+ln.Addr().String()+"/,secret="+hookSecret+",name=slow,events=user.*",
		"--webhook-batch-ms", "10", "--webhook-timeout-ms", "300", "--webhook-retry-min-ms", "50", "--webhook-retry-max-ms", "200")
	api := NewClient(d.url(), testAPIKey)
	if _, err := api.PutSession(context.Background(), "slow-s", "slow-u", 60*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if _, err := api.PutSession(context.Background(), "slow-s2", "slow-v", 60*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "slow-v delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(applied) > 0 && applied[len(applied)-1] == "user.online slow-v"
	})
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(applied) != "[user.online slow-u user.online slow-v]" {
		t.Fatalf("applied %v", applied)
	}
}

// A header map filled by hand with lower-case keys (AWS Lambda's) verifies.
func TestVerifyHeadersOfAnyCase(t *testing.T) {
	body := []byte(`{"instance":"i5","first_seq":1,"last_seq":1,"events":[{"seq":1}]}`)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	hdr := http.Header{"presence-timestamp": {ts}, "presence-signature": {sign(ts, body)}}
	if d, err := VerifyWebhook(VerifyOptions{Secrets: [][]byte{[]byte(hookSecret)}}, hdr, body); err != nil || len(d.Events) != 1 {
		t.Fatalf("%v %+v", err, d)
	}
}

// A Guard not made by NewGuard works, and a replay is refused for as long as
// the request verifies, though the handler's Tolerance is longer than the
// Guard's.
func TestGuardZeroValueAndTolerance(t *testing.T) {
	body := []byte(`{"instance":"i6","first_seq":1,"last_seq":1,"events":[{"seq":1}]}`)
	start := time.Now()
	ts := strconv.FormatInt(start.UnixMilli(), 10)
	hdr := http.Header{}
	hdr.Set("Presence-Timestamp", ts)
	hdr.Set("Presence-Signature", sign(ts, body))
	for _, c := range []struct {
		what  string
		guard *Guard
	}{{"zero Guard", &Guard{}}, {"Guard of 1 min, tolerance 10 min", NewGuard(time.Minute)}} {
		o := VerifyOptions{Secrets: [][]byte{[]byte(hookSecret)}, Guard: c.guard, Tolerance: 10 * time.Minute}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%s: panicked: %v", c.what, r)
				}
			}()
			if _, err := VerifyWebhook(o, hdr, body); err != nil {
				t.Fatalf("%s: %v", c.what, err)
			}
			// Another request meanwhile, then the replay, 5 minutes on.
			later := start.Add(5 * time.Minute)
			o.Now = func() time.Time { return later }
			ts2 := strconv.FormatInt(later.UnixMilli(), 10)
			h2 := http.Header{}
			h2.Set("Presence-Timestamp", ts2)
			h2.Set("Presence-Signature", sign(ts2, body))
			VerifyWebhook(o, h2, body)
			_, err := VerifyWebhook(o, hdr, body)
			var we *WebhookError
			if !errors.As(err, &we) || we.Code != "replayed" {
				t.Errorf("%s: replay 5 min on: %v", c.what, err)
			}
		}()
	}
}

// A restarted process gives the Guard the LastSeq it saved: a batch sent
// again is not applied twice.
func TestGuardLastSeqRestored(t *testing.T) {
	g := NewGuard(5 * time.Minute)
	g.SetLastSeq("i7", 5)
	body := []byte(`{"instance":"i7","first_seq":3,"last_seq":8,"events":[{"seq":3},{"seq":4},{"seq":5},{"seq":6},{"seq":7},{"seq":8}]}`)
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	hdr := http.Header{}
	hdr.Set("Presence-Timestamp", ts)
	hdr.Set("Presence-Signature", sign(ts, body))
	d, err := VerifyWebhook(VerifyOptions{Secrets: [][]byte{[]byte(hookSecret)}, Guard: g}, hdr, body)
	if err != nil || len(d.Events) != 3 || d.Events[0].Seq != 6 || d.Duplicates != 3 || g.LastSeq("i7") != 8 {
		t.Fatalf("%v %+v", err, d)
	}
}
