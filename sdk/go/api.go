// SPDX-License-Identifier: MIT

package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// User is the presence of one user (GET /v1/users/{id}).
type User struct {
	UserID   string `json:"user_id"`
	Status   string `json:"status"` // online, idle, offline
	Since    int64  `json:"since"`  // ms since the epoch; 0: never seen
	LastSeen int64  `json:"last_seen"`
	Sessions int    `json:"sessions"`
	Version  int64  `json:"version"`
	// Status that people set (protocol.md section 6), the truth (never masked).
	Availability      string                  `json:"availability,omitempty"` // auto, dnd, away, invisible
	AvailabilitySince int64                   `json:"availability_since,omitempty"`
	LastActive        int64                   `json:"last_active,omitempty"`
	Message           *StatusMessage          `json:"message,omitempty"`
	Devices           map[string]DeviceStatus `json:"devices,omitempty"`
}

// StatusMessage is a user's status message; Expires 0: none.
type StatusMessage struct {
	Text    string `json:"text"`
	Emoji   string `json:"emoji"`
	Expires int64  `json:"expires"`
	Set     int64  `json:"set"`
}

// DeviceStatus is the best status of a user's sessions of one device kind.
type DeviceStatus struct {
	Status   string `json:"status"`
	Sessions int    `json:"sessions"`
}

// Session is one open session of a user.
type Session struct {
	SessionID string          `json:"session_id"`
	Status    string          `json:"status"` // online, idle
	Meta      json.RawMessage `json:"meta"`   // the token's meta claim, or null
	Connected int64           `json:"connected"`
	Since     int64           `json:"since"`
	Instance  string          `json:"instance"`
	// Device is the session's device kind: "web" unless its token or its
	// backend named another (protocol.md section 6).
	Device string `json:"device"`
}

// Health is the answer of GET /healthz.
type Health struct {
	Status     string `json:"status"`
	Instance   string `json:"instance"`
	UptimeS    int64  `json:"uptime_s"`
	Store      string `json:"store"`
	StoreReady bool   `json:"store_ready"`
}

// Client speaks presenced's backend HTTP API. Every failure is an *Error.
// HTTP nil (a Client written as a literal): a client with NewClient's timeout.
type Client struct {
	URL    string
	APIKey string
	HTTP   *http.Client
}

// httpClient is c.HTTP, or when the fields were set by hand without it, one
// with NewClient's timeout: a nil HTTP made every call panic.
func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

var defaultHTTP = &http.Client{Timeout: 10 * time.Second}

// NewClient for presenced at baseURL (http://127.0.0.1:7070) with the backend API key.
func NewClient(baseURL, apiKey string) *Client {
	return &Client{URL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// Do sends one request; the JSON answer is decoded into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	status, data, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return decodeError(status, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Status: status, Code: CodeBadResponse, Message: err.Error(), Err: err}
	}
	return nil
}

// send makes one request and reads the answer, whatever its status.
func (c *Client) send(ctx context.Context, method, path string, body any) (int, []byte, error) {
	if err := checkURL(c.URL); err != nil {
		return 0, nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", bearer(c.APIKey))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return 0, nil, &Error{Code: CodeNetwork, Message: err.Error(), Err: err}
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return 0, nil, &Error{Status: res.StatusCode, Code: CodeNetwork, Message: err.Error(), Err: err}
	}
	return res.StatusCode, data, nil
}

// bearer is the Authorization value of an API key, without the whitespace
// around it, as the Node and Python SDKs send it: a key read from a file
// keeps its newline, which net/http refuses to send, so every request failed
// as a retryable network error and the stream and the Backend retried forever.
func bearer(apiKey string) string {
	return "Bearer " + strings.TrimSpace(apiKey)
}

// pathEscape percent-encodes an id for one path segment as the Node and
// Python SDKs do (encodeURIComponent, quote(safe="")): url.PathEscape leaves
// '+' as is, and presenced reads a '+' in a path as a space, so GetUser of
// "alice+test@example.com" answered for "alice test@example.com".
func pathEscape(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), "+", "%2B")
}

// nonEmpty refuses an empty id or channel name before any request: it made
// another path (GET /v1/users/, DELETE /v1/sessions/), which presenced
// answered 404 not_found "no such endpoint" (or bad_user_id for some), so a
// caller's bug looked like a missing route or a gone session. The Node and
// Python SDKs throw a TypeError at the call.
func nonEmpty(args ...string) error {
	for i := 0; i+1 < len(args); i += 2 {
		if args[i+1] == "" {
			return &Error{Code: CodeBadArgument, Message: args[i] + " must not be empty"}
		}
	}
	return nil
}

