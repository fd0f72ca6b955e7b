// SPDX-License-Identifier: MIT

package presence_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
	presence "github.com/presenced/presenced/sdk/go"
)

// A backend's first hour with presenced: mint a client token, see the client
// come online on the event stream, look its sessions up, kick the session,
// see it go. (The browser is played here by a Go WebSocket.)
func Example() {
	url, key, secret := os.Getenv("PRESENCED_URL"), os.Getenv("PRESENCED_API_KEY"), os.Getenv("PRESENCED_JWT_SECRET")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	api := presence.NewClient(url, key)

	// What your login endpoint hands the browser.
	token, _ := presence.MintToken(presence.TokenOptions{Secret: []byte(secret), UserID: "alice", TTL: 10 * time.Minute,
		Meta: map[string]any{"device": "web"}})

	// Follow the events; once the stream is open, the browser connects.
	var browser *websocket.Conn
	stream := api.Events(presence.StreamOptions{OnConnect: func() {
		if browser == nil {
			browser, _, _ = websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1)+"/v1/ws?token="+token, nil)
			go browser.Read(ctx)
		}
	}})
	defer stream.Close()
	for stream.Next(ctx) {
		it := stream.Item()
		if it.Gap != nil {
			continue
		}
		fmt.Printf("%s %s (%s)\n", it.Type, it.Event.UserID, it.Event.Reason)
		if it.Type == "user.online" {
			user, _ := api.GetUser(ctx, "alice")
			sessions, _ := api.Sessions(ctx, "alice")
			fmt.Printf("alice is %s with %d session(s), meta %s\n", user.Status, user.Sessions, sessions[0].Meta)
			api.Kick(ctx, sessions[0].SessionID)
		}
		if it.Type == "user.offline" {
			break
		}
	}
	if err := api.Kick(ctx, "gone"); presence.IsCode(err, presence.CodeNoSession) {
		fmt.Println("kick again: no_session")
	}
	// Output:
	// session.connected alice (connect)
	// user.online alice (connect)
	// alice is online with 1 session(s), meta {"device":"web"}
	// session.disconnected alice (kicked)
	// user.offline alice (kicked)
	// kick again: no_session
}
