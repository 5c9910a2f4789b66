package card

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// TestLookupCardOwner: the messaging service learns whose card a card id is, and its
// status through rotation and revocation; a card of another app is NOT_FOUND; only
// services may ask.
func TestLookupCardOwner(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, b := e.newApp(t, "A"), e.newApp(t, "B")
	alice := e.newUser(t, a, "alice")
	k1, k2 := newKeys(t, e2ee.SuiteX25519), newKeys(t, e2ee.SuiteX25519)
	c1 := e.publish(t, alice, k1, nil, nil)
	lookup := func(app string, id []byte) (*cardv1.LookupCardOwnerResponse, error) {
		return e.client.LookupCardOwner(asService(testServiceToken), &cardv1.LookupCardOwnerRequest{AppId: app, CardId: id})
	}
	want := func(id []byte, status cardv1.CardStatus) {
		t.Helper()
		r, err := lookup(a.id, id)
		if err != nil || r.GetIdentity() != alice.identity || r.GetStatus() != status {
			t.Errorf("lookup: %v, %v; want %s %s", r, err, alice.identity, status)
		}
	}
	want(c1.GetCardId(), cardv1.CardStatus_CARD_STATUS_ACTIVE)
	c2 := e.publish(t, alice, k2, c1.GetCardId(), k1)
	want(c1.GetCardId(), cardv1.CardStatus_CARD_STATUS_SUPERSEDED)
	want(c2.GetCardId(), cardv1.CardStatus_CARD_STATUS_ACTIVE)
	if _, err := e.client.RevokeCard(alice.ctx(), &cardv1.RevokeCardRequest{CardId: c2.GetCardId()}); err != nil {
		t.Fatal(err)
	}
	want(c2.GetCardId(), cardv1.CardStatus_CARD_STATUS_REVOKED)

	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"another app's card", func() error { _, err := lookup(b.id, c1.GetCardId()); return err }, codes.NotFound, "no card"},
		{"an unknown card", func() error { _, err := lookup(a.id, make([]byte, 32)); return err }, codes.NotFound, "no card"},
		{"a short card id", func() error { _, err := lookup(a.id, make([]byte, 31)); return err }, codes.InvalidArgument, "card_id is 31 bytes"},
		{"no app", func() error { _, err := lookup("", c1.GetCardId()); return err }, codes.InvalidArgument, "app_id is empty"},
		{"an access token", servicetest.Call(e.client.LookupCardOwner, alice.ctx(), &cardv1.LookupCardOwnerRequest{AppId: a.id, CardId: c1.GetCardId()}), codes.PermissionDenied, "only Umbra services"},
		{"a wrong service token", servicetest.Call(e.client.LookupCardOwner, asService("not-the-token"), &cardv1.LookupCardOwnerRequest{AppId: a.id, CardId: c1.GetCardId()}), codes.PermissionDenied, "only Umbra services"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), tc.code, tc.msg) })
	}
}
