// SPDX-License-Identifier: MIT

package presence

import (
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Delivery is one verified webhook request. Events holds only the events
// not applied before (with a Guard).
type Delivery struct {
	Instance   string  `json:"instance"`
	FirstSeq   int64   `json:"first_seq"`
	LastSeq    int64   `json:"last_seq"`
	Events     []Event `json:"events"`
	Gap        *Gap    `json:"gap,omitempty"`
	Duplicates int     `json:"-"`
	appliedTo  int64   // the Guard's LastSeq before this delivery, for Forget
}

// WebhookError is a refused delivery; Status is the HTTP status to answer.
type WebhookError struct {
	Code    string // missing_signature, bad_timestamp, stale, bad_signature, bad_body, replayed, body_too_large, no_secret (500: none configured); the handler's in_progress
	Message string
	Status  int
}

func (e *WebhookError) Error() string { return "presence webhook: " + e.Code + ": " + e.Message }

// Guard remembers, in this process, the signatures accepted inside the
// tolerance window (a replayed request repeats one; presenced signs every
// retry anew) and the last seq applied per log instance (to drop the events
// of a batch sent again). Persist LastSeq with your data if a restart must
// not re-apply a batch. Safe for concurrent use. The zero Guard works
// (100,000 signatures kept at most, as NewGuard's).
type Guard struct {
	Tolerance     time.Duration
	MaxSignatures int
	mu            sync.Mutex
	seen          map[string]*list.Element
	order         *list.List // of sigEntry, oldest first
	lastSeq       map[string]int64
}

type sigEntry struct {
	sig string
	ts  int64
}

// NewGuard with the verification's tolerance window.
func NewGuard(tolerance time.Duration) *Guard {
	return &Guard{Tolerance: tolerance, MaxSignatures: 100000, seen: map[string]*list.Element{}, order: list.New(), lastSeq: map[string]int64{}}
}

// initLocked makes a Guard not made by NewGuard (&Guard{}, a field of a
// struct) usable: its nil maps and list panicked at the first delivery.
func (g *Guard) initLocked() {
	if g.seen == nil {
		g.seen, g.order = map[string]*list.Element{}, list.New()
	}
	if g.lastSeq == nil {
		g.lastSeq = map[string]int64{}
	}
}

// replayed keeps a signature for as long as its request would verify: the
// longer of the Guard's and the verification's tolerance (a Tolerance raised
// on the handler alone let a request replayed past the Guard's through).
// sigs are the entries of Presence-Signature that verified (several during a
// key rotation), never the raw header: a replay padded with an entry that
// matches nothing (",v1=00") would be a header never seen. Any one of them
// seen before makes a replay; each is remembered.
func (g *Guard) replayed(sigs []string, ts, nowMs int64, tolerance time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	if g.Tolerance > tolerance {
		tolerance = g.Tolerance
	}
	max := g.MaxSignatures
	if max <= 0 {
		max = 100000
	}
	for e := g.order.Front(); e != nil; e = g.order.Front() {
		se := e.Value.(sigEntry)
		if se.ts >= nowMs-tolerance.Milliseconds() && g.order.Len() < max {
			break
		}
		g.order.Remove(e)
		delete(g.seen, se.sig)
	}
	for _, sig := range sigs {
		if _, ok := g.seen[sig]; ok {
			return true
		}
	}
	for _, sig := range sigs {
		g.seen[sig] = g.order.PushBack(sigEntry{sig, ts})
	}
	return false
}

func (g *Guard) fresh(d *Delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	last := g.lastSeq[d.Instance]
	d.appliedTo = last
	kept := d.Events[:0]
	for _, e := range d.Events {
		if e.Seq > last {
			kept = append(kept, e)
		}
	}
	d.Duplicates = len(d.Events) - len(kept)
	d.Events = kept
	if d.LastSeq > last {
		g.lastSeq[d.Instance] = d.LastSeq
	}
}

// SetLastSeq restores what LastSeq said (saved with your data) into the
// Guard of a restarted process, so that it does not re-apply a batch sent
// again; the Node and Python SDKs' guards expose that map as is.
func (g *Guard) SetLastSeq(instance string, seq int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	g.lastSeq[instance] = seq
}

// LastSeq is the last seq applied for a log instance.
func (g *Guard) LastSeq(instance string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastSeq[instance]
}

// Forget lets presenced's retry of a delivery whose handling failed through:
// the events this delivery held, not those applied before it (a batch that
// overlapped them, or was all duplicates, must not open them again).
func (g *Guard) Forget(d *Delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	back := d.FirstSeq - 1
	if d.appliedTo > back {
		back = d.appliedTo
	}
	if back < g.lastSeq[d.Instance] {
		g.lastSeq[d.Instance] = back
	}
}

// VerifyOptions of VerifyWebhook.
type VerifyOptions struct {
	// Secrets: the endpoint's secret; several during a key rotation.
	Secrets   [][]byte
	Tolerance time.Duration // distance of Presence-Timestamp from this clock (5 min)
	Guard     *Guard        // replays and re-sent batches; nil: no such checks
	Now       func() time.Time
}

// VerifyWebhook checks the signature over the raw body and parses the delivery.
// The error is a *WebhookError. With a Guard, the delivery's events count as
// applied from here: call Guard.Forget(d) when applying them fails.
func VerifyWebhook(o VerifyOptions, header http.Header, body []byte) (*Delivery, error) {
	d, err := verify(o, header, body)
	if err == nil && o.Guard != nil {
		o.Guard.fresh(d)
	}
	return d, err
}

// verify is VerifyWebhook but for the Guard's dropping of events applied
// before, which the handler does once it owns the instance's deliveries.
func verify(o VerifyOptions, header http.Header, body []byte) (*Delivery, error) {
	// An empty secret (an unset environment variable) would accept a
	// signature anyone can make: refuse every request instead, with a 500
	// that presenced retries until the secret is there.
	secrets := make([][]byte, 0, len(o.Secrets))
	for _, s := range o.Secrets {
		if len(s) > 0 {
			secrets = append(secrets, s)
		}
	}
	if len(secrets) == 0 {
		return nil, &WebhookError{"no_secret", "no webhook secret configured (VerifyOptions.Secrets empty)", 500}
	}
	tol := o.Tolerance
	if tol == 0 {
		tol = 5 * time.Minute
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	ts := headerValue(header, "Presence-Timestamp")
	sig := headerValue(header, "Presence-Signature")
	if sig == "" {
		return nil, &WebhookError{"missing_signature", "no Presence-Signature header", 401}
	}
	tsMs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || tsMs < 0 || len(ts) > 16 {
		return nil, &WebhookError{"bad_timestamp", "no valid Presence-Timestamp header", 401}
	}
	nowMs := now.UnixMilli()
	if d := nowMs - tsMs; d > tol.Milliseconds() || -d > tol.Milliseconds() {
		return nil, &WebhookError{"stale", fmt.Sprintf("timestamp %s is more than %s from this clock", ts, tol), 401}
	}
	var matched []string // the entries that verified, each once: the Guard's key
	for _, secret := range secrets {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(ts + "."))
		mac.Write(body)
		want := []byte("v1=" + hex.EncodeToString(mac.Sum(nil)))
		ok := false
		for _, part := range strings.Split(sig, ",") {
			if hmac.Equal([]byte(strings.TrimSpace(part)), want) {
				ok = true
			}
		}
		// Two secrets alike (go.mod's Go has no slices.Contains).
		for _, m := range matched {
			if m == string(want) {
				ok = false
			}
		}
		if ok {
			matched = append(matched, string(want))
		}
	}
	if len(matched) == 0 {
		return nil, &WebhookError{"bad_signature", "signature does not match", 401}
	}
	var d Delivery
	if err := json.Unmarshal(body, &d); err != nil || d.Instance == "" || d.Events == nil {
		return nil, &WebhookError{"bad_body", "signed, but not a delivery", 400}
	}
	if o.Guard != nil {
		if o.Guard.replayed(matched, tsMs, nowMs, tol) {
			return nil, &WebhookError{"replayed", "this request was delivered before", 409}
		}
	}
	return &d, nil
}

// headerValue is header.Get, and else a key of other case: a header map
// filled by hand (from AWS Lambda's lower-case map, a queued request) keeps
// its keys as written, which Get does not find; the Node and Python SDKs
// look them up regardless of case.
func headerValue(header http.Header, name string) string {
	if v := header.Get(name); v != "" {
		return v
	}
	for k, v := range header {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0]
		}
	}
	return ""
}

