// SPDX-License-Identifier: MIT

package presence

import (
	"fmt"
	"net/url"
)

// Error codes of the daemon's HTTP API and of a refused Backend connection
// (docs/api.md#errors, protocol.md 5.1 and 5.5), plus CodeNetwork (no answer).
const (
	CodeBadRequest         = "bad_request"
	CodeBadJSON            = "bad_json"
	CodeBadUserID          = "bad_user_id"
	CodeBadSessionID       = "bad_session_id"
	CodeUnauthorized       = "unauthorized"
	CodeNotFound           = "not_found"
	CodeNoSession          = "no_session"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeRequestTimeout     = "request_timeout"
	CodeBodyTooLarge       = "body_too_large"
	CodeURITooLong         = "uri_too_long"
	CodeHeadersTooLarge    = "headers_too_large"
	CodeNotImplemented     = "not_implemented"
	CodeHostNotAllowed     = "host_not_allowed"
	CodeShuttingDown       = "shutting_down"
	CodeTooManyConnections = "too_many_connections"
	CodeStoreUnavailable   = "store_unavailable"
	// Deprecated: presenced no longer sends store_error (a failed kick said
	// it until 2026-12-08; it says store_unavailable as every other store
	// failure does). Kept so that code matching it still builds.
	CodeStoreError  = "store_error"
	CodeOutOfMemory = "out_of_memory"
	CodeInternal    = "internal"
	// Channels (protocol.md 4), status that people set (6), HTTP sessions (5.5).
	CodeBadChannel      = "bad_channel"
	CodeNotMember       = "not_member"
	CodeBadAvailability = "bad_availability"
	CodeBadMessage      = "bad_message"
	CodeBadExpiry       = "bad_expiry"
	CodeNotSupported    = "not_supported"
	CodeBadTTL          = "bad_ttl"
	CodeBadMeta         = "bad_meta"
	CodeBadStatus       = "bad_status"
	CodeBadDevice       = "bad_device"
	CodeSessionExists   = "session_exists"
	CodeTooManySessions = "too_many_sessions"
	// A refused Backend connection (protocol.md 5.1).
	CodeBadOrigin      = "bad_origin"
	CodeTooManyOrigins = "too_many_origins"
	CodeBadUpgrade     = "bad_upgrade"
	CodeBadVersion     = "bad_version"
	CodeNetwork        = "network"
	// CodeBadURL: the URL given for presenced is not http(s)://host (no
	// answer can come; not retryable).
	CodeBadURL = "bad_url"
	// CodeBadArgument: an id or channel name given to a Client method is
	// empty (a caller's bug, as the Node and Python SDKs' TypeError; nothing
	// is sent; not retryable).
	CodeBadArgument = "bad_argument"
	// CodeOriginTakenOver: a Backend's origin was taken by another connection
	// (OnError); the Backend has stopped.
	CodeOriginTakenOver = "origin_taken_over"
	CodeBadResponse     = "bad_response"
)

// Codes of an op of a Backend that presenced refused (OnRejected's code), and
// of a refused frame (named in the error OnError gets), protocol.md 5.2.
const (
	CodeBadOp           = "bad_op"
	CodeSessionOwned    = "session_owned"
	CodeBadData         = "bad_data"
	CodeDataTooLarge    = "data_too_large"
	CodeTooManyChannels = "too_many_channels"
	CodeNotJoined       = "not_joined"
	CodeUnknownType     = "unknown_type"
	CodeBadField        = "bad_field"
	CodeTooManyOps      = "too_many_ops"
	CodeRateLimited     = "rate_limited"
)

// Error is an error answer of presenced: match on Code (stable), with
// errors.As(err, &presenceErr).
type Error struct {
	Status  int    // HTTP status; 0 when no answer came
	Code    string // the daemon's error code
	Message string
	Err     error // the cause of a network error
}

func (e *Error) Error() string {
	return fmt.Sprintf("presence: %d %s: %s", e.Status, e.Code, e.Message)
}
func (e *Error) Unwrap() error { return e.Err }

// Retryable: no answer (but for a bad URL or argument, an origin another
// process took over, or a Backend frame presenced refused for its content:
// sent again it is refused again), a 5xx, 408 or 429.
func (e *Error) Retryable() bool {
	if e.Status == 0 {
		switch e.Code {
		case CodeBadURL, CodeBadArgument, CodeOriginTakenOver, CodeBadJSON, CodeUnknownType, CodeBadField, CodeTooManyOps:
			return false
		}
		return true
	}
	return e.Status >= 500 || e.Status == 408 || e.Status == 429
}

// checkURL refuses a base URL no request can go to (127.0.0.1:7070, without
// its scheme, is the usual one): the API answered with an error that was not
// an *Error, and the event stream and the Backend retried it for ever. The
// URL is not shown: it may hold credentials.
func checkURL(base string) *Error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &Error{Code: CodeBadURL, Message: "the URL of presenced must be http://host[:port] or https://host[:port]"}
	}
	return nil
}

// IsCode reports whether err is a presence *Error with this code.
func IsCode(err error, code string) bool {
	for err != nil {
		if e, ok := err.(*Error); ok {
			return e.Code == code
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}
