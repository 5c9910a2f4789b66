package messaging

import (
	"maps"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestPlaintextDirectNeedsAppSetting: PLAINTEXT direct messages are refused unless the
// app's settings allow them, which only the operator (admin credential) changes, per
// app; the setting is durable and takes effect from the next message.
func TestPlaintextDirectNeedsAppSetting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newEnv(t, envOptions{dir: dir})
	a, b := e.newApp(t), e.newApp(t)
	us := e.newUsers(t, a, "alice", "bob")
	alice, bob := us[0], us[1]
	others := e.newUsers(t, b, "carol", "dave")
	plain := func(to user, cmid string) *messagingv1.SendRequest {
		return &messagingv1.SendRequest{ConversationId: to.identity, ClientMessageId: cmid, Header: plaintext(), Envelope: []byte("in the clear")}
	}
	refused := func(from, to user, cmid string) {
		t.Helper()
		before := e.snapshot(t)
		_, err := e.client.Send(from.ctx(), plain(to, cmid))
		wantCode(t, err, codes.FailedPrecondition, "direct messages must be encrypted in this app")
		wantSendError(t, roundTrip(t, e.openSendStream(t, from), plain(to, cmid)), codes.FailedPrecondition, "must be encrypted")
		if !maps.Equal(before, e.snapshot(t)) {
			t.Error("the refused message changed the store")
		}
	}

	// The default.
	refused(alice, bob, "p1")
	got, err := e.client.GetAppSettings(as(testAdmin), &messagingv1.GetAppSettingsRequest{AppId: a.id})
	if err != nil || got.GetSettings().GetAllowPlaintextDirect() || got.GetSettings().GetUpdatedAt() != nil || got.GetAppId() != a.id {
		t.Fatalf("default settings: %v, %v", got, err)
	}
	e.send(t, alice, bob.identity, "e1", "ciphertext") // encrypted is always fine

	// The operator allows it for app a only.
	up, err := e.client.UpdateAppSettings(as(testAdmin), &messagingv1.UpdateAppSettingsRequest{AppId: a.id, Settings: &messagingv1.AppSettings{AllowPlaintextDirect: true}})
	if err != nil || !up.GetSettings().GetAllowPlaintextDirect() || !up.GetSettings().GetUpdatedAt().AsTime().Equal(e.clock.Now()) {
		t.Fatalf("update: %v, %v", up, err)
	}
	r, err := e.client.Send(alice.ctx(), plain(bob, "p1"))
	if err != nil || r.GetSequence() != 2 {
		t.Fatalf("PLAINTEXT once allowed: %v, %v", r, err)
	}
	if h := e.history(t, bob, alice.identity); len(h) != 2 || h[1].GetHeader().GetKind() != messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT {
		t.Errorf("history: %v", h)
	}
	refused(others[0], others[1], "p1")

	// Durable: a restart keeps it.
	e.stop()
	e = newEnv(t, envOptions{dir: dir, clock: e.clock})
	if r, err := e.client.Send(alice.ctx(), plain(bob, "p2")); err != nil || r.GetSequence() != 3 {
		t.Fatalf("PLAINTEXT after a restart: %v, %v", r, err)
	}

	// And switched off again.
	if _, err := e.client.UpdateAppSettings(as(testAdmin), &messagingv1.UpdateAppSettingsRequest{AppId: a.id, Settings: &messagingv1.AppSettings{}}); err != nil {
		t.Fatal(err)
	}
	refused(alice, bob, "p3")
}

// TestAppSettingsRefusals: only the admin credential reads or changes an app's
// settings; malformed requests are refused; nothing is written either way. Over REST
// too.
func TestAppSettingsRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	alice := e.newUsers(t, a, "alice")[0]
	allow := &messagingv1.AppSettings{AllowPlaintextDirect: true}
	// update is an UpdateAppSettings of req with cred.
	update := func(cred string, req *messagingv1.UpdateAppSettingsRequest) func() error {
		return servicetest.Call(e.client.UpdateAppSettings, as(cred), req)
	}
	servicetest.CheckRefusals(t, []servicetest.Refusal{
		{"no credential", update("", &messagingv1.UpdateAppSettingsRequest{AppId: a.id, Settings: allow}), codes.Unauthenticated, "missing credential"},
		{"an access token", update(alice.token, &messagingv1.UpdateAppSettingsRequest{AppId: a.id, Settings: allow}), codes.Unauthenticated, "invalid admin credential"},
		{"the app's own key", update(a.key, &messagingv1.UpdateAppSettingsRequest{AppId: a.id, Settings: allow}), codes.Unauthenticated, "invalid admin credential"},
		{"no app", update(testAdmin, &messagingv1.UpdateAppSettingsRequest{Settings: allow}), codes.InvalidArgument, "app_id is empty"},
		{"a malformed app", update(testAdmin, &messagingv1.UpdateAppSettingsRequest{AppId: "app_X", Settings: allow}), codes.InvalidArgument, "app_id"},
		{"no settings", update(testAdmin, &messagingv1.UpdateAppSettingsRequest{AppId: a.id}), codes.InvalidArgument, "settings is missing"},
	}, e.snapshot)
	_, err := e.client.GetAppSettings(alice.ctx(), &messagingv1.GetAppSettingsRequest{AppId: a.id})
	wantCode(t, err, codes.Unauthenticated, "invalid admin credential")

	// REST: the admin's routes under the app.
	path := "/v1/apps/" + a.id + "/messaging-settings"
	if code, out := e.rest(t, "POST", path, alice.token, `{"settings": {"allowPlaintextDirect": true}}`); code != http.StatusUnauthorized {
		t.Errorf("POST with an access token: %d %v", code, out)
	}
	if code, out := e.rest(t, "POST", path, testAdmin, `{"settings": {"allowPlaintextDirect": true}}`); code != http.StatusOK {
		t.Errorf("POST as the admin: %d %v", code, out)
	}
	code, out := e.rest(t, "GET", path, testAdmin, "")
	if settings, _ := out["settings"].(map[string]any); code != http.StatusOK || settings["allowPlaintextDirect"] != true {
		t.Errorf("GET as the admin: %d %v", code, out)
	}
}
