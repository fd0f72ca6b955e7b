// SPDX-License-Identifier: MIT

package presence

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Every error code presenced answers, as docs/api.md and protocol.md list
// them, has its constant: a caller matching with IsCode had CodeNoSession
// but no CodeBadOrigin, CodeTooManyOrigins, CodeSessionExists, CodeBadChannel
// or any of protocol.md 5.2's per-op codes (OnRejected), which the Node SDK's
// types named.
func TestEveryDocumentedCodeHasAConstant(t *testing.T) {
	var docs string
	for _, f := range []string{"../../docs/api.md", "../../docs/protocol.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs += string(b) + "\n"
	}
	want := map[string]bool{}
	// "| 400 | `bad_request` |", "400 `a`, `b`", "`503` `x`", "`400 a`"
	list := regexp.MustCompile("`?\\b[45]\\d\\d\\b`?(?: \\|)? `([a-z_]+)`((?:(?:,| or|/)?\\s*`[a-z_]+`)*)")
	code := regexp.MustCompile("`([a-z_]+)`")
	for _, m := range list.FindAllStringSubmatch(docs, -1) {
		want[m[1]] = true
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			want[c[1]] = true
		}
	}
	for _, m := range regexp.MustCompile("`[45]\\d\\d ([a-z_]+)`").FindAllStringSubmatch(docs, -1) {
		want[m[1]] = true
	}
	for c := range want {
		// A browser's WebSocket refusals (/v1/ws): no SDK call gets them.
		if strings.HasPrefix(c, "token_") || c == "origin_not_allowed" {
			delete(want, c)
		}
	}
	// protocol.md 5.2: the per-op and frame codes of a Backend.
	sec := docs[strings.Index(docs, "### 5.2 Batches"):strings.Index(docs, "### 5.3")]
	ops := map[string]bool{"open": true, "status": true, "close": true, "join": true, "update": true, "leave": true}
	for _, m := range regexp.MustCompile("(?m)^\\| (`[a-z_]+`(?:, `[a-z_]+`)*) \\|").FindAllStringSubmatch(sec, -1) {
		for _, c := range code.FindAllStringSubmatch(m[1], -1) {
			if !ops[c[1]] {
				want[c[1]] = true
			}
		}
	}
	if !want["bad_origin"] || !want["session_owned"] || len(want) < 40 {
		t.Fatalf("codes read from the docs: %v", want)
	}
	have := map[string]bool{}
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.ValueSpec); ok && len(v.Names) == 1 && strings.HasPrefix(v.Names[0].Name, "Code") {
			if lit, ok := v.Values[0].(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				have[s] = true
			}
		}
		return true
	})
	var missing []string
	for c := range want {
		if !have[c] {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("codes without a Code constant in errors.go: %v", missing)
	}
}
