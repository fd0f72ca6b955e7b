// SPDX-License-Identifier: MIT

package presence

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"
)

// TokenOptions are the claims of a client token (docs/protocol.md 1.1).
type TokenOptions struct {
	Secret []byte // the secret presenced was given (--jwt-secret)
	UserID string // sub
	// TTL is the lifetime (exp = now + TTL; default one hour), or ExpiresAt an absolute expiry.
	TTL       time.Duration
	ExpiresAt time.Time
	// Watch lists the users the session may subscribe to; WatchAll allows anyone.
	// Neither: only the user itself.
	Watch     []string
	WatchAll  bool
	Meta      map[string]any // stored with the session, shown to backends
	Audience  string         // aud: required by a presenced with --jwt-audience, refused by one without
	Audiences []string       // aud as an array (after Audience if set), as Node's and Python's audience list: accepted when one is presenced's
	Issuer    string         // iss: must equal --jwt-issuer when the server has one
	NotBefore time.Time      // nbf
	Device    string         // device: the session's device kind (web, mobile, desktop, or a word)
	Channels  []string       // channels: patterns the session may join and observe ("room:*", "*")
	Observe   []string       // observe: extra patterns it may only observe
	Claims    map[string]any // further claims, merged last
	Now       func() time.Time
}

var b64 = base64.RawURLEncoding

// MintToken returns an HS256 JWT for wss://…/v1/ws?token=.
func MintToken(o TokenOptions) (string, error) {
	if len(o.Secret) == 0 {
		return "", errors.New("presence: MintToken: Secret is required")
	}
	if o.UserID == "" {
		return "", errors.New("presence: MintToken: UserID is required")
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	exp := o.ExpiresAt
	if exp.IsZero() {
		ttl := o.TTL
		if ttl == 0 {
			ttl = time.Hour
		}
		// At least a second, as the Node and Python SDKs: a negative TTL (or
		// one under a second, cut to whole seconds) minted a token dead on
		// arrival. A token expired on purpose: ExpiresAt.
		if ttl < time.Second {
			return "", errors.New("presence: MintToken: TTL must be at least a second (0: one hour)")
		}
		exp = now.Add(ttl)
	}
	claims := map[string]any{"sub": o.UserID, "exp": exp.Unix(), "iat": now.Unix()}
	if o.WatchAll {
		claims["watch"] = "*"
	} else if o.Watch != nil {
		claims["watch"] = o.Watch
	}
	if o.Meta != nil {
		claims["meta"] = o.Meta
	}
	if len(o.Audiences) > 0 {
		aud := o.Audiences
		if o.Audience != "" {
			aud = append([]string{o.Audience}, o.Audiences...)
		}
		claims["aud"] = aud
	} else if o.Audience != "" {
		claims["aud"] = o.Audience
	}
	if o.Issuer != "" {
		claims["iss"] = o.Issuer
	}
	if o.Device != "" {
		claims["device"] = o.Device
	}
	for name, v := range map[string][]string{"channels": o.Channels, "observe": o.Observe} {
		if len(v) == 1 && v[0] == "*" {
			claims[name] = "*"
		} else if v != nil {
			claims[name] = v
		}
	}
	if !o.NotBefore.IsZero() {
		claims["nbf"] = o.NotBefore.Unix()
	}
	for k, v := range o.Claims {
		claims[k] = v
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64.EncodeToString(body)
	mac := hmac.New(sha256.New, o.Secret)
	mac.Write([]byte(signing))
	return signing + "." + b64.EncodeToString(mac.Sum(nil)), nil
}
