package identity

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

func TestBadRequestsAreRefusedAndWriteNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appID, key := e.newApp(t, "app one")
	second, err := e.client.CreateAppKey(as(testAdmin), &identityv1.CreateAppKeyRequest{AppId: appID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RevokeAppKey(as(testAdmin), &identityv1.RevokeAppKeyRequest{AppId: appID, KeyId: second.GetKey().GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	revokedKey := second.GetApiKey()
	alice := e.user(t, key, "alice")
	tok := e.token(t, key, alice)
	keyID := strings.SplitN(strings.TrimPrefix(key, apiKeyPrefix), "_", 2)[0]
	wrongSecret := apiKeyPrefix + keyID + "_" + strings.Repeat("A", 43)
	unknownKey := apiKeyPrefix + strings.Repeat("a", keyIDLen) + "_" + strings.Repeat("A", 43)
	c := e.client
	manyIDs := make([]string, MaxResolveIDs+1)
	for i := range manyIDs {
		manyIDs[i] = "user" + strings.Repeat("x", i%7)
	}

	cases := []servicetest.Refusal{
		// Admin methods.
		{"CreateApp without credential", servicetest.Call(c.CreateApp, as(""), &identityv1.CreateAppRequest{DisplayName: "x"}), codes.Unauthenticated, "missing credential"},
		{"CreateApp with a wrong admin credential", servicetest.Call(c.CreateApp, as("not-the-admin"), &identityv1.CreateAppRequest{DisplayName: "x"}), codes.Unauthenticated, "invalid admin credential"},
		{"CreateApp with an app key", servicetest.Call(c.CreateApp, as(key), &identityv1.CreateAppRequest{DisplayName: "x"}), codes.Unauthenticated, "invalid admin credential"},
		{"CreateApp with an access token", servicetest.Call(c.CreateApp, as(tok), &identityv1.CreateAppRequest{DisplayName: "x"}), codes.Unauthenticated, "invalid admin credential"},
		{"CreateApp with an empty name", servicetest.Call(c.CreateApp, as(testAdmin), &identityv1.CreateAppRequest{DisplayName: " "}), codes.InvalidArgument, "display_name is empty"},
		{"CreateApp with a long name", servicetest.Call(c.CreateApp, as(testAdmin), &identityv1.CreateAppRequest{DisplayName: strings.Repeat("é", MaxDisplayNameLen+1)}), codes.InvalidArgument, "at most 128"},
		{"CreateApp with a control character", servicetest.Call(c.CreateApp, as(testAdmin), &identityv1.CreateAppRequest{DisplayName: "a\nb"}), codes.InvalidArgument, "control character"},
		{"GetApp with a malformed id", servicetest.Call(c.GetApp, as(testAdmin), &identityv1.GetAppRequest{AppId: "../etc"}), codes.InvalidArgument, "app_id"},
		{"GetApp of an unknown app", servicetest.Call(c.GetApp, as(testAdmin), &identityv1.GetAppRequest{AppId: appIDPrefix + strings.Repeat("a", appIDLen)}), codes.NotFound, "not found"},
		{"CreateAppKey for an unknown app", servicetest.Call(c.CreateAppKey, as(testAdmin), &identityv1.CreateAppKeyRequest{AppId: appIDPrefix + strings.Repeat("b", appIDLen)}), codes.NotFound, "not found"},
		{"RevokeAppKey of an unknown key", servicetest.Call(c.RevokeAppKey, as(testAdmin), &identityv1.RevokeAppKeyRequest{AppId: appID, KeyId: strings.Repeat("c", keyIDLen)}), codes.NotFound, "has no key"},
		{"RevokeAppKey with a malformed key id", servicetest.Call(c.RevokeAppKey, as(testAdmin), &identityv1.RevokeAppKeyRequest{AppId: appID, KeyId: "x"}), codes.InvalidArgument, "key_id"},
		{"RotateSigningKey with an app key", servicetest.Call(c.RotateSigningKey, as(key), &identityv1.RotateSigningKeyRequest{}), codes.Unauthenticated, "invalid admin credential"},

		// App-key methods.
		{"IssueToken without credential", servicetest.Call(c.IssueToken, as(""), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "missing credential"},
		{"IssueToken with a malformed key", servicetest.Call(c.IssueToken, as("uak_abc"), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "malformed app API key"},
		{"IssueToken with an unknown key", servicetest.Call(c.IssueToken, as(unknownKey), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "unknown app API key"},
		{"IssueToken with a wrong secret", servicetest.Call(c.IssueToken, as(wrongSecret), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "unknown app API key"},
		{"IssueToken with a revoked key", servicetest.Call(c.IssueToken, as(revokedKey), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "was revoked"},
		{"IssueToken with the admin credential", servicetest.Call(c.IssueToken, as(testAdmin), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "malformed app API key"},
		{"IssueToken with an access token", servicetest.Call(c.IssueToken, as(tok), &identityv1.IssueTokenRequest{Identity: alice}), codes.Unauthenticated, "malformed app API key"},
		{"IssueToken for an empty identity", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{}), codes.InvalidArgument, "identity is empty"},
		{"IssueToken for a raw user id", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{Identity: "alice"}), codes.InvalidArgument, "identity"},
		{"IssueToken for a group identity", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{Identity: "g_" + alice[2:]}), codes.InvalidArgument, "not a user identity"},
		{"IssueToken for an identity over the length limit", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{Identity: alice + strings.Repeat("a", 300)}), codes.InvalidArgument, "characters"},
		{"IssueToken with a ttl under a minute", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{Identity: alice, Ttl: durationpb.New(10 * time.Second)}), codes.InvalidArgument, "out of range"},
		{"IssueToken with a ttl over a day", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{Identity: alice, Ttl: durationpb.New(25 * time.Hour)}), codes.InvalidArgument, "out of range"},
		{"IssueToken with a negative ttl", servicetest.Call(c.IssueToken, as(key), &identityv1.IssueTokenRequest{Identity: alice, Ttl: durationpb.New(-time.Hour)}), codes.InvalidArgument, "out of range"},
		{"ResolveIdentities without ids", servicetest.Call(c.ResolveIdentities, as(key), &identityv1.ResolveIdentitiesRequest{}), codes.InvalidArgument, "no ids given"},
		{"ResolveIdentities with too many ids", servicetest.Call(c.ResolveIdentities, as(key), &identityv1.ResolveIdentitiesRequest{Uids: manyIDs}), codes.InvalidArgument, "at most 1000"},
		{"ResolveIdentities with too many ids in all", servicetest.Call(c.ResolveIdentities, as(key), &identityv1.ResolveIdentitiesRequest{Uids: manyIDs[:600], Guids: manyIDs[:401]}), codes.InvalidArgument, "at most 1000"},
		{"ResolveIdentities with an empty id", servicetest.Call(c.ResolveIdentities, as(key), &identityv1.ResolveIdentitiesRequest{Uids: []string{"a", ""}}), codes.InvalidArgument, "uids[1] is empty"},
		{"ResolveIdentities with a long id", servicetest.Call(c.ResolveIdentities, as(key), &identityv1.ResolveIdentitiesRequest{Guids: []string{strings.Repeat("g", MaxExternalIDLen+1)}}), codes.InvalidArgument, "guids[0] is 257 bytes"},
		{"ResolveIdentities with an access token", servicetest.Call(c.ResolveIdentities, as(tok), &identityv1.ResolveIdentitiesRequest{Uids: []string{"a"}}), codes.Unauthenticated, "malformed app API key"},
		{"RevokeTokens for a malformed identity", servicetest.Call(c.RevokeTokens, as(key), &identityv1.RevokeTokensRequest{Identity: "bob"}), codes.InvalidArgument, "identity"},
		{"RevokeTokens before a future time", servicetest.Call(c.RevokeTokens, as(key), &identityv1.RevokeTokensRequest{Identity: alice, Before: timestamppb.New(e.clock.Now().Add(time.Hour))}), codes.InvalidArgument, "in the future"},
		{"RevokeTokens with a revoked key", servicetest.Call(c.RevokeTokens, as(revokedKey), &identityv1.RevokeTokensRequest{Identity: alice}), codes.Unauthenticated, "was revoked"},

		{"IssueResetGrant without credential", servicetest.Call(c.IssueResetGrant, as(""), &identityv1.IssueResetGrantRequest{Identity: alice}), codes.Unauthenticated, "missing credential"},
		{"IssueResetGrant with the user's access token", servicetest.Call(c.IssueResetGrant, as(tok), &identityv1.IssueResetGrantRequest{Identity: alice}), codes.Unauthenticated, "malformed app API key"},
		{"IssueResetGrant with a revoked key", servicetest.Call(c.IssueResetGrant, as(revokedKey), &identityv1.IssueResetGrantRequest{Identity: alice}), codes.Unauthenticated, "was revoked"},
		{"IssueResetGrant with the admin credential", servicetest.Call(c.IssueResetGrant, as(testAdmin), &identityv1.IssueResetGrantRequest{Identity: alice}), codes.Unauthenticated, "malformed app API key"},
		{"IssueResetGrant for a raw user id", servicetest.Call(c.IssueResetGrant, as(key), &identityv1.IssueResetGrantRequest{Identity: "alice"}), codes.InvalidArgument, "identity"},
		{"IssueResetGrant for a group identity", servicetest.Call(c.IssueResetGrant, as(key), &identityv1.IssueResetGrantRequest{Identity: "g_" + alice[2:]}), codes.InvalidArgument, "not a user identity"},
		{"IssueResetGrant with a ttl under a minute", servicetest.Call(c.IssueResetGrant, as(key), &identityv1.IssueResetGrantRequest{Identity: alice, Ttl: durationpb.New(30 * time.Second)}), codes.InvalidArgument, "ttl 30s is out of range: between 1m0s and 1h0m0s"},
		{"IssueResetGrant with a ttl over an hour", servicetest.Call(c.IssueResetGrant, as(key), &identityv1.IssueResetGrantRequest{Identity: alice, Ttl: durationpb.New(61 * time.Minute)}), codes.InvalidArgument, "out of range"},

		// Internal methods.
		{"ListRevocations without credential", servicetest.Call(c.ListRevocations, as(""), &identityv1.ListRevocationsRequest{}), codes.PermissionDenied, "only Umbra services"},
		{"ListRevocations with an access token", servicetest.Call(c.ListRevocations, as(tok), &identityv1.ListRevocationsRequest{}), codes.PermissionDenied, "only Umbra services"},
		{"ListRevocations with the admin credential", servicetest.Call(c.ListRevocations, as(testAdmin), &identityv1.ListRevocationsRequest{}), codes.PermissionDenied, "only Umbra services"},
		{"ListRevocations with a wrong service token", servicetest.Call(c.ListRevocations, serviceCtx("nope"), &identityv1.ListRevocationsRequest{}), codes.PermissionDenied, "only Umbra services"},
		{"ListRevocations with a page over the maximum", servicetest.Call(c.ListRevocations, serviceCtx(testServiceToken), &identityv1.ListRevocationsRequest{PageSize: MaxRevocationPage + 1}), codes.InvalidArgument, "page_size"},
	}
	servicetest.CheckRefusals(t, cases, e.snapshot)
}

func TestAppsTokensAndIdentities(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appA, keyA := e.newApp(t, "A")
	appB, keyB := e.newApp(t, "B")

	// API keys are shown once and stored hashed.
	got, err := e.client.GetApp(as(testAdmin), &identityv1.GetAppRequest{AppId: appA})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetApp().GetKeys()) != 1 || strings.Contains(got.String(), keyA[len(keyA)-20:]) {
		t.Errorf("GetApp = %v; want one key and no secret", got)
	}
	snap := e.snapshot(t)
	for k, v := range snap {
		if strings.Contains(v, keyA[len(keyA)-43:]) {
			t.Errorf("the API key's secret is stored in plain at %q", k)
		}
	}

	// Identities: stable, opaque, distinct per id, kind and app.
	resp, err := e.client.ResolveIdentities(as(keyA), &identityv1.ResolveIdentitiesRequest{Uids: []string{"alice", "bob"}, Guids: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	alice, bob, group := resp.GetUsers()["alice"], resp.GetUsers()["bob"], resp.GetGroups()["alice"]
	shape := regexp.MustCompile(`^[ug]_[a-z2-7]{32}$`)
	for _, id := range []string{alice, bob, group} {
		if !shape.MatchString(id) || strings.Contains(id, "alice") {
			t.Errorf("identity %q is not opaque", id)
		}
	}
	if alice == bob || alice[2:] == group[2:] || !strings.HasPrefix(alice, "u_") || !strings.HasPrefix(group, "g_") {
		t.Errorf("identities collide: alice %s bob %s group %s", alice, bob, group)
	}
	if again := e.user(t, keyA, "alice"); again != alice {
		t.Errorf("alice resolved to %s, then %s", alice, again)
	}
	if inB := e.user(t, keyB, "alice"); inB == alice {
		t.Errorf("alice has the same identity in two apps")
	}

	// A token acts for its identity and app.
	issued, err := e.client.IssueToken(as(keyA), &identityv1.IssueTokenRequest{Identity: alice, Ttl: durationpb.New(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if d := issued.GetExpiresAt().AsTime().Sub(e.clock.Now()); d != 10*time.Minute {
		t.Errorf("token lives %s, want 10m", d)
	}
	who, err := e.client.WhoAmI(as(issued.GetAccessToken()), &identityv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if who.GetIdentity() != alice || who.GetAppId() != appA || who.GetTokenId() != issued.GetTokenId() {
		t.Errorf("WhoAmI = %v; want %s in %s", who, alice, appA)
	}
	def := e.token(t, keyB, alice)
	who, err = e.client.WhoAmI(as(def), &identityv1.WhoAmIRequest{})
	if err != nil || who.GetAppId() != appB {
		t.Fatalf("WhoAmI with app B's token = %v, %v", who, err)
	}
	if d := who.GetExpiresAt().AsTime().Sub(e.clock.Now()); d != time.Hour {
		t.Errorf("default token lives %s, want 1h", d)
	}

	// A second key works alongside the first; revoking it stops only it.
	k2, err := e.client.CreateAppKey(as(testAdmin), &identityv1.CreateAppKeyRequest{AppId: appA})
	if err != nil {
		t.Fatal(err)
	}
	e.token(t, k2.GetApiKey(), alice)
	if _, err := e.client.RevokeAppKey(as(testAdmin), &identityv1.RevokeAppKeyRequest{AppId: appA, KeyId: k2.GetKey().GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.IssueToken(as(k2.GetApiKey()), &identityv1.IssueTokenRequest{Identity: alice})
	servicetest.MustCode(t, err, codes.Unauthenticated, "was revoked")
	e.token(t, keyA, alice)
}

func TestRevokeTokensLogsOutEverywhereInOneAppOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, keyA := e.newApp(t, "A")
	_, keyB := e.newApp(t, "B")
	alice := e.user(t, keyA, "alice")
	oldA := e.token(t, keyA, alice)
	sameIdentityInB := e.token(t, keyB, alice) // the same identity string in another app
	// Used once before the revocation, so the verifier remembers it as valid: the
	// revocation must win over that memory.
	if _, err := e.client.WhoAmI(as(oldA), &identityv1.WhoAmIRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(300 * time.Millisecond)

	resp, err := e.client.RevokeTokens(as(keyA), &identityv1.RevokeTokensRequest{Identity: alice})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetRevokedBefore().AsTime(); got.Before(e.clock.Now()) || got.Nanosecond() != 0 {
		t.Errorf("revoked_before = %s; want now rounded up to a whole second", got)
	}
	_, err = e.client.WhoAmI(as(oldA), &identityv1.WhoAmIRequest{})
	servicetest.MustCode(t, err, codes.Unauthenticated, "revoked")
	if _, err := e.client.WhoAmI(as(sameIdentityInB), &identityv1.WhoAmIRequest{}); err != nil {
		t.Errorf("app A's revocation logged app B's user out: %v", err)
	}
	// A token issued after the revocation works; an earlier "before" changes nothing.
	e.clock.Add(time.Second)
	fresh := e.token(t, keyA, alice)
	if _, err := e.client.WhoAmI(as(fresh), &identityv1.WhoAmIRequest{}); err != nil {
		t.Errorf("token issued after the revocation: %v", err)
	}
	again, err := e.client.RevokeTokens(as(keyA), &identityv1.RevokeTokensRequest{Identity: alice, Before: timestamppb.New(e.clock.Now().Add(-time.Hour))})
	if err != nil || !again.GetRevokedBefore().AsTime().Equal(resp.GetRevokedBefore().AsTime()) {
		t.Errorf("an earlier revocation moved the one in force: %v, %v", again, err)
	}
	// A remembered token still expires.
	e.clock.Add(time.Hour + auth.Leeway + time.Second)
	_, err = e.client.WhoAmI(as(fresh), &identityv1.WhoAmIRequest{})
	servicetest.MustCode(t, err, codes.Unauthenticated, "expired")
}

func TestSigningKeyRotationKeepsOldTokensValid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, key := e.newApp(t, "A")
	alice := e.user(t, key, "alice")
	old, err := e.client.IssueToken(as(key), &identityv1.IssueTokenRequest{Identity: alice, Ttl: durationpb.New(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.client.GetSigningKeys(context.Background(), &identityv1.GetSigningKeysRequest{})
	if err != nil || len(before.GetKeys()) != 1 {
		t.Fatalf("keys before rotation: %v, %v", before, err)
	}
	rot, err := e.client.RotateSigningKey(as(testAdmin), &identityv1.RotateSigningKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	after, err := e.client.GetSigningKeys(context.Background(), &identityv1.GetSigningKeysRequest{})
	if err != nil || len(after.GetKeys()) != 2 {
		t.Fatalf("keys after rotation: %v, %v", after, err)
	}
	for _, k := range after.GetKeys() {
		if (k.GetKeyId() == rot.GetKey().GetKeyId()) != k.GetActive() {
			t.Errorf("key %s active=%v", k.GetKeyId(), k.GetActive())
		}
		if k.GetKeyId() == before.GetKeys()[0].GetKeyId() && k.GetVerifyUntil().AsTime().Before(old.GetExpiresAt().AsTime()) {
			t.Errorf("old key stops verifying at %s, before its last token expires at %s", k.GetVerifyUntil().AsTime(), old.GetExpiresAt().AsTime())
		}
	}
	// The old token still verifies; new tokens carry the new key id.
	if _, err := e.client.WhoAmI(as(old.GetAccessToken()), &identityv1.WhoAmIRequest{}); err != nil {
		t.Errorf("token signed before the rotation: %v", err)
	}
	if kid := headerKID(t, e.token(t, key, alice)); kid != rot.GetKey().GetKeyId() {
		t.Errorf("new token has kid %s, want %s", kid, rot.GetKey().GetKeyId())
	}
	// Once every token of the old key has expired, the key is no longer published.
	e.clock.Add(24*time.Hour + time.Minute)
	later, err := e.client.GetSigningKeys(context.Background(), &identityv1.GetSigningKeysRequest{})
	if err != nil || len(later.GetKeys()) != 1 || later.GetKeys()[0].GetKeyId() != rot.GetKey().GetKeyId() {
		t.Errorf("keys a day later: %v, %v; want only the new key", later, err)
	}
}
