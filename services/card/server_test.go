package card

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// selfSign signs arbitrary content bytes as a card's self-signature, so tests can
// publish content that e2ee.NewCard would refuse to build.
func selfSign(kp *e2ee.KeyPair, content []byte) []byte {
	return ed25519.Sign(kp.Signing, append([]byte(e2ee.LabelCardSelfSignature+"\x00"), content...))
}

// rawCard encodes c (deterministically, as a client would) and self-signs it with kp.
func rawCard(t *testing.T, kp *e2ee.KeyPair, c *envelopev1.CardContent) *cardv1.PublishCardRequest {
	t.Helper()
	content, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return &cardv1.PublishCardRequest{Content: content, SelfSignature: selfSign(kp, content)}
}

// distinctIdentities returns n different well-formed user identities.
func distinctIdentities(n int) []string {
	out := make([]string, n)
	for i := range out {
		body := b32.EncodeToString(binary.BigEndian.AppendUint32(nil, uint32(i)))
		out[i] = "u_" + strings.Repeat("a", 32-len(body)) + body
	}
	return out
}

func TestBadRequestsAreRefusedAndWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, b := e.newApp(t, "A"), e.newApp(t, "B")
	users := e.newUsers(t, a, "alice", "bob", "dave", "erin", "frank")
	alice, bob, dave, erin, frank := users[0], users[1], users[2], users[3], users[4]
	carol := e.newUser(t, b, "carol")
	// A grant for dave that has expired by the time it is used, and one for dave from
	// another app (the same identity string, issued with app B's key).
	expiredGrant := e.grant(t, dave, time.Minute)
	e.clock.Add(time.Minute + 2*auth.Leeway)
	twinGrant := e.grant(t, user{app: b, identity: dave.identity}, 0)

	// alice: c1, rotated (endorsed) to c2, which is active.
	k1, k2 := newKeys(t, e2ee.SuiteX25519), newKeys(t, e2ee.SuiteX25519)
	c1 := e.publish(t, alice, k1, nil, nil)
	c2 := e.publish(t, alice, k2, c1.GetCardId(), k1)
	// bob: an active card. dave: a revoked one and none active.
	b1 := e.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	d1 := e.publish(t, dave, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if _, err := e.client.RevokeCard(dave.ctx(), &cardv1.RevokeCardRequest{CardId: d1.GetCardId()}); err != nil {
		t.Fatal(err)
	}

	k3 := newKeys(t, e2ee.SuiteX25519)
	good := e.cardRequest(t, erin, k3, nil, nil) // a valid first card of erin's
	rotation := func() *cardv1.PublishCardRequest { return e.cardRequest(t, alice, k3, c2.GetCardId(), nil) }
	withEndorsement := func(content, sig []byte) *cardv1.PublishCardRequest {
		r := rotation()
		r.Endorsement = &cardv1.CardEndorsement{Content: content, Signature: sig}
		return r
	}
	// An endorsement by the right key of another card than the one sent.
	otherNext := e.cardRequest(t, alice, newKeys(t, e2ee.SuiteX25519), c2.GetCardId(), k2)
	badSig := bytes.Clone(good.GetSelfSignature())
	badSig[0] ^= 1
	unknownSuite := rawCard(t, k3, &envelopev1.CardContent{
		Version: 1, Identity: erin.identity, SigningPublicKey: k3.SigningPublicKey(),
		Suite: envelopev1.Suite(7), KemPublicKey: k3.KEMPublicKey(), CreatedAtUnixSeconds: e.clock.Now().Unix(),
	})
	shortKEM := rawCard(t, k3, &envelopev1.CardContent{
		Version: 1, Identity: erin.identity, SigningPublicKey: k3.SigningPublicKey(),
		Suite: e2ee.SuiteX25519, KemPublicKey: k3.KEMPublicKey()[:31], CreatedAtUnixSeconds: e.clock.Now().Unix(),
	})
	unknownField := bytes.Clone(good.GetContent())
	unknownField = append(unknownField, 15<<3, 1) // field 15 (unknown), varint 1
	truncated := good.GetContent()[:len(good.GetContent())-7]
	futureContent, futureSig, err := e2ee.NewCard(k3, erin.identity, e.clock.Now().Add(DefaultClockSkew+time.Minute), nil)
	if err != nil {
		t.Fatal(err)
	}
	justInSkew, justInSig, err := e2ee.NewCard(k3, erin.identity, e.clock.Now().Add(DefaultClockSkew), nil)
	if err != nil {
		t.Fatal(err)
	}
	republished := &cardv1.PublishCardRequest{Content: c1.GetContent(), SelfSignature: c1.GetSelfSignature()}
	c2NoEndorsement := &cardv1.PublishCardRequest{Content: c2.GetContent(), SelfSignature: c2.GetSelfSignature()}
	endorsedFirst := e.cardRequest(t, erin, k3, nil, nil)
	endorsedFirst.Endorsement = &cardv1.CardEndorsement{Content: []byte{8, 1}, Signature: make([]byte, 64)}

	// frank: a card, revoked, and a reset that spent its grant.
	f1 := e.publish(t, frank, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if _, err := e.client.RevokeCard(frank.ctx(), &cardv1.RevokeCardRequest{CardId: f1.GetCardId()}); err != nil {
		t.Fatal(err)
	}
	spentGrant := e.grant(t, frank, 0)
	if _, err := e.client.PublishCard(frank.ctx(), e.resetRequest(t, frank, newKeys(t, e2ee.SuiteX25519), spentGrant)); err != nil {
		t.Fatal(err)
	}
	daveGrant, erinGrant := e.grant(t, dave, 0), e.grant(t, erin, 0)
	forgedGrant := []byte(daveGrant)
	// Another base64url letter in the signature (a flipped bit could make it no base64
	// at all, which is refused as malformed instead).
	if i := len(forgedGrant) - 5; forgedGrant[i] == 'A' {
		forgedGrant[i] = 'B'
	} else {
		forgedGrant[i] = 'A'
	}
	resetWithPrevious := e.cardRequest(t, alice, k3, c2.GetCardId(), k2)
	resetWithPrevious.ResetGrant = e.grant(t, alice, 0)
	daveReset := func(grant string) *cardv1.PublishCardRequest { return e.resetRequest(t, dave, k3, grant) }

	tooMany, tooManyLookups := distinctIdentities(MaxSearchIdentities+1), distinctIdentities(MaxLookupIdentities+1)
	c := e.client
	pub := func(u user, req *cardv1.PublishCardRequest) func() error {
		return servicetest.Call(c.PublishCard, u.ctx(), req)
	}
	search := func(u user, ids ...string) func() error {
		return servicetest.Call(c.SearchCards, u.ctx(), &cardv1.SearchCardsRequest{Identities: ids})
	}
	history := func(u user, req *cardv1.ListCardHistoryRequest) func() error {
		return servicetest.Call(c.ListCardHistory, u.ctx(), req)
	}
	otherToken := historyToken(bob.identity, 5) // well formed, but for bob's listing

	cases := []servicetest.Refusal{
		// PublishCard: the card itself.
		{"publish without a token", pub(user{}, good), codes.Unauthenticated, "missing credential"},
		{"publish with an app key", pub(user{token: a.key}, good), codes.Unauthenticated, "access token is malformed"},
		{"empty content", pub(erin, &cardv1.PublishCardRequest{SelfSignature: good.GetSelfSignature()}), codes.InvalidArgument, "content is empty"},
		{"oversized content", pub(erin, &cardv1.PublishCardRequest{Content: make([]byte, e2ee.MaxCardContentSize+1), SelfSignature: good.GetSelfSignature()}), codes.InvalidArgument, "4097 bytes; a card's content is at most 4096"},
		{"truncated protobuf", pub(erin, &cardv1.PublishCardRequest{Content: truncated, SelfSignature: selfSign(k3, truncated)}), codes.InvalidArgument, "does not parse (truncated or corrupt)"},
		{"unknown field in the content", pub(erin, &cardv1.PublishCardRequest{Content: unknownField, SelfSignature: selfSign(k3, unknownField)}), codes.InvalidArgument, "fields this version does not know"},
		{"no self-signature", pub(erin, &cardv1.PublishCardRequest{Content: good.GetContent()}), codes.InvalidArgument, "self_signature is empty"},
		{"short self-signature", pub(erin, &cardv1.PublishCardRequest{Content: good.GetContent(), SelfSignature: badSig[:63]}), codes.InvalidArgument, "self-signature is 63 bytes; want 64"},
		{"bad self-signature", pub(erin, &cardv1.PublishCardRequest{Content: good.GetContent(), SelfSignature: badSig}), codes.InvalidArgument, "card refused (bad signature): card self-signature does not verify"},
		{"signature by another key", pub(erin, &cardv1.PublishCardRequest{Content: good.GetContent(), SelfSignature: selfSign(k1, good.GetContent())}), codes.InvalidArgument, "does not verify"},
		{"unknown suite", pub(erin, unknownSuite), codes.InvalidArgument, "card refused (unknown suite)"},
		{"KEM key of the wrong size", pub(erin, shortKEM), codes.InvalidArgument, "KEM key is 31 bytes; suite SUITE_X25519 wants 32"},
		{"someone else's identity", pub(bob, good), codes.PermissionDenied, "is for identity " + erin.identity + ", but the access token acts for " + bob.identity},
		{"created_at beyond the skew", pub(erin, &cardv1.PublishCardRequest{Content: futureContent, SelfSignature: futureSig}), codes.InvalidArgument, "6m0s ahead of the server's clock; at most 5m0s"},

		// PublishCard: the rotation rule.
		{"first card while one is active", pub(bob, e.cardRequest(t, bob, k3, nil, nil)), codes.AlreadyExists,
			"already has an active card " + cardIDString(b1.GetCardId()) + ": to rotate, publish a new card whose previous_card_id is " + cardIDString(b1.GetCardId())},
		{"previous is a superseded card", pub(alice, e.cardRequest(t, alice, k3, c1.GetCardId(), nil)), codes.Aborted,
			"previous_card_id " + cardIDString(c1.GetCardId()) + " is not the active card (it is superseded); the active card is " + cardIDString(c2.GetCardId())},
		{"previous is unknown", pub(alice, e.cardRequest(t, alice, k3, bytes.Repeat([]byte{7}, 32), nil)), codes.Aborted, "there is no such card"},
		{"previous is another identity's card", pub(alice, e.cardRequest(t, alice, k3, b1.GetCardId(), nil)), codes.Aborted, "it is another identity's card"},
		{"previous is a revoked card", pub(dave, e.cardRequest(t, dave, k3, d1.GetCardId(), nil)), codes.Aborted,
			"(it is revoked); the active card is none: the identity's cards were revoked; a new card is a reset (no previous_card_id) and needs a reset grant"},
		{"previous names a card with no card active", pub(erin, e.cardRequest(t, erin, k3, c2.GetCardId(), nil)), codes.Aborted, "the active card is none"},
		{"a superseded card published again", pub(alice, republished), codes.AlreadyExists, "was published before and is now superseded: a card is published once"},
		{"the active card again without its endorsement", pub(alice, c2NoEndorsement), codes.AlreadyExists, "a retry must send the card exactly as first published"},

		// PublishCard: cards no earlier card endorses need a reset grant.
		{"a fresh card after a revocation, token only", pub(dave, e.cardRequest(t, dave, k3, nil, nil)), codes.PermissionDenied,
			"a reset grant is required: no earlier card of " + dave.identity + " endorses this card (it has published cards before and has no active card: its last one was revoked)"},
		{"a rotation without endorsement, token only", pub(alice, rotation()), codes.PermissionDenied,
			"a reset grant is required: no earlier card of " + alice.identity + " endorses this card (the rotation from " + cardIDString(c2.GetCardId()) + " carries no endorsement"},
		{"a reset that names a previous card", pub(alice, resetWithPrevious), codes.InvalidArgument, "a reset card starts a new chain: publish it without previous_card_id"},
		{"a reset grant used before", pub(frank, e.resetRequest(t, frank, k3, spentGrant)), codes.PermissionDenied, "was already used at"},
		{"another identity's reset grant", pub(dave, daveReset(erinGrant)), codes.PermissionDenied,
			"the reset grant is for identity " + erin.identity + " of app " + a.id + ", but the access token acts for " + dave.identity},
		{"another app's reset grant for the same identity", pub(dave, daveReset(twinGrant)), codes.PermissionDenied, "of app " + b.id + ", but the access token acts for " + dave.identity + " of app " + a.id},
		{"an access token as the reset grant", pub(dave, daveReset(dave.token)), codes.PermissionDenied, `reset_grant is not a reset grant (its type is "JWT"`},
		{"an expired reset grant", pub(dave, daveReset(expiredGrant)), codes.PermissionDenied, "reset grant has expired"},
		{"a reset grant with a forged signature", pub(dave, daveReset(string(forgedGrant))), codes.PermissionDenied, "reset grant signature is invalid"},
		{"a reset grant that is not a JWS", pub(dave, daveReset("not-a-grant")), codes.PermissionDenied, "reset_grant is malformed"},
		{"an oversized reset grant", pub(dave, daveReset(strings.Repeat("a", 4097))), codes.InvalidArgument, "reset_grant is 4097 bytes; a reset grant is at most 4096"},
		{"a reset grant as the access token", pub(user{token: daveGrant}, daveReset(daveGrant)), codes.Unauthenticated, "a reset grant is not an access token"},

		// PublishCard: endorsements.
		{"malformed endorsement", pub(alice, withEndorsement([]byte{0xff, 0xff, 0xff}, make([]byte, 64))), codes.InvalidArgument, "endorsement refused (malformed): endorsement does not parse"},
		{"endorsement by the wrong key", pub(alice, e.cardRequest(t, alice, k3, c2.GetCardId(), k1)), codes.InvalidArgument, "endorsement signature does not verify with the previous card's key"},
		{"endorsement of another card", pub(alice, withEndorsement(otherNext.GetEndorsement().GetContent(), otherNext.GetEndorsement().GetSignature())), codes.InvalidArgument, "endorsement does not name the new card"},
		{"endorsement with a short signature", pub(alice, withEndorsement([]byte{8, 1}, make([]byte, 10))), codes.InvalidArgument, "endorsement.signature is 10 bytes; want 64"},
		{"endorsement without content", pub(alice, withEndorsement(nil, make([]byte, 64))), codes.InvalidArgument, "endorsement.content is empty"},
		{"oversized endorsement", pub(alice, withEndorsement(make([]byte, 300), make([]byte, 64))), codes.InvalidArgument, "endorsement.content is 300 bytes; at most 256"},
		{"endorsement of a first card", pub(erin, endorsedFirst), codes.InvalidArgument, "only a rotation is endorsed"},

		// SearchCards.
		{"search without a token", search(user{}, alice.identity), codes.Unauthenticated, "missing credential"},
		{"search for nothing", search(alice), codes.InvalidArgument, "identities is empty: send 1 to 1000"},
		{"search for too many", search(alice, tooMany...), codes.InvalidArgument, "more than 1000 distinct identities"},
		{"search for a raw user id", search(alice, bob.identity, "bob"), codes.InvalidArgument, "identities[1] is 3 characters"},
		{"search for a group identity", search(alice, "g_"+bob.identity[2:]), codes.InvalidArgument, "identities[0] does not start with \"u_\""},
		{"search with upper case", search(alice, strings.ToUpper(bob.identity[:2])+bob.identity[2:]), codes.InvalidArgument, "identities[0]"},

		// GetCard.
		{"get without a token", servicetest.Call(c.GetCard, as(""), &cardv1.GetCardRequest{CardId: c1.GetCardId()}), codes.Unauthenticated, "missing credential"},
		{"get with no id", servicetest.Call(c.GetCard, alice.ctx(), &cardv1.GetCardRequest{}), codes.InvalidArgument, "card_id is empty"},
		{"get with a short id", servicetest.Call(c.GetCard, alice.ctx(), &cardv1.GetCardRequest{CardId: []byte("short")}), codes.InvalidArgument, "card_id is 5 bytes; a card id is 32"},
		{"get an unknown card", servicetest.Call(c.GetCard, alice.ctx(), &cardv1.GetCardRequest{CardId: make([]byte, 32)}), codes.NotFound, "no card AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA in this app"},
		{"get another app's card", servicetest.Call(c.GetCard, carol.ctx(), &cardv1.GetCardRequest{CardId: c1.GetCardId()}), codes.NotFound, "no card"},

		// ListCardHistory.
		{"history of a malformed identity", history(alice, &cardv1.ListCardHistoryRequest{Identity: "alice"}), codes.InvalidArgument, "identity is 5 characters"},
		{"history page over the maximum", history(alice, &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageSize: MaxHistoryPage + 1}), codes.InvalidArgument, "page_size 1001 is over the maximum 1000"},
		{"history with a garbage page token", history(alice, &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageToken: "!!not base64"}), codes.InvalidArgument, "page_token is malformed"},
		{"history with a truncated page token", history(alice, &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageToken: otherToken[:10]}), codes.InvalidArgument, "page_token is malformed"},
		{"history with another identity's page token", history(alice, &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageToken: otherToken}), codes.InvalidArgument, "page_token belongs to another identity's history"},
		{"history with a zero page token", history(alice, &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageToken: historyToken(alice.identity, 0)}), codes.InvalidArgument, "page_token is malformed"},

		// RevokeCard.
		{"revoke without a token", servicetest.Call(c.RevokeCard, as(""), &cardv1.RevokeCardRequest{CardId: c2.GetCardId()}), codes.Unauthenticated, "missing credential"},
		{"revoke another user's card", servicetest.Call(c.RevokeCard, bob.ctx(), &cardv1.RevokeCardRequest{CardId: c2.GetCardId()}), codes.PermissionDenied, "is another identity's: only its owner may revoke it"},
		{"revoke another app's card", servicetest.Call(c.RevokeCard, carol.ctx(), &cardv1.RevokeCardRequest{CardId: c2.GetCardId()}), codes.NotFound, "no card"},
		{"revoke with a malformed id", servicetest.Call(c.RevokeCard, alice.ctx(), &cardv1.RevokeCardRequest{CardId: make([]byte, 33)}), codes.InvalidArgument, "card_id is 33 bytes"},

		// Internal RPCs.
		{"lookup without credential", servicetest.Call(c.LookupActiveCards, as(""), &cardv1.LookupActiveCardsRequest{AppId: a.id, Identities: []string{alice.identity}}), codes.PermissionDenied, "only Umbra services"},
		{"lookup with an access token", servicetest.Call(c.LookupActiveCards, alice.ctx(), &cardv1.LookupActiveCardsRequest{AppId: a.id, Identities: []string{alice.identity}}), codes.PermissionDenied, "only Umbra services"},
		{"lookup with a wrong service token", servicetest.Call(c.LookupActiveCards, asService("not-the-token"), &cardv1.LookupActiveCardsRequest{AppId: a.id, Identities: []string{alice.identity}}), codes.PermissionDenied, "only Umbra services"},
		{"lookup with the admin credential", servicetest.Call(c.LookupActiveCards, as(testAdmin), &cardv1.LookupActiveCardsRequest{AppId: a.id, Identities: []string{alice.identity}}), codes.PermissionDenied, "only Umbra services"},
		{"lookup without an app", servicetest.Call(c.LookupActiveCards, asService(testServiceToken), &cardv1.LookupActiveCardsRequest{Identities: []string{alice.identity}}), codes.InvalidArgument, "app_id is empty"},
		{"lookup with a malformed app", servicetest.Call(c.LookupActiveCards, asService(testServiceToken), &cardv1.LookupActiveCardsRequest{AppId: "app_X", Identities: []string{alice.identity}}), codes.InvalidArgument, `app_id "app_X" is malformed`},
		{"lookup of nothing", servicetest.Call(c.LookupActiveCards, asService(testServiceToken), &cardv1.LookupActiveCardsRequest{AppId: a.id}), codes.InvalidArgument, "identities is empty: send 1 to 10000"},
		{"lookup of too many", servicetest.Call(c.LookupActiveCards, asService(testServiceToken), &cardv1.LookupActiveCardsRequest{AppId: a.id, Identities: tooManyLookups}), codes.InvalidArgument, "more than 10000 distinct identities"},
		{"events without credential", servicetest.Call(c.ListCardEvents, alice.ctx(), &cardv1.ListCardEventsRequest{}), codes.PermissionDenied, "only Umbra services"},
		{"events page over the maximum", servicetest.Call(c.ListCardEvents, asService(testServiceToken), &cardv1.ListCardEventsRequest{PageSize: MaxEventPage + 1}), codes.InvalidArgument, "page_size 10001 is over the maximum 10000"},
	}
	servicetest.CheckRefusals(t, cases, e.snapshot)

	// The same requests are accepted once what was wrong is right, so the cases above
	// were refused for the reason they name.
	if _, err := c.PublishCard(erin.ctx(), &cardv1.PublishCardRequest{Content: justInSkew, SelfSignature: justInSig}); err != nil {
		t.Errorf("a card dated exactly the allowed skew ahead: %v", err)
	}
	if _, err := c.PublishCard(alice.ctx(), e.cardRequest(t, alice, k3, c2.GetCardId(), k2)); err != nil {
		t.Errorf("alice's rotation endorsed by the right key: %v", err)
	}
	if _, err := c.PublishCard(dave.ctx(), daveReset(daveGrant)); err != nil {
		t.Errorf("dave's reset card after his revocation, with his grant: %v", err)
	}
}

