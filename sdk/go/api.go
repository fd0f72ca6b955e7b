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
}

// Session is one open session of a user.
type Session struct {
	SessionID string          `json:"session_id"`
	Status    string          `json:"status"` // online, idle
	Meta      json.RawMessage `json:"meta"`   // the token's meta claim, or null
	Connected int64           `json:"connected"`
	Since     int64           `json:"since"`
	Instance  string          `json:"instance"`
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
type Client struct {
	URL    string
	APIKey string
	HTTP   *http.Client
}

// NewClient for presenced at baseURL (http://127.0.0.1:7070) with the backend API key.
func NewClient(baseURL, apiKey string) *Client {
	return &Client{URL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// Do sends one request; the JSON answer is decoded into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return &Error{Code: CodeNetwork, Message: err.Error(), Err: err}
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return &Error{Status: res.StatusCode, Code: CodeNetwork, Message: err.Error(), Err: err}
	}
	if res.StatusCode/100 != 2 {
		return decodeError(res.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Status: res.StatusCode, Code: CodeBadResponse, Message: err.Error(), Err: err}
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
	var u User
	if err := c.Do(ctx, "GET", "/v1/users/"+url.PathEscape(userID), nil, &u); err != nil {
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
	var r struct{ Sessions []Session }
	if err := c.Do(ctx, "GET", "/v1/users/"+url.PathEscape(userID)+"/sessions", nil, &r); err != nil {
		return nil, err
	}
	return r.Sessions, nil
}

// Kick: DELETE /v1/sessions/{id}; the client is closed with 4003. An *Error
// with CodeNoSession when it is gone.
func (c *Client) Kick(ctx context.Context, sessionID string) error {
	return c.Do(ctx, "DELETE", "/v1/sessions/"+url.PathEscape(sessionID), nil, nil)
}

// Health: GET /healthz.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	if err := c.Do(ctx, "GET", "/healthz", nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}
