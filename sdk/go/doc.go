// SPDX-License-Identifier: MIT

// Package presence is the Go SDK of presenced (protocol v1): client tokens,
// webhook verification (an http.Handler), a typed client of the backend HTTP
// API, an event stream that resumes by cursor, and the backend session
// connection (Backend) with TrackHandler, which reports an app's own
// WebSocket handlers as sessions.
//
//	token, _ := presence.MintToken(presence.TokenOptions{Secret: secret, UserID: "alice", TTL: time.Hour})
//	api := presence.NewClient("http://127.0.0.1:7070", apiKey)
//	user, err := api.GetUser(ctx, "alice")
//	stream := api.Events(presence.StreamOptions{})
//	for stream.Next(ctx) { fmt.Println(stream.Item().Type) }
package presence

// ProtocolVersion is the protocol this SDK speaks; the module's major version.
const ProtocolVersion = 1
