package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/umbra-e2ee/umbra/gateway"
)

// webChat is a small build output of the shape Vite writes: index.html naming hashed
// assets, and a file under v1/ that must never shadow the API.
var webChat = fstest.MapFS{
	"index.html":              {Data: []byte(`<!doctype html><script type="module" src="/assets/index-AbC123.js"></script>`)},
	"assets/index-AbC123.js":  {Data: []byte(`console.log("chat")`)},
	"assets/index-DeF456.css": {Data: []byte(`body{margin:0}`)},
	"favicon.svg":             {Data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)},
	"v1/whoami":               {Data: []byte(`not the API`)},
}

// TestWebFilesBesideTheAPI: with Web set, the gateway serves the web chat's files with
// their types and caching headers (hashed assets for a year, the page revalidated with
// its ETag), and every API route, health check and routing error answers as before.
func TestWebFilesBesideTheAPI(t *testing.T) {
	t.Parallel()
	addr, _ := startNode(t, testAdmin)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr), Web: webChat})

	files := []struct {
		path, ctype, cache, body string
		csp                      bool
	}{
		{"/", "text/html; charset=utf-8", "no-cache", string(webChat["index.html"].Data), true},
		{"/index.html", "text/html; charset=utf-8", "no-cache", string(webChat["index.html"].Data), true},
		{"/assets/index-AbC123.js", "text/javascript; charset=utf-8", "public, max-age=31536000, immutable", `console.log("chat")`, false},
		{"/assets/index-DeF456.css", "text/css; charset=utf-8", "public, max-age=31536000, immutable", `body{margin:0}`, false},
		{"/favicon.svg", "image/svg+xml", "no-cache", `<svg xmlns="http://www.w3.org/2000/svg"/>`, false},
	}
	for _, f := range files {
		t.Run("GET "+f.path, func(t *testing.T) {
			r := send(t, "GET", base+f.path, "", "")
			if r.status != http.StatusOK || string(r.body) != f.body {
				t.Fatalf("status %d body %q; want 200 %q", r.status, r.body, f.body)
			}
			for h, want := range map[string]string{"Content-Type": f.ctype, "Cache-Control": f.cache, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
				if got := r.header.Get(h); got != want {
					t.Errorf("%s %q; want %q", h, got, want)
				}
			}
			if csp := r.header.Get("Content-Security-Policy"); f.csp != strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q on %s", csp, f.path)
			}
			etag := r.header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			again := send(t, "GET", base+f.path, "", "", "If-None-Match", etag)
			if again.status != http.StatusNotModified || len(again.body) != 0 {
				t.Errorf("GET with If-None-Match %s: status %d body %q; want 304 and no body", etag, again.status, again.body)
			}
			head := send(t, "HEAD", base+f.path, "", "")
			if head.status != http.StatusOK || len(head.body) != 0 || head.header.Get("Content-Type") != f.ctype {
				t.Errorf("HEAD: status %d, %d bytes, Content-Type %q", head.status, len(head.body), head.header.Get("Content-Type"))
			}
		})
	}

	t.Run("the API keeps its routes", func(t *testing.T) {
		if r := send(t, "GET", base+"/healthz", "", ""); r.status != http.StatusOK {
			t.Errorf("/healthz: %d %s", r.status, r.body)
		}
		// v1/whoami is a file of the build output, but /v1/ belongs to the API.
		wantError(t, send(t, "GET", base+"/v1/whoami", "", ""), http.StatusUnauthorized, 16, "")
		wantError(t, send(t, "GET", base+"/missing.js", "", ""), http.StatusNotFound, 5, "no route for GET /missing.js")
		wantError(t, send(t, "POST", base+"/", "", "{}"), http.StatusNotFound, 5, "no route for POST /")
		key := devApp(t, base)
		if id := resolve(t, base, key, "alice"); !strings.HasPrefix(id, "u_") {
			t.Errorf("resolve beside the web files: %q", id)
		}
	})
}

// TestNoWebFilesOrDevRoutesUnlessConfigured: a gateway without Web and Dev (every
// gateway of `umbra serve`) serves neither the web chat nor anything under /dev/.
func TestNoWebFilesOrDevRoutesUnlessConfigured(t *testing.T) {
	t.Parallel()
	addr, _ := startNode(t, testAdmin)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr)})
	wantError(t, send(t, "GET", base+"/", "", ""), http.StatusNotFound, 5, "no route for GET /")
	wantError(t, send(t, "GET", base+"/index.html", "", ""), http.StatusNotFound, 5, "no route")
	wantError(t, send(t, "POST", base+"/dev/sign-in", "", `{"name":"alice"}`), http.StatusNotFound, 5, "no route for POST /dev/sign-in")
}

// TestDevRoutes: with Dev set, /dev/... reaches it (body limit included), and nothing
// else does.
func TestDevRoutes(t *testing.T) {
	t.Parallel()
	addr, _ := startNode(t, testAdmin)
	var reached []string
	dev := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reached = append(reached, r.Method+" "+r.URL.Path+" "+string(b))
		w.WriteHeader(http.StatusTeapot)
	})
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr), Dev: dev, MaxBodyBytes: 64})
	if r := send(t, "POST", base+"/dev/sign-in", "", `{"name":"alice"}`); r.status != http.StatusTeapot {
		t.Errorf("POST /dev/sign-in: %d %s; want the dev handler's 418", r.status, r.body)
	}
	wantError(t, send(t, "POST", base+"/dev/sign-in", "", `{"name":"`+strings.Repeat("a", 100)+`"}`), http.StatusRequestEntityTooLarge, 3, "over the limit")
	wantError(t, send(t, "GET", base+"/v1/whoami", "", ""), http.StatusUnauthorized, 16, "")
	if len(reached) != 1 || reached[0] != `POST /dev/sign-in {"name":"alice"}` {
		t.Errorf("the dev handler saw %q; want the one sign-in", reached)
	}
}

// TestWebFilesNeedAnIndex: a build output without index.html is refused when the
// gateway is built, not found out by the first visitor.
func TestWebFilesNeedAnIndex(t *testing.T) {
	t.Parallel()
	_, err := gateway.New(context.Background(), gateway.Config{Upstreams: upstreamsAt(closedAddr(t)), Web: fstest.MapFS{"app.js": {Data: []byte("x")}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "no index.html") {
		t.Fatalf("gateway.New with no index.html: %v", err)
	}
}
