package group

import (
	"crypto/rand"
	"maps"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestSenderCardOfAnotherForcesNoRotation: through the real messaging service, a member
// whose message names another member's card, or no card at all, is refused before the
// group service sees the message, so it cannot mark the group "rotation required"
// (AuthorizeSend marks CARD_CHANGED when a sender's card is not the one its key was
// wrapped to). A member's own new card still forces the rotation it should.
func TestSenderCardOfAnotherForcesNoRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true}) // no card feed: only messages could mark
	owner, bob, group := e.twoMemberGroup(t)
	send := func(card []byte, cmid string) error {
		_, err := e.msg.Send(bob.ctx(), &messagingv1.SendRequest{ConversationId: group, ClientMessageId: cmid, Envelope: []byte("ciphertext"),
			Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, Epoch: 1, SenderCardId: card}})
		return err
	}
	unknown := make([]byte, CardIDSize)
	rand.Read(unknown)
	for _, tc := range []struct {
		name string
		card []byte
		code codes.Code
		msg  string
	}{
		{"another member's card", owner.cardID, codes.PermissionDenied, "card of another identity"},
		{"no card of the app", unknown, codes.FailedPrecondition, "no card of this app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot(t)
			wantCode(t, send(tc.card, tc.name), tc.code, tc.msg)
			if st := e.state(t, owner, group); st.GetRotationRequired() {
				t.Errorf("the group must rotate after the refused message: %v", st.GetRotationReasons())
			}
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("the refused message changed group.db")
			}
		})
	}
	if err := send(bob.cardID, "own"); err != nil {
		t.Fatalf("bob's message with his own card: %v", err)
	}

	// Bob's own new card: the epoch's key is wrapped to his old one, so the group
	// must rotate.
	if err := e.publishCard(bob); err != nil {
		t.Fatal(err)
	}
	err := send(bob.cardID, "rotated")
	wantCode(t, err, codes.FailedPrecondition, "epoch required")
	if d := detail[*groupv1.EpochRequired](err); d == nil || !slices.Equal(d.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED}) {
		t.Errorf("after bob's rotation: %v", d)
	}
}
