package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// webContentSecurityPolicy is what the web chat's pages may load: its own scripts,
// styles and workers, WebAssembly compiled from them (Argon2id), and calls to this
// origin only. No page may frame it.
const webContentSecurityPolicy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; " +
	"style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// webFile is one file of the web chat, read once when the gateway is built.
type webFile struct {
	content     []byte
	contentType string
	etag        string
	// immutable: the file's name carries a hash of its content (Vite's assets/), so a
	// browser may keep it for a year without asking again.
	immutable bool
}

// webFiles serves the files of files (the web chat's build output) for GET and HEAD
// requests of their paths, "/" being index.html, and passes every other request to api:
// the API's own routes (/v1/...) never reach the files, and a path that names no file
// gets the API's JSON 404.
func webFiles(files fs.FS, api http.Handler) (http.Handler, error) {
	served := map[string]*webFile{}
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		ctype := mime.TypeByExtension(path.Ext(name))
		if ctype == "" {
			ctype = http.DetectContentType(b)
		}
		sum := sha256.Sum256(b)
		served["/"+name] = &webFile{
			content:     b,
			contentType: ctype,
			etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`,
			immutable:   strings.HasPrefix(name, "assets/"),
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: web files: %w", err)
	}
	if served["/index.html"] == nil {
		return nil, fmt.Errorf("gateway: web files: no index.html")
	}
	served["/"] = served["/index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := served[r.URL.Path]
		if f == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) || strings.HasPrefix(r.URL.Path, "/v1/") {
			api.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if f.immutable {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			// index.html names the current assets: always ask (a 304 when unchanged).
			h.Set("Cache-Control", "no-cache")
		}
		if strings.HasPrefix(f.contentType, "text/html") {
			h.Set("Content-Security-Policy", webContentSecurityPolicy)
		}
		// ServeContent answers If-None-Match with 304 and HEAD without a body.
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.content))
	}), nil
}
