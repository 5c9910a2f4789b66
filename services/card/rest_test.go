package card

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// rest sends one request to the gateway in front of the services and decodes the JSON
// answer.
func (e *env) rest(t testing.TB, method, path, bearer string, body any) (int, map[string]any) {
	t.Helper()
	if body == nil {
		return servicetest.REST(t, e.httpURL, method, path, bearer, "")
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return servicetest.REST(t, e.httpURL, method, path, bearer, string(b))
}

// publishBody is PublishCardRequest as REST JSON: bytes in standard base64.
func publishBody(req *cardv1.PublishCardRequest) map[string]any {
	b := map[string]any{
		"content":       base64.StdEncoding.EncodeToString(req.GetContent()),
		"selfSignature": base64.StdEncoding.EncodeToString(req.GetSelfSignature()),
	}
	if g := req.GetResetGrant(); g != "" {
		b["resetGrant"] = g
	}
	if en := req.GetEndorsement(); en != nil {
		b["endorsement"] = map[string]any{
			"content":   base64.StdEncoding.EncodeToString(en.GetContent()),
			"signature": base64.StdEncoding.EncodeToString(en.GetSignature()),
		}
	}
	return b
}

// jsonBytes decodes a bytes field of a JSON answer.
func jsonBytes(t *testing.T, v any) []byte {
	t.Helper()
	s, _ := v.(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%v is not base64: %v", v, err)
	}
	return b
}

// restCard returns the "card" object of an answer.
func restCard(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	c, ok := body["card"].(map[string]any)
	if !ok {
		t.Fatalf("no card in %v", body)
	}
	return c
}

// TestRESTFlow walks the card routes as a REST client would: publish, rotate, search,
// get, history, revoke, with the service key.
func TestRESTFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob")
	alice, bob := users[0], users[1]

	code, sk := e.rest(t, "GET", "/v1/service-keys", "", nil)
	if code != http.StatusOK {
		t.Fatalf("service key: %d %v", code, sk)
	}
	serviceKey := jsonBytes(t, sk["key"].(map[string]any)["publicKey"])

	k1, k2 := newKeys(t, e2ee.SuiteHybrid), newKeys(t, e2ee.SuiteX25519)
	code, body := e.rest(t, "POST", "/v1/cards", alice.token, publishBody(e.cardRequest(t, alice, k1, nil, nil)))
	if code != http.StatusOK {
		t.Fatalf("publish: %d %v", code, body)
	}
	c1 := restCard(t, body)
	c1ID := jsonBytes(t, c1["cardId"])
	if c1["status"] != "CARD_STATUS_ACTIVE" || c1["identity"] != alice.identity {
		t.Errorf("published card = %v", c1)
	}
	if err := e2ee.VerifyServiceSignature(serviceKey, c1ID, jsonBytes(t, c1["serviceSignature"])); err != nil {
		t.Errorf("service signature over REST: %v", err)
	}

	code, body = e.rest(t, "POST", "/v1/cards", alice.token, publishBody(e.cardRequest(t, alice, k2, c1ID, k1)))
	if code != http.StatusOK {
		t.Fatalf("rotate: %d %v", code, body)
	}
	c2 := restCard(t, body)
	c2ID := jsonBytes(t, c2["cardId"])
	if c2["endorsement"] == nil {
		t.Errorf("rotation lost its endorsement: %v", c2)
	}

	code, body = e.rest(t, "POST", "/v1/cards:search", bob.token, map[string]any{"identities": []string{alice.identity, bob.identity}})
	cards, _ := body["cards"].([]any)
	if code != http.StatusOK || len(cards) != 1 || !bytes.Equal(jsonBytes(t, cards[0].(map[string]any)["cardId"]), c2ID) {
		t.Fatalf("search: %d %v; want alice's second card only", code, body)
	}

	// Card ids in paths: URL-safe base64, with or without padding.
	for _, id := range []string{base64.RawURLEncoding.EncodeToString(c1ID), base64.URLEncoding.EncodeToString(c1ID)} {
		code, body = e.rest(t, "GET", "/v1/cards/"+id, bob.token, nil)
		if code != http.StatusOK {
			t.Fatalf("get %s: %d %v", id, code, body)
		}
		got := restCard(t, body)
		if got["status"] != "CARD_STATUS_SUPERSEDED" || !bytes.Equal(jsonBytes(t, got["supersededBy"]), c2ID) {
			t.Errorf("get %s = %v; want superseded by the second card", id, got)
		}
	}

	code, body = e.rest(t, "GET", "/v1/identities/"+alice.identity+"/cards?pageSize=1", bob.token, nil)
	page, _ := body["cards"].([]any)
	next, _ := body["nextPageToken"].(string)
	if code != http.StatusOK || len(page) != 1 || next == "" || !bytes.Equal(jsonBytes(t, page[0].(map[string]any)["cardId"]), c2ID) {
		t.Fatalf("history page 1: %d %v", code, body)
	}
	code, body = e.rest(t, "GET", "/v1/identities/"+alice.identity+"/cards?pageSize=1&pageToken="+next, bob.token, nil)
	page, _ = body["cards"].([]any)
	if code != http.StatusOK || len(page) != 1 || body["nextPageToken"] != "" || !bytes.Equal(jsonBytes(t, page[0].(map[string]any)["cardId"]), c1ID) {
		t.Fatalf("history page 2: %d %v", code, body)
	}

	code, body = e.rest(t, "POST", "/v1/cards/"+base64.RawURLEncoding.EncodeToString(c2ID)+":revoke", alice.token, map[string]any{})
	if code != http.StatusOK || restCard(t, body)["status"] != "CARD_STATUS_REVOKED" || restCard(t, body)["revokedAt"] == nil {
		t.Fatalf("revoke: %d %v", code, body)
	}
	code, body = e.rest(t, "POST", "/v1/cards:search", bob.token, map[string]any{"identities": []string{alice.identity}})
	if cards, _ := body["cards"].([]any); code != http.StatusOK || len(cards) != 0 {
		t.Errorf("search after revocation: %d %v; want no card", code, body)
	}

	// A new start needs a reset grant, which the app backend gets with its API key.
	k3 := newKeys(t, e2ee.SuiteX25519)
	code, body = e.rest(t, "POST", "/v1/cards", alice.token, publishBody(e.cardRequest(t, alice, k3, nil, nil)))
	if msg, _ := body["message"].(string); code != http.StatusForbidden || !strings.Contains(msg, "a reset grant is required") {
		t.Fatalf("a new card after the revocation, token only: %d %v; want 403 naming the reset grant", code, body)
	}
	code, body = e.rest(t, "POST", "/v1/reset-grants", alice.token, map[string]any{"identity": alice.identity})
	if code != http.StatusUnauthorized {
		t.Fatalf("a reset grant asked for with the user's access token: %d %v; want 401 (app key only)", code, body)
	}
	code, body = e.rest(t, "POST", "/v1/reset-grants", a.key, map[string]any{"identity": alice.identity, "ttl": "300s"})
	grant, _ := body["resetGrant"].(string)
	if code != http.StatusOK || grant == "" || body["grantId"] == "" || body["expiresAt"] == nil {
		t.Fatalf("reset grant: %d %v", code, body)
	}
	req := e.resetRequest(t, alice, k3, grant)
	code, body = e.rest(t, "POST", "/v1/cards", alice.token, publishBody(req))
	if code != http.StatusOK || restCard(t, body)["keyReset"] != true {
		t.Fatalf("reset with the grant: %d %v; want the card, marked keyReset", code, body)
	}
	code, body = e.rest(t, "GET", "/v1/identities/"+alice.identity+"/cards", bob.token, nil)
	if hist, _ := body["cards"].([]any); code != http.StatusOK || len(hist) != 3 || hist[0].(map[string]any)["keyReset"] != true || hist[1].(map[string]any)["keyReset"] != false {
		t.Errorf("history after the reset: %d %v; want 3 cards, the newest marked keyReset", code, body)
	}
}

