package server

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/server/internal/store/storefault"
)

// TestFaultLogAggregates: failures interleaved with successes (a full
// disk still serves reads) write one line per kind per period and one
// "available again" per period, not a line per command; the next period's
// line carries the count suppressed meanwhile.
func TestFaultLogAggregates(t *testing.T) {
	var buf bytes.Buffer
	l := newFaultLog(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	cause := errors.New("database or disk is full")
	for i := range 200 {
		now = now.Add(10 * time.Millisecond) // 2s in all
		l.fault(storefault.KindDiskFull, "AppendMessage", cause)
		if i%2 == 0 {
			l.fault(storefault.KindTimeout, "History", cause)
		}
		l.ok()
	}
	count := func(s string) int { return strings.Count(buf.String(), s) }
	if e, w := count("level=ERROR"), count("store available again"); e != 2 || w != 1 {
		t.Fatalf("%d ERROR and %d recovery lines for 300 failures in 2s, want 2 and 1:\n%s", e, w, buf.String())
	}
	now = now.Add(10 * time.Second)
	l.fault(storefault.KindDiskFull, "AppendMessage", cause)
	if !strings.Contains(buf.String(), "suppressed=199") {
		t.Fatalf("the next period's line does not count the 199 suppressed:\n%s", buf.String())
	}
	l.ok()
	if !strings.Contains(buf.String(), "failed.disk_full=1") {
		t.Fatalf("the recovery line does not count the failures since the last one:\n%s", buf.String())
	}
}

// TestEveryStoreMethodGuarded: a Store method that guardedStore does not
// override passes through with no deadline and no fault mapping, so a
// method added to the interface must get its wrapper here too.
func TestEveryStoreMethodGuarded(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "storeguard.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	guarded := map[string]bool{}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil {
			if star, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
				if id, ok := star.X.(*ast.Ident); ok && id.Name == "guardedStore" {
					guarded[fd.Name.Name] = true
				}
			}
		}
	}
	// Close ends the store; Ping is readiness, which must see the raw error.
	passThrough := map[string]bool{"Close": true, "Ping": true}
	st := reflect.TypeFor[Store]()
	for i := range st.NumMethod() {
		if name := st.Method(i).Name; !guarded[name] && !passThrough[name] {
			t.Errorf("Store.%s has no guardedStore wrapper: it runs without the store deadline", name)
		}
	}
}
