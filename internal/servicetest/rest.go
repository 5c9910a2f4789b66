package servicetest

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
)

// REST sends one request to the REST gateway at url (Env.Gateway's), with body (none
// when empty) and bearer as the credential (none when empty), and decodes the JSON
// answer.
func REST(t testing.TB, url, method, path, bearer, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body is not JSON: %s", method, path, raw)
	}
	return resp.StatusCode, out
}

// RESTRefusal is a request, with a body of type B, that the REST gateway must refuse
// with the HTTP status Status and a message that contains Msg. It names a struct type
// rather than defining one so that the services' tables list their cases unkeyed, one
// line each, as a table defined in the test would.
type RESTRefusal[B any] = struct {
	Name, Method, Path, Bearer string
	Body                       B
	Status                     int
	Msg                        string
}

// CheckRESTRefusals sends each case with rest, in a subtest, and checks that it is
// refused as the case says and that it wrote nothing: snapshot is the same after it.
func CheckRESTRefusals[B any](t *testing.T, cases []RESTRefusal[B], rest func(t testing.TB, method, path, bearer string, body B) (int, map[string]any), snapshot func(t testing.TB) map[string]string) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			before := snapshot(t)
			code, body := rest(t, tc.Method, tc.Path, tc.Bearer, tc.Body)
			msg, _ := body["message"].(string)
			if code != tc.Status || !strings.Contains(msg, tc.Msg) {
				t.Errorf("%s %s: %d %q; want %d with %q", tc.Method, tc.Path, code, msg, tc.Status, tc.Msg)
			}
			if !maps.Equal(before, snapshot(t)) {
				t.Error("the refused request changed the store")
			}
		})
	}
}
