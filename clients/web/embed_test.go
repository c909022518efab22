package web_test

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/parleychat/parley/clients/web"
)

func TestDistHasTheApp(t *testing.T) {
	t.Parallel()
	index, err := fs.ReadFile(web.Dist, "index.html")
	if err != nil {
		t.Fatalf("index.html: %v", err)
	}
	if !strings.Contains(string(index), `<div id="root">`) {
		t.Fatalf("index.html does not look like the built app:\n%s", index)
	}
	assets, err := fs.ReadDir(web.Dist, "assets")
	if err != nil {
		t.Fatalf("assets: %v", err)
	}
	var js, css bool
	for _, e := range assets {
		js = js || strings.HasSuffix(e.Name(), ".js")
		css = css || strings.HasSuffix(e.Name(), ".css")
		if !strings.Contains(string(index), "/assets/"+e.Name()) {
			t.Errorf("index.html does not reference assets/%s (stale dist?)", e.Name())
		}
	}
	if !js || !css {
		t.Fatalf("assets lack js (%v) or css (%v)", js, css)
	}
}