// WebhookHandler receives deliveries: it answers 204 once OnDelivery returned
// nil, 500 when it returned an error (presenced then retries the batch, and
// the guard lets the retry through), 401/409/400/413 when refused; 409
// in_progress to a delivery of a log instance while OnDelivery handles one
// of it (presenced's retry after its timeout: it comes again later).
type WebhookHandler struct {
	VerifyOptions
	OnDelivery func(ctx context.Context, d *Delivery) error
	MaxBody    int64 // 16 MiB
	mu         sync.Mutex
	handling   map[string]bool // log instances with a delivery in OnDelivery
}

// NewWebhookHandler with a Guard of its own.
func NewWebhookHandler(secret []byte, onDelivery func(context.Context, *Delivery) error) *WebhookHandler {
	return &WebhookHandler{VerifyOptions: VerifyOptions{Secrets: [][]byte{secret}, Guard: NewGuard(5 * time.Minute)}, OnDelivery: onDelivery}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	w.Write(b)
}

func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, 405, "method_not_allowed", "POST only")
		return
	}
	max := h.MaxBody
	if max == 0 {
		max = 16 << 20
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		writeError(w, 413, "body_too_large", err.Error())
		return
	}
	d, err := verify(h.VerifyOptions, r.Header, body)
	if err != nil {
		we := err.(*WebhookError)
		writeError(w, we.Status, we.Code, we.Message)
		return
	}
	// presenced retries a batch its request timed out on while OnDelivery
	// may still be at it. That retry must wait (a 409, which presenced
	// retries): answered 2xx as all duplicates, and the first attempt then
	// failing, the batch would be lost.
	h.mu.Lock()
	if h.handling[d.Instance] {
		h.mu.Unlock()
		writeError(w, 409, "in_progress", "an earlier attempt of this instance's deliveries is still being handled")
		return
	}
	if h.handling == nil {
		h.handling = map[string]bool{}
	}
	h.handling[d.Instance] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.handling, d.Instance)
		h.mu.Unlock()
	}()
	if h.Guard != nil {
		h.Guard.fresh(d)
	}
	if err := h.OnDelivery(r.Context(), d); err != nil {
		if h.Guard != nil {
			h.Guard.Forget(d)
		}
		writeError(w, 500, "handler_failed", err.Error())
		return
	}
	w.WriteHeader(204)
}
