package messaging

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
)

// rest sends one request to the gateway and decodes the JSON answer.
func (e *env) rest(t testing.TB, method, path, bearer, body string) (int, map[string]any) {
	t.Helper()
	return servicetest.REST(t, e.httpURL, method, path, bearer, body)
}

// restMessage is a SendRequest body from u in protojson.
func restMessage(u user, cmid, body string) string {
	return fmt.Sprintf(`{"clientMessageId": %q, "header": {"kind": "MESSAGE_KIND_ENCRYPTED", "senderCardId": %q}, "envelope": %q}`,
		cmid, base64.StdEncoding.EncodeToString(u.card), base64.StdEncoding.EncodeToString([]byte(body)))
}

// streamLine is one line of a Subscribe stream over REST.
type streamLine struct {
	Result *struct {
		InboxSequence string `json:"inboxSequence"`
		Message       *struct {
			ConversationID string `json:"conversationId"`
			Sequence       string `json:"sequence"`
			Envelope       []byte `json:"envelope"`
		} `json:"message"`
		Heartbeat *struct {
			LatestInboxSequence string `json:"latestInboxSequence"`
		} `json:"heartbeat"`
	} `json:"result"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// restStream opens a Subscribe stream through the gateway with a real HTTP client and
// parses it line by line as the chunks arrive.
func (e *env) restStream(t *testing.T, bearer, query string) (<-chan streamLine, *http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", e.httpURL+"/v1/inbox:subscribe?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan streamLine, 1024)
	go func() {
		defer resp.Body.Close()
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var l streamLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("stream line is not JSON: %s", sc.Bytes())
				return
			}
			lines <- l
		}
	}()
	return lines, resp, cancel
}

func nextLine(t *testing.T, lines <-chan streamLine) streamLine {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("the stream ended")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no line within 10 s")
	}
	return streamLine{}
}

// TestRESTSendHistoryStream: a REST client sends and pages history, and another reads
// its inbox as newline-delimited JSON from the chunked response while messages are
// being sent.
func TestRESTSendHistoryStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	lines, resp, cancel := e.restStream(t, bob.token, "afterInboxSequence=0&heartbeatInterval=1s")
	if resp.StatusCode != http.StatusOK || !slices.Contains(resp.TransferEncoding, "chunked") {
		t.Fatalf("stream: %d, transfer encoding %v", resp.StatusCode, resp.TransferEncoding)
	}
	if l := nextLine(t, lines); l.Result == nil || l.Result.Heartbeat == nil || l.Result.InboxSequence != "0" {
		t.Fatalf("first line: %+v; want the catch-up heartbeat", l)
	}
	var conv string
	for i := 1; i <= 5; i++ {
		code, out := e.rest(t, "POST", "/v1/conversations/"+bob.identity+"/messages", alice.token, restMessage(alice, fmt.Sprint(i), body(i)))
		if code != http.StatusOK || out["sequence"] != fmt.Sprint(i) {
			t.Fatalf("send %d: %d %v", i, code, out)
		}
		conv = out["conversationId"].(string)
		for {
			l := nextLine(t, lines)
			if l.Result == nil {
				t.Fatalf("line %+v", l)
			}
			if l.Result.Heartbeat != nil {
				continue
			}
			if m := l.Result.Message; l.Result.InboxSequence != fmt.Sprint(i) || m.ConversationID != conv || m.Sequence != fmt.Sprint(i) || string(m.Envelope) != body(i) {
				t.Fatalf("stream line for message %d: %+v", i, l.Result)
			}
			break
		}
	}
	code, out := e.rest(t, "POST", "/v1/conversations/"+conv+"/messages", alice.token, restMessage(alice, "3", body(3)))
	if code != http.StatusOK || out["duplicate"] != true || out["sequence"] != "3" {
		t.Errorf("REST retry: %d %v", code, out)
	}

	code, page := e.rest(t, "GET", "/v1/conversations/"+alice.identity+"/messages?pageSize=2", bob.token, "")
	msgs, _ := page["messages"].([]any)
	if code != http.StatusOK || len(msgs) != 2 || msgs[0].(map[string]any)["sequence"] != "5" || page["latestSequence"] != "5" || page["nextPageToken"] == "" {
		t.Fatalf("history: %d %v", code, page)
	}
	code, page = e.rest(t, "GET", "/v1/conversations/"+conv+"/messages?afterSequence=3", bob.token, "")
	msgs, _ = page["messages"].([]any)
	if code != http.StatusOK || len(msgs) != 2 || msgs[0].(map[string]any)["sequence"] != "4" {
		t.Fatalf("history forwards: %d %v", code, page)
	}
	code, cur := e.rest(t, "POST", "/v1/conversations/"+conv+"/cursors", bob.token, `{"readSequence": "4"}`)
	if code != http.StatusOK || cur["cursor"].(map[string]any)["deliveredSequence"] != "4" {
		t.Errorf("cursors: %d %v", code, cur)
	}
	code, list := e.rest(t, "GET", "/v1/conversations", bob.token, "")
	if cs, _ := list["conversations"].([]any); code != http.StatusOK || len(cs) != 1 {
		t.Errorf("conversations: %d %v", code, list)
	}
	cancel()
}

// TestRESTStreamEnds: a stream refused at the start gets the error's HTTP status; one
// ended by the server gets an error line.
func TestRESTStreamEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	e.send(t, us[0], us[1].identity, "1", "one")
	lines, resp, _ := e.restStream(t, us[1].token, "afterInboxSequence=2")
	l := nextLine(t, lines)
	if resp.StatusCode != http.StatusBadRequest || l.Error == nil || !strings.Contains(l.Error.Message, "beyond your latest inbox sequence 1") {
		t.Errorf("cursor beyond the end: %d %+v", resp.StatusCode, l)
	}
	_, resp, _ = e.restStream(t, "", "")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %d", resp.StatusCode)
	}
	short := us[1]
	short.token = e.token(t, short, 2*time.Minute)
	lines, resp, _ = e.restStream(t, short.token, "heartbeatInterval=1s")
	if resp.StatusCode != http.StatusOK || nextLine(t, lines).Result.Heartbeat == nil {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	e.clock.Add(3 * time.Minute)
	for {
		l := nextLine(t, lines)
		if l.Error != nil {
			if l.Error.Code != 16 || !strings.Contains(l.Error.Message, "access token expired") {
				t.Errorf("end of stream: %+v", l.Error)
			}
			break
		}
	}
}

// TestRESTRefusals: each refusal has the right HTTP status, says what was wrong, and
// writes nothing.
func TestRESTRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	conv := e.send(t, alice, bob.identity, "1", "one").GetConversationId()
	group := e.groupID(t, a, "team")
	big := base64.StdEncoding.EncodeToString(make([]byte, DefaultMaxEnvelopeBytes+1))
	post := "/v1/conversations/" + bob.identity + "/messages"
	cases := []servicetest.RESTRefusal[string]{
		{"malformed JSON", "POST", post, alice.token, `{"clientMessageId": "2", "envelope": `, 400, ""},
		{"unknown field", "POST", post, alice.token, `{"clientMessageId": "2", "priority": "high"}`, 400, "priority"},
		{"envelope not base64", "POST", post, alice.token, `{"clientMessageId": "2", "header": {"kind": "MESSAGE_KIND_PLAINTEXT"}, "envelope": "%%%"}`, 400, ""},
		{"unknown kind", "POST", post, alice.token, `{"clientMessageId": "2", "header": {"kind": "MESSAGE_KIND_SECRET"}, "envelope": "eA=="}`, 400, ""},
		{"oversized envelope", "POST", post, alice.token, `{"clientMessageId": "2", "header": {"kind": "MESSAGE_KIND_PLAINTEXT"}, "envelope": "` + big + `"}`, 400, "limit is 262144"},
		{"no client_message_id", "POST", post, alice.token, `{"header": {"kind": "MESSAGE_KIND_PLAINTEXT"}, "envelope": "eA=="}`, 400, "client_message_id is empty"},
		{"no token", "POST", post, "", restMessage(alice, "2", "x"), 401, "missing credential"},
		{"non-participant", "POST", "/v1/conversations/" + conv + "/messages", carol.token, restMessage(alice, "2", "x"), 403, "take part in no conversation"},
		{"group without the group service", "POST", "/v1/conversations/" + group + "/messages", alice.token, restMessage(alice, "2", "x"), 503, "group service"},
		{"history beyond the end", "GET", "/v1/conversations/" + conv + "/messages?afterSequence=9", alice.token, "", 400, "beyond the conversation's latest sequence 1"},
		{"history of another pair", "GET", "/v1/conversations/" + conv + "/messages", carol.token, "", 403, "take part in no conversation"},
		{"cursor beyond the end", "POST", "/v1/conversations/" + conv + "/cursors", bob.token, `{"readSequence": "2"}`, 400, "above the conversation's latest sequence 1"},
		{"internal RPC has no route", "POST", "/v1/events", alice.token, `{}`, 404, "no route"},
	}
	servicetest.CheckRESTRefusals(t, cases, e.rest, e.snapshot)
}

// TestRESTStartPresence shows, through the gateway, that Subscribe's and History's
// starting points depend on presence: `afterInboxSequence=0` (a zero that is sent)
// replays everything, leaving it out starts live, and `fromStart=true` is the form no
// encoder drops; `afterSequence=0` pages forwards from the oldest message, leaving it
// out pages backwards from the newest.
func TestRESTStartPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	for i := 1; i <= 2; i++ {
		e.send(t, alice, bob.identity, fmt.Sprint(i), body(i))
	}
	// firstItems reads a stream's lines until its catch-up heartbeat.
	firstItems := func(t *testing.T, query string) []string {
		t.Helper()
		lines, resp, cancel := e.restStream(t, bob.token, query)
		defer cancel()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("?%s: %d", query, resp.StatusCode)
		}
		var got []string
		for {
			l := nextLine(t, lines)
			if l.Result == nil {
				t.Fatalf("?%s: line %+v", query, l)
			}
			if l.Result.Heartbeat != nil {
				return got
			}
			got = append(got, string(l.Result.Message.Envelope))
		}
	}
	everything := []string{body(1), body(2)}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"afterInboxSequence=0", everything},
		{"fromStart=true", everything},
		{"afterInboxSequence=0&fromStart=true", everything},
		{"", nil}, // live: the stored messages are not replayed
		{"afterInboxSequence=1", everything[1:]},
	} {
		t.Run("subscribe ?"+tc.query, func(t *testing.T) {
			if got := firstItems(t, tc.query); !slices.Equal(got, tc.want) {
				t.Errorf("replayed %q; want %q", got, tc.want)
			}
		})
	}
	t.Run("subscribe ?fromStart=true&afterInboxSequence=1", func(t *testing.T) {
		lines, resp, _ := e.restStream(t, bob.token, "fromStart=true&afterInboxSequence=1")
		if l := nextLine(t, lines); resp.StatusCode != http.StatusBadRequest || l.Error == nil || !strings.Contains(l.Error.Message, "two different starts") {
			t.Errorf("both starts: %d %+v", resp.StatusCode, l)
		}
	})
	for _, tc := range []struct{ query, first string }{
		{"afterSequence=0", "1"}, // forwards from the oldest
		{"", "2"},                // backwards from the newest
	} {
		t.Run("history ?"+tc.query, func(t *testing.T) {
			code, page := e.rest(t, "GET", "/v1/conversations/"+alice.identity+"/messages?"+tc.query, bob.token, "")
			msgs, _ := page["messages"].([]any)
			if code != http.StatusOK || len(msgs) != 2 || msgs[0].(map[string]any)["sequence"] != tc.first {
				t.Errorf("%d %v; want both messages, sequence %s first", code, page, tc.first)
			}
		})
	}
}
