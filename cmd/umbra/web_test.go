package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// e2eBody reads resp's body whole and closes it.
func e2eBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// e2eGet is one GET, with its headers.
func e2eGet(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, e2eBody(t, resp)
}

// e2eDevPost posts a JSON body to a dev route, as the web chat does.
func e2eDevPost(t *testing.T, url, body string) e2eReply {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return e2eReply{status: resp.StatusCode, body: e2eBody(t, resp)}
}

// builtAsset returns the path of the script index.html of the committed build loads.
func builtAsset(t *testing.T, index []byte) string {
	t.Helper()
	m := regexp.MustCompile(`src="(/assets/[^"]+\.js)"`).FindSubmatch(index)
	if m == nil {
		t.Fatalf("clients/web/dist/index.html loads no script from /assets/:\n%s", index)
	}
	return string(m[1])
}

// TestWebChatServedByDevOnly: the real binary's `umbra dev` serves the committed web
// chat (clients/web/dist, embedded) at / with its development sign-in, whose token acts
// for the identity the app key gives the same name; `umbra serve all` serves neither.
func TestWebChatServedByDevOnly(t *testing.T) {
	bin := e2eBinary(t)
	index, err := os.ReadFile("../../clients/web/dist/index.html")
	if err != nil {
		t.Fatal(err)
	}
	asset := builtAsset(t, index)
	assetBytes, err := os.ReadFile("../../clients/web/dist" + asset)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("dev", func(t *testing.T) {
		grpcPort, httpPort := e2eFreePorts(t)
		p := e2eStartDev(t, bin, filepath.Join(t.TempDir(), "umbra-data"), grpcPort, httpPort)
		defer p.stop(t)
		if want := fmt.Sprintf("Web chat: http://127.0.0.1:%d/", httpPort); !strings.Contains(p.stdout.String(), want) {
			t.Errorf("the banner does not say %q:\n%s", want, p.stdout.String())
		}
		code, h, body := e2eGet(t, p.base+"/")
		if code != http.StatusOK || !bytes.Equal(body, index) || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Fatalf("GET /: %d %s %q; want clients/web/dist/index.html", code, h.Get("Content-Type"), body)
		}
		code, h, body = e2eGet(t, p.base+asset)
		if code != http.StatusOK || !bytes.Equal(body, assetBytes) || h.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Fatalf("GET %s: %d, Cache-Control %q, %d bytes; want the committed file, cached for a year", asset, code, h.Get("Cache-Control"), len(body))
		}

		r := e2eDevPost(t, p.base+"/dev/sign-in", `{"name":"alice"}`)
		e2eWantStatus(t, "POST /dev/sign-in", r, http.StatusOK)
		identity, token := r.str(t, "identity"), r.str(t, "accessToken")
		if cli := e2eResolve(t, p, "alice")["alice"]; identity != cli {
			t.Errorf("the web chat's alice is %s, the app key's (umbra login alice) %s; want one identity", identity, cli)
		}
		if code, who := e2eWhoAmI(t, p, token); code != http.StatusOK || who != identity {
			t.Errorf("whoami with the dev sign-in's token: %d %s; want %s", code, who, identity)
		}
	})

	t.Run("serve all", func(t *testing.T) {
		grpcPort, httpPort := e2eFreePorts(t)
		cmd := exec.Command(bin, "serve", "all", "--insecure",
			"--grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort),
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
			"--data", t.TempDir(), "--admin-token", "web-test-admin-credential-0123456789",
			"--service-token", "web-test-service-token-0123456789")
		cmd.Env = append(e2eEnv(os.Environ()), "UMBRA_BACKUP_SECRET=web-test-backup-secret-0123456789abcdef")
		e2eServe(t, "umbra serve all", cmd, filepath.Join(t.TempDir(), "serve.log"))
		base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if resp, err := http.Get(base + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("umbra serve all not ready within 30 s")
			}
		}
		for _, path := range []string{"/", "/index.html", asset} {
			if code, _, body := e2eGet(t, base+path); code != http.StatusNotFound || !bytes.Contains(body, []byte("no route")) {
				t.Errorf("umbra serve all: GET %s: %d %s; want the API's 404", path, code, body)
			}
		}
		r := e2eDevPost(t, base+"/dev/sign-in", `{"name":"alice"}`)
		if r.status != http.StatusNotFound || !bytes.Contains(r.body, []byte("no route for POST /dev/sign-in")) {
			t.Errorf("umbra serve all: POST /dev/sign-in: %d %s; want the API's 404", r.status, r.body)
		}
	})
}