func TestRotationStory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob")
	alice, bob := users[0], users[1]
	c := e.client
	keyResp, err := c.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	serviceKey := keyResp.GetKey()
	if serviceKey.GetAlgorithm() != "Ed25519" || len(serviceKey.GetPublicKey()) != ed25519.PublicKeySize || serviceKey.GetKeyId() == "" {
		t.Fatalf("service key = %v", serviceKey)
	}
	// checkCard verifies what a client verifies, and the status.
	checkCard := func(t *testing.T, got *cardv1.Card, want cardv1.CardStatus) {
		t.Helper()
		parsed, err := e2ee.ParseCard(got.GetContent(), got.GetSelfSignature())
		if err != nil {
			t.Fatalf("the card does not verify: %v", err)
		}
		if !bytes.Equal(parsed.ID, got.GetCardId()) || parsed.Identity != got.GetIdentity() {
			t.Errorf("card id %x / identity %s do not match the content (%x, %s)", got.GetCardId(), got.GetIdentity(), parsed.ID, parsed.Identity)
		}
		if err := e2ee.VerifyServiceSignature(serviceKey.GetPublicKey(), got.GetCardId(), got.GetServiceSignature()); err != nil {
			t.Errorf("service signature: %v", err)
		}
		if got.GetServiceKeyId() != serviceKey.GetKeyId() {
			t.Errorf("service_key_id %q, want %q", got.GetServiceKeyId(), serviceKey.GetKeyId())
		}
		if got.GetStatus() != want {
			t.Errorf("status %v, want %v", got.GetStatus(), want)
		}
	}
	get := func(id []byte) *cardv1.Card {
		t.Helper()
		resp, err := c.GetCard(bob.ctx(), &cardv1.GetCardRequest{CardId: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetCard()
	}
	searchIDs := func(ids ...string) [][]byte {
		t.Helper()
		resp, err := c.SearchCards(bob.ctx(), &cardv1.SearchCardsRequest{Identities: ids})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, card := range resp.GetCards() {
			checkCard(t, card, cardv1.CardStatus_CARD_STATUS_ACTIVE)
			// The same card as GetCard's, but for log_index, which SearchCards leaves
			// unset (its record of active cards does not hold it).
			full := proto.Clone(get(card.GetCardId())).(*cardv1.Card)
			full.LogIndex = 0
			if !proto.Equal(card, full) {
				t.Errorf("search answered %v; GetCard answers %v", card, full)
			}
			out = append(out, card.GetCardId())
		}
		return out
	}
	same := func(got [][]byte, want ...[]byte) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				return false
			}
		}
		return true
	}

	// A first card, hybrid suite.
	k1 := newKeys(t, e2ee.SuiteHybrid)
	req1 := e.cardRequest(t, alice, k1, nil, nil)
	resp, err := c.PublishCard(alice.ctx(), req1)
	if err != nil {
		t.Fatal(err)
	}
	c1 := resp.GetCard()
	checkCard(t, c1, cardv1.CardStatus_CARD_STATUS_ACTIVE)
	if !bytes.Equal(c1.GetContent(), req1.GetContent()) || !c1.GetPublishedAt().AsTime().Equal(e.clock.Now()) || c1.GetEndorsement() != nil {
		t.Errorf("first card = %v", c1)
	}
	// A retry after a lost reply is answered with the same card and writes nothing.
	snap := e.snapshot(t)
	e.clock.Add(time.Minute)
	again, err := c.PublishCard(alice.ctx(), req1)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(again.GetCard(), c1) {
		t.Errorf("retry answered %v, want the stored card %v", again.GetCard(), c1)
	}
	if !maps.Equal(snap, e.snapshot(t)) {
		t.Error("the retry changed the store")
	}

	// An endorsed rotation to the compact suite.
	k2 := newKeys(t, e2ee.SuiteX25519)
	e.clock.Add(time.Minute)
	c2 := e.publish(t, alice, k2, c1.GetCardId(), k1)
	checkCard(t, c2, cardv1.CardStatus_CARD_STATUS_ACTIVE)
	next, _ := e2ee.ParseCard(c2.GetContent(), c2.GetSelfSignature())
	prev, _ := e2ee.ParseCard(c1.GetContent(), c1.GetSelfSignature())
	if err := e2ee.VerifyEndorsement(prev, next, c2.GetEndorsement().GetContent(), c2.GetEndorsement().GetSignature()); err != nil {
		t.Errorf("the stored endorsement does not verify: %v", err)
	}
	old := get(c1.GetCardId())
	checkCard(t, old, cardv1.CardStatus_CARD_STATUS_SUPERSEDED)
	if !bytes.Equal(old.GetSupersededBy(), c2.GetCardId()) || !old.GetSupersededAt().AsTime().Equal(c2.GetPublishedAt().AsTime()) || old.GetRevokedAt() != nil {
		t.Errorf("c1 after the rotation = %v; want superseded by c2 at its publication", old)
	}

	// Every key lost: a reset card, with a grant from the app backend, revokes the
	// active card and is marked.
	e.clock.Add(time.Minute)
	resp, err = c.PublishCard(alice.ctx(), e.resetRequest(t, alice, newKeys(t, e2ee.SuiteHybrid), e.grant(t, alice, 0)))
	if err != nil {
		t.Fatal(err)
	}
	c3 := resp.GetCard()
	checkCard(t, c3, cardv1.CardStatus_CARD_STATUS_ACTIVE)
	if c3.GetEndorsement() != nil || !c3.GetKeyReset() || c1.GetKeyReset() || c2.GetKeyReset() {
		t.Errorf("reset card = %v; want key_reset, no endorsement (and c1, c2 not marked)", c3)
	}
	if got := get(c2.GetCardId()); got.GetStatus() != cardv1.CardStatus_CARD_STATUS_REVOKED || len(got.GetSupersededBy()) != 0 ||
		!got.GetRevokedAt().AsTime().Equal(c3.GetPublishedAt().AsTime()) {
		t.Errorf("c2 after the reset = %v; want revoked at the reset, superseded by nothing", got)
	}

	// Search: the active card only, once, in request order; unknown identities absent.
	bobCard := e.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if got := searchIDs(alice.identity, "u_"+strings.Repeat("q", 32), alice.identity, bob.identity); !same(got, c3.GetCardId(), bobCard.GetCardId()) {
		t.Errorf("search = %x; want alice's c3 then bob's card", got)
	}
	if got := searchIDs(bob.identity, alice.identity); !same(got, bobCard.GetCardId(), c3.GetCardId()) {
		t.Errorf("search in the other order = %x", got)
	}

	// History: every card, newest first, in pages.
	hist, err := c.ListCardHistory(bob.ctx(), &cardv1.ListCardHistoryRequest{Identity: alice.identity})
	if err != nil {
		t.Fatal(err)
	}
	var ids [][]byte
	for _, card := range hist.GetCards() {
		ids = append(ids, card.GetCardId())
	}
	if !same(ids, c3.GetCardId(), c2.GetCardId(), c1.GetCardId()) || hist.GetNextPageToken() != "" {
		t.Errorf("history = %x (next %q); want c3 c2 c1 in one page", ids, hist.GetNextPageToken())
	}
	page1, err := c.ListCardHistory(bob.ctx(), &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	page2, err := c.ListCardHistory(bob.ctx(), &cardv1.ListCardHistoryRequest{Identity: alice.identity, PageSize: 2, PageToken: page1.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if len(page1.GetCards()) != 2 || page1.GetNextPageToken() == "" || len(page2.GetCards()) != 1 ||
		!bytes.Equal(page2.GetCards()[0].GetCardId(), c1.GetCardId()) || page2.GetNextPageToken() != "" {
		t.Errorf("pages of 2: %d cards (next %q), then %d (next %q)", len(page1.GetCards()), page1.GetNextPageToken(), len(page2.GetCards()), page2.GetNextPageToken())
	}
	if empty, err := c.ListCardHistory(bob.ctx(), &cardv1.ListCardHistoryRequest{Identity: "u_" + strings.Repeat("z", 32)}); err != nil || len(empty.GetCards()) != 0 {
		t.Errorf("history of an identity without cards = %v, %v", empty, err)
	}

	if !hist.GetCards()[0].GetKeyReset() || hist.GetCards()[1].GetKeyReset() {
		t.Errorf("history marks %v, %v as reset; want the reset card c3 only", hist.GetCards()[0].GetKeyReset(), hist.GetCards()[1].GetKeyReset())
	}

	// Revoking the active card leaves alice without one; revoking twice changes nothing.
	e.clock.Add(time.Minute)
	rev, err := c.RevokeCard(alice.ctx(), &cardv1.RevokeCardRequest{CardId: c3.GetCardId()})
	if err != nil {
		t.Fatal(err)
	}
	checkCard(t, rev.GetCard(), cardv1.CardStatus_CARD_STATUS_REVOKED)
	if !rev.GetCard().GetRevokedAt().AsTime().Equal(e.clock.Now()) {
		t.Errorf("revoked_at %v, want now", rev.GetCard().GetRevokedAt().AsTime())
	}
	if got := searchIDs(alice.identity); len(got) != 0 {
		t.Errorf("search after revocation = %x; want nothing", got)
	}
	snap = e.snapshot(t)
	e.clock.Add(time.Minute)
	twice, err := c.RevokeCard(alice.ctx(), &cardv1.RevokeCardRequest{CardId: c3.GetCardId()})
	if err != nil || !proto.Equal(twice.GetCard(), rev.GetCard()) || !maps.Equal(snap, e.snapshot(t)) {
		t.Errorf("second revocation = %v, %v; want the card unchanged and nothing written", twice, err)
	}
	// A superseded card can be revoked too, and keeps its successor.
	rev1, err := c.RevokeCard(alice.ctx(), &cardv1.RevokeCardRequest{CardId: c1.GetCardId()})
	if err != nil {
		t.Fatal(err)
	}
	if r := rev1.GetCard(); r.GetStatus() != cardv1.CardStatus_CARD_STATUS_REVOKED || !bytes.Equal(r.GetSupersededBy(), c2.GetCardId()) {
		t.Errorf("revoked superseded card = %v", r)
	}

	// A fresh card after the revocation names no previous card, and is a reset: the
	// token alone does not let alice (or a thief of her token) publish it.
	e.clock.Add(time.Minute)
	k4 := newKeys(t, e2ee.SuiteHybrid)
	if _, err := c.PublishCard(alice.ctx(), e.cardRequest(t, alice, k4, nil, nil)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a fresh card after the revocation without a grant: %v; want PermissionDenied", err)
	}
	resp, err = c.PublishCard(alice.ctx(), e.resetRequest(t, alice, k4, e.grant(t, alice, 0)))
	if err != nil {
		t.Fatal(err)
	}
	c4 := resp.GetCard()
	if got := searchIDs(alice.identity); !same(got, c4.GetCardId()) {
		t.Errorf("search after the fresh card = %x", got)
	}
	hist, err = c.ListCardHistory(alice.ctx(), &cardv1.ListCardHistoryRequest{Identity: alice.identity})
	if err != nil || len(hist.GetCards()) != 4 {
		t.Fatalf("history after the fresh card: %v, %v; want 4 cards", hist, err)
	}
	wantStatus := []cardv1.CardStatus{cardv1.CardStatus_CARD_STATUS_ACTIVE, cardv1.CardStatus_CARD_STATUS_REVOKED, cardv1.CardStatus_CARD_STATUS_REVOKED, cardv1.CardStatus_CARD_STATUS_REVOKED}
	wantReset := []bool{true, true, false, false}
	for i, card := range hist.GetCards() {
		checkCard(t, card, wantStatus[i])
		if card.GetKeyReset() != wantReset[i] {
			t.Errorf("history card %d: key_reset %v, want %v", i, card.GetKeyReset(), wantReset[i])
		}
	}

	// The internal feed recorded every change in order, and the lookup sees c4.
	evs, err := c.ListCardEvents(asService(testServiceToken), &cardv1.ListCardEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pubKind, revKind := cardv1.CardEventKind_CARD_EVENT_KIND_PUBLISHED, cardv1.CardEventKind_CARD_EVENT_KIND_REVOKED
	want := []struct {
		kind       cardv1.CardEventKind
		card, prev []byte
		identity   string
		reset      bool
	}{
		{pubKind, c1.GetCardId(), nil, alice.identity, false},
		{pubKind, c2.GetCardId(), c1.GetCardId(), alice.identity, false},
		{revKind, c2.GetCardId(), nil, alice.identity, false},
		{pubKind, c3.GetCardId(), nil, alice.identity, true},
		{pubKind, bobCard.GetCardId(), nil, bob.identity, false},
		{revKind, c3.GetCardId(), nil, alice.identity, false},
		{revKind, c1.GetCardId(), nil, alice.identity, false},
		{pubKind, c4.GetCardId(), nil, alice.identity, true},
	}
	if len(evs.GetEvents()) != len(want) || evs.GetLatestSequence() != uint64(len(want)) {
		t.Fatalf("events = %v (latest %d); want %d", evs.GetEvents(), evs.GetLatestSequence(), len(want))
	}
	for i, ev := range evs.GetEvents() {
		w := want[i]
		if ev.GetSequence() != uint64(i+1) || ev.GetKind() != w.kind || !bytes.Equal(ev.GetCardId(), w.card) ||
			!bytes.Equal(ev.GetPreviousCardId(), w.prev) || ev.GetIdentity() != w.identity || ev.GetAppId() != a.id || ev.GetOccurredAt() == nil ||
			ev.GetKeyReset() != w.reset {
			t.Errorf("event %d = %v; want %v of %x (previous %x)", i+1, ev, w.kind, w.card, w.prev)
		}
	}
	tail, err := c.ListCardEvents(asService(testServiceToken), &cardv1.ListCardEventsRequest{AfterSequence: 5, PageSize: 1})
	if err != nil || len(tail.GetEvents()) != 1 || tail.GetEvents()[0].GetSequence() != 6 || tail.GetLatestSequence() != 8 {
		t.Errorf("events after 5, page of 1 = %v, %v", tail, err)
	}
	refs, err := c.LookupActiveCards(asService(testServiceToken), &cardv1.LookupActiveCardsRequest{AppId: a.id, Identities: []string{alice.identity, "u_" + strings.Repeat("q", 32), bob.identity}})
	if err != nil {
		t.Fatal(err)
	}
	c4Parsed, _ := e2ee.ParseCard(c4.GetContent(), c4.GetSelfSignature())
	if len(refs.GetCards()) != 2 || !bytes.Equal(refs.GetCards()[0].GetCardId(), c4.GetCardId()) ||
		!bytes.Equal(refs.GetCards()[0].GetSigningPublicKey(), c4Parsed.SigningKey) || refs.GetCards()[0].GetSuite() != e2ee.SuiteHybrid ||
		refs.GetCards()[1].GetIdentity() != bob.identity || refs.GetCards()[1].GetSuite() != e2ee.SuiteX25519 {
		t.Errorf("lookup = %v; want alice's c4 (hybrid) then bob's card (X25519)", refs.GetCards())
	}
}

func TestAppsAreSeparate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, b := e.newApp(t, "A"), e.newApp(t, "B")
	alice := e.newUser(t, a, "alice")
	carol := e.newUser(t, b, "carol")
	card := e.publish(t, alice, newKeys(t, e2ee.SuiteX25519), nil, nil)
	c := e.client

	// App B's user sees nothing of app A's cards.
	if _, err := c.GetCard(carol.ctx(), &cardv1.GetCardRequest{CardId: card.GetCardId()}); status.Code(err) != codes.NotFound {
		t.Errorf("GetCard of app A's card from app B: %v, want NotFound", err)
	}
	if resp, err := c.SearchCards(carol.ctx(), &cardv1.SearchCardsRequest{Identities: []string{alice.identity}}); err != nil || len(resp.GetCards()) != 0 {
		t.Errorf("SearchCards from app B = %v, %v; want nothing", resp, err)
	}
	if resp, err := c.ListCardHistory(carol.ctx(), &cardv1.ListCardHistoryRequest{Identity: alice.identity}); err != nil || len(resp.GetCards()) != 0 {
		t.Errorf("ListCardHistory from app B = %v, %v; want nothing", resp, err)
	}

	// Even the same identity string in app B (an app backend may issue a token for any
	// identity) is another namespace: its cards and app A's never mix.
	tok, err := e.ids.IssueToken(as(b.key), &identityv1.IssueTokenRequest{Identity: alice.identity})
	if err != nil {
		t.Fatal(err)
	}
	twin := user{app: b, identity: alice.identity, token: tok.GetAccessToken()}
	if _, err := c.RevokeCard(twin.ctx(), &cardv1.RevokeCardRequest{CardId: card.GetCardId()}); status.Code(err) != codes.NotFound {
		t.Errorf("app B's twin revoking app A's card: %v, want NotFound", err)
	}
	if _, err := c.PublishCard(twin.ctx(), e.cardRequest(t, twin, newKeys(t, e2ee.SuiteX25519), card.GetCardId(), nil)); status.Code(err) != codes.Aborted {
		t.Errorf("app B's twin rotating app A's card: %v, want Aborted", err)
	}
	twinCard := e.publish(t, twin, newKeys(t, e2ee.SuiteX25519), nil, nil) // no active card in app B
	inA, err := c.SearchCards(alice.ctx(), &cardv1.SearchCardsRequest{Identities: []string{alice.identity}})
	if err != nil || len(inA.GetCards()) != 1 || !bytes.Equal(inA.GetCards()[0].GetCardId(), card.GetCardId()) {
		t.Errorf("search in app A = %v, %v; want only app A's card", inA, err)
	}
	inB, err := c.SearchCards(carol.ctx(), &cardv1.SearchCardsRequest{Identities: []string{alice.identity}})
	if err != nil || len(inB.GetCards()) != 1 || !bytes.Equal(inB.GetCards()[0].GetCardId(), twinCard.GetCardId()) {
		t.Errorf("search in app B = %v, %v; want only app B's card", inB, err)
	}
	refs, err := c.LookupActiveCards(asService(testServiceToken), &cardv1.LookupActiveCardsRequest{AppId: b.id, Identities: []string{alice.identity}})
	if err != nil || len(refs.GetCards()) != 1 || !bytes.Equal(refs.GetCards()[0].GetCardId(), twinCard.GetCardId()) {
		t.Errorf("lookup in app B = %v, %v; want app B's card", refs, err)
	}
}

func TestSearchRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{SearchRate: 1, SearchBurst: 2}})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob")
	alice, bob := users[0], users[1]
	search := func(u user) error {
		_, err := e.client.SearchCards(u.ctx(), &cardv1.SearchCardsRequest{Identities: []string{bob.identity}})
		return err
	}
	for i := range 2 {
		if err := search(alice); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	wantCode(t, search(alice), codes.ResourceExhausted, "SearchCards rate limit exceeded: at most 1 per second (burst 2) per identity; retry in 1s")
	if err := search(bob); err != nil {
		t.Errorf("bob was limited by alice's calls: %v", err)
	}
	e.clock.Add(time.Second)
	if err := search(alice); err != nil {
		t.Errorf("a second later: %v", err)
	}
	wantCode(t, search(alice), codes.ResourceExhausted, "rate limit exceeded")
	// Other calls are not limited.
	for range 5 {
		if _, err := e.client.ListCardHistory(alice.ctx(), &cardv1.ListCardHistoryRequest{Identity: bob.identity}); err != nil {
			t.Fatalf("ListCardHistory while search is limited: %v", err)
		}
	}
}