// TestRESTBadRequests: each refusal has the right HTTP status, says what was wrong, and
// writes nothing.
func TestRESTBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{SearchRate: 0.001, SearchBurst: 3}})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob", "limited")
	alice, bob, limited := users[0], users[1], users[2]
	card := e.publish(t, alice, newKeys(t, e2ee.SuiteX25519), nil, nil)
	cardPath := "/v1/cards/" + base64.RawURLEncoding.EncodeToString(card.GetCardId())
	for range 3 {
		if code, body := e.rest(t, "POST", "/v1/cards:search", limited.token, map[string]any{"identities": []string{alice.identity}}); code != http.StatusOK {
			t.Fatalf("search within the burst: %d %v", code, body)
		}
	}
	bobsCard := publishBody(e.cardRequest(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil))

	cases := []servicetest.RESTRefusal[any]{
		{"no credential", "POST", "/v1/cards", "", bobsCard, 401, "missing credential"},
		{"someone else's card", "POST", "/v1/cards", alice.token, bobsCard, 403, "publish only your own cards"},
		{"first card while one is active", "POST", "/v1/cards", alice.token, publishBody(e.cardRequest(t, alice, newKeys(t, e2ee.SuiteX25519), nil, nil)), 409, "to rotate, publish a new card whose previous_card_id is"},
		{"previous is not the active card", "POST", "/v1/cards", bob.token, publishBody(e.cardRequest(t, bob, newKeys(t, e2ee.SuiteX25519), card.GetCardId(), nil)), 409, "is not the active card"},
		{"content not base64", "POST", "/v1/cards", bob.token, map[string]any{"content": "%%%", "selfSignature": ""}, 400, "invalid value for bytes field content"},
		{"truncated content", "POST", "/v1/cards", bob.token, map[string]any{"content": base64.StdEncoding.EncodeToString(card.GetContent()[:20]), "selfSignature": base64.StdEncoding.EncodeToString(make([]byte, 64))}, 400, "does not parse"},
		{"unknown field", "POST", "/v1/cards", bob.token, map[string]any{"content": "AA==", "previousCardId": "AA=="}, 400, "previousCardId"},
		{"unknown card", "GET", "/v1/cards/" + strings.Repeat("A", 43), alice.token, nil, 404, "no card"},
		{"short card id", "GET", "/v1/cards/AAAA", alice.token, nil, 400, "card_id is 3 bytes"},
		{"card id not base64", "GET", "/v1/cards/not*base64", alice.token, nil, 400, "card_id"},
		{"revoke another's card", "POST", cardPath + ":revoke", bob.token, map[string]any{}, 403, "only its owner may revoke it"},
		{"search for a raw id", "POST", "/v1/cards:search", alice.token, map[string]any{"identities": []string{"alice"}}, 400, "identities[0] is 5 characters"},
		{"search over the rate limit", "POST", "/v1/cards:search", limited.token, map[string]any{"identities": []string{alice.identity}}, 429, "rate limit exceeded"},
		{"bad page token", "GET", "/v1/identities/" + alice.identity + "/cards?pageToken=xyz", alice.token, nil, 400, "page_token is malformed"},
		{"page over the maximum", "GET", "/v1/identities/" + alice.identity + "/cards?pageSize=5000", alice.token, nil, 400, "page_size 5000 is over the maximum 1000"},
		{"history of a group", "GET", "/v1/identities/g_" + alice.identity[2:] + "/cards", alice.token, nil, 400, "not a user identity"},
		{"internal lookup has no route", "POST", "/v1/cards:lookup", alice.token, map[string]any{}, 404, "no route"},
		{"internal events have no route", "GET", "/v1/card-events", alice.token, nil, 404, "no route"},
	}
	servicetest.CheckRESTRefusals(t, cases, e.rest, e.snapshot)
}