func decodeError(status int, data []byte) *Error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
		return &Error{Status: status, Code: e.Error.Code, Message: e.Error.Message}
	}
	if len(data) > 200 {
		data = data[:200]
	}
	return &Error{Status: status, Code: fmt.Sprintf("http_%d", status), Message: string(data)}
}

// GetUser: GET /v1/users/{id}.
func (c *Client) GetUser(ctx context.Context, userID string) (*User, error) {
	if err := nonEmpty("GetUser: userID", userID); err != nil {
		return nil, err
	}
	var u User
	if err := c.Do(ctx, "GET", "/v1/users/"+pathEscape(userID), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// GetUsers: POST /v1/users/query in requests of 1000 ids; in the order asked.
func (c *Client) GetUsers(ctx context.Context, userIDs []string) ([]User, error) {
	out := make([]User, 0, len(userIDs))
	for i := 0; i < len(userIDs); i += 1000 {
		j := i + 1000
		if j > len(userIDs) {
			j = len(userIDs)
		}
		var r struct{ Users []User }
		if err := c.Do(ctx, "POST", "/v1/users/query", map[string]any{"user_ids": userIDs[i:j]}, &r); err != nil {
			return nil, err
		}
		out = append(out, r.Users...)
	}
	return out, nil
}

// Sessions: GET /v1/users/{id}/sessions.
func (c *Client) Sessions(ctx context.Context, userID string) ([]Session, error) {
	if err := nonEmpty("Sessions: userID", userID); err != nil {
		return nil, err
	}
	var r struct{ Sessions []Session }
	if err := c.Do(ctx, "GET", "/v1/users/"+pathEscape(userID)+"/sessions", nil, &r); err != nil {
		return nil, err
	}
	return r.Sessions, nil
}

// Kick: DELETE /v1/sessions/{id}; the client is closed with 4003. An *Error
// with CodeNoSession when it is gone.
func (c *Client) Kick(ctx context.Context, sessionID string) error {
	if err := nonEmpty("Kick: sessionID", sessionID); err != nil {
		return err
	}
	return c.Do(ctx, "DELETE", "/v1/sessions/"+pathEscape(sessionID), nil, nil)
}

// ChannelMember is a member of a channel (protocol.md section 4).
type ChannelMember struct {
	UserID string `json:"user_id"`
	Status string `json:"status"`
	// Availability: auto, dnd, away or invisible (the truth, as GetUser's;
	// it was not decoded, so a Go backend could not tell a dnd member).
	Availability string          `json:"availability,omitempty"`
	Data         json.RawMessage `json:"data"`
	Since        int64           `json:"since"`
	Version      int64           `json:"version"`
	Sessions     []struct {
		SessionID string          `json:"session_id"`
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		Joined    int64           `json:"joined"`
	} `json:"sessions,omitempty"`
}

// MembersPage is one page of a channel's members; Next is nil on the last.
type MembersPage struct {
	Channel string          `json:"channel"`
	Count   int             `json:"count"`
	Members []ChannelMember `json:"members"`
	Next    *string         `json:"next"`
}

// ChannelCount is a channel and its member count.
type ChannelCount struct {
	Channel string `json:"channel"`
	Count   int    `json:"count"`
	// ShownCount: the count the channel's members are shown (invisible
	// members left out). From Channels only: Channel leaves it 0, as
	// GET /v1/channels/{name} has no shown_count.
	ShownCount int `json:"shown_count"`
}

// Channel: GET /v1/channels/{name} (its member count).
func (c *Client) Channel(ctx context.Context, name string) (*ChannelCount, error) {
	if err := nonEmpty("Channel: name", name); err != nil {
		return nil, err
	}
	var r ChannelCount
	if err := c.Do(ctx, "GET", "/v1/channels/"+pathEscape(name), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ChannelMembers: one page (limit 1..1000; after: the previous page's Next, or "").
func (c *Client) ChannelMembers(ctx context.Context, name string, limit int, after string) (*MembersPage, error) {
	if err := nonEmpty("ChannelMembers: name", name); err != nil {
		return nil, err
	}
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if after != "" {
		q.Set("after", after)
	}
	var r MembersPage
	if err := c.Do(ctx, "GET", "/v1/channels/"+pathEscape(name)+"/members?"+q.Encode(), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// AllChannelMembers: every member of the channel, page after page of limit
// (1..1000; 0: 1000), as the Node and Python SDKs' allChannelMembers /
// all_channel_members (which a Go backend had to write itself around
// ChannelMembers). A member present throughout is listed once.
func (c *Client) AllChannelMembers(ctx context.Context, name string, limit int) ([]ChannelMember, error) {
	if err := nonEmpty("AllChannelMembers: name", name); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1000
	}
	var out []ChannelMember
	after := ""
	for {
		p, err := c.ChannelMembers(ctx, name, limit, after)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Members...)
		if p.Next == nil || *p.Next == "" {
			return out, nil
		}
		after = *p.Next
	}
}

// Channels: the active channels under a prefix, one page; next is "" on the last.
func (c *Client) Channels(ctx context.Context, prefix string, limit int, after string) (channels []ChannelCount, next string, err error) {
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if after != "" {
		q.Set("after", after)
	}
	var r struct {
		Channels []ChannelCount `json:"channels"`
		Next     *string        `json:"next"`
	}
	if err := c.Do(ctx, "GET", "/v1/channels?"+q.Encode(), nil, &r); err != nil {
		return nil, "", err
	}
	if r.Next != nil {
		next = *r.Next
	}
	return r.Channels, next, nil
}

// UserChannel is a channel a user is a member of, with its member record.
type UserChannel struct {
	Channel string `json:"channel"`
	ChannelMember
}

// UserChannels: GET /v1/users/{id}/channels, the channels the user is a
// member of (the Node and Python SDKs' userChannels / user_channels).
func (c *Client) UserChannels(ctx context.Context, userID string) ([]UserChannel, error) {
	if err := nonEmpty("UserChannels: userID", userID); err != nil {
		return nil, err
	}
	var r struct {
		Channels []UserChannel `json:"channels"`
	}
	if err := c.Do(ctx, "GET", "/v1/users/"+pathEscape(userID)+"/channels", nil, &r); err != nil {
		return nil, err
	}
	return r.Channels, nil
}

// RemoveFromChannel: every session of the user leaves the channel (reason kicked).
func (c *Client) RemoveFromChannel(ctx context.Context, name, userID string) error {
	if err := nonEmpty("RemoveFromChannel: name", name, "RemoveFromChannel: userID", userID); err != nil {
		return err
	}
	return c.Do(ctx, "DELETE", "/v1/channels/"+pathEscape(name)+"/members/"+pathEscape(userID), nil, nil)
}

// UserAvailability is a user's availability as SetAvailability set it (the
// answer of PUT /v1/users/{id}/availability).
type UserAvailability struct {
	UserID       string `json:"user_id"`
	Availability string `json:"availability"` // auto, dnd, away, invisible
}

// SetAvailability: "auto", "dnd", "away" or "invisible"; returns what
// presenced stored, as the Node and Python SDKs' setAvailability /
// set_availability do.
func (c *Client) SetAvailability(ctx context.Context, userID, availability string) (*UserAvailability, error) {
	if err := nonEmpty("SetAvailability: userID", userID); err != nil {
		return nil, err
	}
	var r UserAvailability
	if err := c.Do(ctx, "PUT", "/v1/users/"+pathEscape(userID)+"/availability", map[string]string{"availability": availability}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// SetMessage sets the status message; expiresIn 0: no expiry, else whole seconds
// (a fraction is refused: bad_expiry). It returns the message as presenced
// stored it, as the Node and Python SDKs' setMessage / set_message do: its
// Expires is the expiry presenced reckoned (ms since the epoch, 0: none);
// nil when text and emoji were both empty (that clears it). Set is 0 (the
// answer does not carry it; GetUser does).
func (c *Client) SetMessage(ctx context.Context, userID, text, emoji string, expiresIn time.Duration) (*StatusMessage, error) {
	if err := nonEmpty("SetMessage: userID", userID); err != nil {
		return nil, err
	}
	body := map[string]any{"text": text}
	if emoji != "" {
		body["emoji"] = emoji
	}
	if expiresIn > 0 {
		// Whole seconds, as presenced takes them; a fraction is sent as it is
		// and refused (bad_expiry), as the Node and Python SDKs send theirs:
		// 1500 ms was cut to 1 s without a word, and 500 ms sent as 0.
		if expiresIn%time.Second == 0 {
			body["expires_in"] = int64(expiresIn / time.Second)
		} else {
			body["expires_in"] = expiresIn.Seconds()
		}
	}
	return c.putMessage(ctx, userID, body)
}

// SetMessageUntil sets the status message until a time (expires_at, ms; at
// most 400 days ahead, else bad_expiry), as the Node and Python SDKs'
// setMessage / set_message take expiresAt / expires_at_ms: SetMessage's
// whole seconds from now could not say "until 17:00" without a reckoning
// that a second's rounding made bad_expiry. Returns what SetMessage does.
func (c *Client) SetMessageUntil(ctx context.Context, userID, text, emoji string, until time.Time) (*StatusMessage, error) {
	if err := nonEmpty("SetMessageUntil: userID", userID); err != nil {
		return nil, err
	}
	body := map[string]any{"text": text, "expires_at": until.UnixMilli()}
	if emoji != "" {
		body["emoji"] = emoji
	}
	return c.putMessage(ctx, userID, body)
}

// putMessage: PUT /v1/users/{id}/message; the message as stored.
func (c *Client) putMessage(ctx context.Context, userID string, body map[string]any) (*StatusMessage, error) {
	var r struct {
		Message *StatusMessage `json:"message"`
	}
	if err := c.Do(ctx, "PUT", "/v1/users/"+pathEscape(userID)+"/message", body, &r); err != nil {
		return nil, err
	}
	return r.Message, nil
}

// ClearMessage: DELETE /v1/users/{id}/message.
func (c *Client) ClearMessage(ctx context.Context, userID string) error {
	if err := nonEmpty("ClearMessage: userID", userID); err != nil {
		return err
	}
	return c.Do(ctx, "DELETE", "/v1/users/"+pathEscape(userID)+"/message", nil, nil)
}

// PutSession creates or renews a session with a TTL (serverless backends); created reports which.
func (c *Client) PutSession(ctx context.Context, sessionID, userID string, ttl time.Duration, meta map[string]any) (created bool, err error) {
	return c.PutSessionWith(ctx, sessionID, userID, ttl, PutSessionOptions{Meta: meta})
}

// PutSessionOptions: what PUT /v1/sessions/{id} takes beside the user and the TTL.
type PutSessionOptions struct {
	Status string         // "online" (default) or "idle"; applied on a renewal too
	Meta   map[string]any // stored with the session
	Device string         // the device kind ("web" when empty), kept from the creation
}

// PutSessionWith is PutSession with a status and a device kind, as the Node
// and Python SDKs' putSession / put_session take them (PutSession could set
// neither: every serverless session was "web" and online).
func (c *Client) PutSessionWith(ctx context.Context, sessionID, userID string, ttl time.Duration, o PutSessionOptions) (created bool, err error) {
	if err := nonEmpty("PutSession: sessionID", sessionID, "PutSession: userID", userID); err != nil {
		return false, err
	}
	body := map[string]any{"user": userID, "ttl_ms": ttl.Milliseconds()}
	if o.Meta != nil {
		body["meta"] = o.Meta
	}
	if o.Status != "" {
		body["status"] = o.Status
	}
	if o.Device != "" {
		body["device"] = o.Device
	}
	var r struct {
		Created bool `json:"created"`
	}
	err = c.Do(ctx, "PUT", "/v1/sessions/"+pathEscape(sessionID), body, &r)
	return r.Created, err
}

// Origin is a backend reporting sessions (GET /v1/origins).
type Origin struct {
	Origin        string `json:"origin"`
	State         string `json:"state"` // connected, detached; http: PutSession's sessions
	Sessions      int    `json:"sessions"`
	Since         int64  `json:"since"`
	DetachedSince int64  `json:"detached_since"`
}

// Origins: GET /v1/origins.
func (c *Client) Origins(ctx context.Context) ([]Origin, error) {
	var r struct{ Origins []Origin }
	if err := c.Do(ctx, "GET", "/v1/origins", nil, &r); err != nil {
		return nil, err
	}
	return r.Origins, nil
}

// Health: GET /healthz. A 503 (the Redis store not ready, a shutdown) comes
// with the Health too (StoreReady false) and an *Error whose Code is its
// status: CodeStoreUnavailable or CodeShuttingDown. Its body has no error
// object, so that Code was http_503 and the Health was lost.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	status, data, err := c.send(ctx, "GET", "/healthz", nil)
	if err != nil {
		return nil, err
	}
	var h Health
	if status == 503 && json.Unmarshal(data, &h) == nil && h.Status != "" {
		return &h, &Error{Status: status, Code: h.Status, Message: "presenced is not ready: " + h.Status}
	}
	if status/100 != 2 {
		return nil, decodeError(status, data)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, &Error{Status: status, Code: CodeBadResponse, Message: err.Error(), Err: err}
	}
	return &h, nil
}