// TestConcurrentPublicationsKeepOneActiveCard races first cards, then rotations, of
// one identity: the transaction lets exactly one of each through.
func TestConcurrentPublicationsKeepOneActiveCard(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.newUser(t, e.newApp(t, "A"), "alice")
	keys := map[string]*e2ee.KeyPair{} // by card id
	race := func(previous []byte) (winners []*cardv1.Card, refusals map[codes.Code]int) {
		reqs := make([]*cardv1.PublishCardRequest, 8)
		for i := range reqs {
			kp := newKeys(t, e2ee.SuiteX25519)
			reqs[i] = e.cardRequest(t, alice, kp, previous, keys[string(previous)])
			keys[string(e2ee.CardID(reqs[i].GetContent()))] = kp
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		refusals = map[codes.Code]int{}
		for _, req := range reqs {
			wg.Go(func() {
				resp, err := e.client.PublishCard(alice.ctx(), req)
				mu.Lock()
				defer mu.Unlock()
				refusals[status.Code(err)]++
				if err == nil {
					winners = append(winners, resp.GetCard())
				}
			})
		}
		wg.Wait()
		return winners, refusals
	}
	first, got := race(nil)
	if len(first) != 1 || got[codes.AlreadyExists] != 7 {
		t.Fatalf("8 racing first cards: %d published, codes %v; want 1 and 7 ALREADY_EXISTS", len(first), got)
	}
	second, got := race(first[0].GetCardId())
	if len(second) != 1 || got[codes.Aborted] != 7 {
		t.Fatalf("8 racing rotations: %d published, codes %v; want 1 and 7 ABORTED", len(second), got)
	}
	hist, err := e.client.ListCardHistory(alice.ctx(), &cardv1.ListCardHistoryRequest{Identity: alice.identity})
	if err != nil || len(hist.GetCards()) != 2 || hist.GetCards()[0].GetStatus() != cardv1.CardStatus_CARD_STATUS_ACTIVE ||
		hist.GetCards()[1].GetStatus() != cardv1.CardStatus_CARD_STATUS_SUPERSEDED {
		t.Errorf("history after the races = %v, %v; want one active card over one superseded", hist, err)
	}
}

// TestResetGrantIsSpentOverARestart: a grant the service accepted stays spent after the
// service restarts, while it would still verify.
func TestResetGrantIsSpentOverARestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.newUser(t, e.newApp(t, "A"), "alice")
	c1 := e.publish(t, alice, newKeys(t, e2ee.SuiteX25519), nil, nil)
	grant := e.grant(t, alice, 0)
	resp, err := e.client.PublishCard(alice.ctx(), e.resetRequest(t, alice, newKeys(t, e2ee.SuiteX25519), grant))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetCard().GetKeyReset() {
		t.Errorf("reset card = %v; want key_reset", resp.GetCard())
	}
	if got, err := e.client.GetCard(alice.ctx(), &cardv1.GetCardRequest{CardId: c1.GetCardId()}); err != nil || got.GetCard().GetStatus() != cardv1.CardStatus_CARD_STATUS_REVOKED {
		t.Errorf("the card active before the reset: %v, %v; want REVOKED", got, err)
	}
	e.stop()

	e2 := newEnv(t, envOptions{dir: e.dir, clock: e.clock})
	e2.clock.Add(time.Minute)
	before := e2.snapshot(t)
	_, err = e2.client.PublishCard(alice.ctx(), e2.resetRequest(t, alice, newKeys(t, e2ee.SuiteX25519), grant))
	wantCode(t, err, codes.PermissionDenied, "was already used")
	if !maps.Equal(before, e2.snapshot(t)) {
		t.Error("the refused reset changed the store")
	}
	if _, err := e2.client.PublishCard(alice.ctx(), e2.resetRequest(t, alice, newKeys(t, e2ee.SuiteX25519), e2.grant(t, alice, 0))); err != nil {
		t.Errorf("a reset with a new grant after the restart: %v", err)
	}
}

func TestServiceKeySurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.newUser(t, e.newApp(t, "A"), "alice")
	card := e.publish(t, alice, newKeys(t, e2ee.SuiteHybrid), nil, nil)
	before, err := e.client.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	e.stop()

	e2 := newEnv(t, envOptions{dir: e.dir, clock: e.clock})
	after, err := e2.client.GetServiceKey(as(""), &cardv1.GetServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before.GetKey(), after.GetKey()) {
		t.Fatalf("service key changed over a restart: %v, then %v", before.GetKey(), after.GetKey())
	}
	got, err := e2.client.GetCard(alice.ctx(), &cardv1.GetCardRequest{CardId: card.GetCardId()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2ee.VerifyServiceSignature(after.GetKey().GetPublicKey(), got.GetCard().GetCardId(), got.GetCard().GetServiceSignature()); err != nil {
		t.Errorf("a card signed before the restart: %v", err)
	}
	// Cards published after the restart are signed by the same key.
	bob := e2.newUser(t, e2.newApp(t, "B"), "bob")
	later := e2.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if later.GetServiceKeyId() != before.GetKey().GetKeyId() {
		t.Errorf("card after the restart names key %q, want %q", later.GetServiceKeyId(), before.GetKey().GetKeyId())
	}
	if err := e2ee.VerifyServiceSignature(after.GetKey().GetPublicKey(), later.GetCardId(), later.GetServiceSignature()); err != nil {
		t.Errorf("a card signed after the restart: %v", err)
	}
}

// TestNoPrivateKeyBytesInCardDB runs a register, rotate, revoke and reset story with both
// suites and then reads card.db's raw bytes: no private key of a user may be in it,
// while the public keys are (so the scan looks at the right file).
func TestNoPrivateKeyBytesInCardDB(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob")
	var keys []*e2ee.KeyPair
	for _, u := range users {
		k1, k2, k3 := newKeys(t, e2ee.SuiteHybrid), newKeys(t, e2ee.SuiteX25519), newKeys(t, e2ee.SuiteHybrid)
		keys = append(keys, k1, k2, k3)
		c1 := e.publish(t, u, k1, nil, nil)
		e.clock.Add(time.Second)
		c2 := e.publish(t, u, k2, c1.GetCardId(), k1)
		if _, err := e.client.RevokeCard(u.ctx(), &cardv1.RevokeCardRequest{CardId: c2.GetCardId()}); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(time.Second)
		if _, err := e.client.PublishCard(u.ctx(), e.resetRequest(t, u, k3, e.grant(t, u, 0))); err != nil {
			t.Fatal(err)
		}
	}
	e.stop()
	raw, err := os.ReadFile(filepath.Join(e.dir, "card.db"))
	if err != nil {
		t.Fatal(err)
	}
	for i, kp := range keys {
		kem, err := kp.KEMPrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		secrets := map[string][]byte{"Ed25519 seed": kp.SigningSeed(), "Ed25519 private key": kp.Signing, "KEM private key": kem}
		for name, secret := range secrets {
			if bytes.Contains(raw, secret) {
				t.Errorf("key pair %d (%v): its %s is in card.db", i, kp.Suite, name)
			}
		}
		if !bytes.Contains(raw, kp.KEMPublicKey()) || !bytes.Contains(raw, kp.SigningPublicKey()) {
			t.Errorf("key pair %d: its public keys are not in card.db; is this the right file?", i)
		}
	}
}
