package sdk

import (
	"context"
	"fmt"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// sendAttempts bounds how often Send re-encrypts after the service asked for another
// epoch: each refusal is answered by a commit or a key fetch, so more than a few in a
// row means the group keeps changing faster than the client can follow.
const sendAttempts = 5

// Encrypt encrypts and signs data for the group at its current epoch, committing a new
// epoch first when the group has none yet or needs one. It returns the epoch and the
// GroupMessage bytes, which any member holding that epoch's key can open.
func (g *Group) Encrypt(ctx context.Context, data []byte) (epoch uint64, msg []byte, err error) {
	_, kp, myCard, err := g.c.current()
	if err != nil {
		return 0, nil, err
	}
	return g.seal(ctx, kp, myCard, data)
}

// seal is Encrypt with the user's current key pair and card id.
func (g *Group) seal(ctx context.Context, kp *e2ee.KeyPair, myCard, data []byte) (epoch uint64, msg []byte, err error) {
	epoch, key, err := g.currentKey(ctx)
	if err != nil {
		return 0, nil, err
	}
	msg, err = e2ee.SealGroupMessage(kp, myCard, g.ID, epoch, key, data, g.c.cfg.Now())
	return epoch, msg, err
}

// Decrypt opens a GroupMessage of the group that sender (an identity) is expected to
// have sent: the sender card named in the message must be one of sender's, active when
// the message says it was written, and sender a member at the membership head of the
// epoch's commit, as the group's verified membership chain says. The epoch key is fetched if the client does not hold it; a user who was not
// a member in that epoch gets e2ee.ErrNotMember or e2ee.ErrWrongEpoch.
func (g *Group) Decrypt(ctx context.Context, data []byte, sender string) ([]byte, error) {
	if _, _, _, err := g.c.current(); err != nil {
		return nil, err
	}
	info, err := e2ee.InspectGroupMessage(data)
	if err != nil {
		return nil, err
	}
	return g.open(ctx, data, info, sender)
}

// open is Decrypt of data, whose header InspectGroupMessage read as info. The sender
// must have been a member at the membership head the commit of the message's epoch
// names: the verified chain decides, not the service's word.
func (g *Group) open(ctx context.Context, data []byte, info *e2ee.GroupMessageInfo, sender string) ([]byte, error) {
	if info.GroupID != g.ID {
		return nil, fmt.Errorf("%w: the message is of %s, not %s", e2ee.ErrWrongGroup, info.GroupID, g.ID)
	}
	card, err := g.c.senderCard(ctx, info.SenderCardID, sender, info.CreatedAt)
	if err != nil {
		return nil, err
	}
	key, err := g.epochKey(ctx, info.Epoch)
	if err != nil {
		return nil, err
	}
	head, ok := g.c.groups.head(g.ID, info.Epoch)
	if !ok {
		return nil, fmt.Errorf("%w: no verified commit of epoch %d of %s", e2ee.ErrWrongEpoch, info.Epoch, g.ID)
	}
	if err := g.checkHeadMember(ctx, head, sender); err != nil {
		return nil, err
	}
	return e2ee.OpenGroupMessage(data, g.ID, func(e uint64) []byte {
		if e == info.Epoch {
			return key
		}
		return nil
	}, card.Card)
}

// Send encrypts data for the group and sends it in the group's conversation. When the
// service refuses the epoch (a member joined or left, a card rotated, the rotation
// policy is due), Send commits a new epoch, or loads the one another member committed,
// re-encrypts and resends with the same client message id, so the message is stored
// once. In a group whose encryption mode is OFF it fails with ErrEncryptionOff; use
// SendPlaintext.
func (g *Group) Send(ctx context.Context, data []byte) (*messagingv1.SendResponse, error) {
	_, kp, myCard, err := g.c.current()
	if err != nil {
		return nil, err
	}
	id := NewClientMessageID()
	var lastErr error
	for range sendAttempts {
		epoch, msg, err := g.seal(ctx, kp, myCard, data)
		if err != nil {
			return nil, err
		}
		resp, err := g.c.Send(ctx, &messagingv1.SendRequest{
			ConversationId:  g.ID,
			ClientMessageId: id,
			Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, Epoch: epoch, SenderCardId: myCard},
			Envelope:        msg,
		})
		required := isEpochRequired(err)
		if required == nil {
			return resp, err
		}
		lastErr = err
		g.c.groups.update(g.ID, func(s *groupState) {
			if required.GetCurrentEpoch() >= s.current {
				s.current, s.rotationRequired = required.GetCurrentEpoch(), required.GetRotationRequired()
			}
		})
	}
	return nil, fmt.Errorf("%w: the service kept refusing the epoch: %w", ErrRotationFailed, lastErr)
}

// SendPlaintext sends data unencrypted in the group's conversation, which the service
// accepts only in groups whose encryption mode is OPTIONAL or OFF.
func (g *Group) SendPlaintext(ctx context.Context, data []byte) (*messagingv1.SendResponse, error) {
	return g.c.Send(ctx, &messagingv1.SendRequest{
		ConversationId:  g.ID,
		ClientMessageId: NewClientMessageID(),
		Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
		Envelope:        data,
	})
}

// EncryptionMode returns the group's encryption mode as the client last saw it
// (ENCRYPTION_MODE_UNSPECIFIED if it has not yet).
func (g *Group) EncryptionMode() groupv1.EncryptionMode {
	var mode groupv1.EncryptionMode
	g.c.groups.update(g.ID, func(s *groupState) { mode = s.mode })
	return mode
}

// openGroupMessage opens an ENCRYPTED message of a group conversation, checking that
// the readable header the service saw agrees with the signed one.
func (c *Client) openGroupMessage(ctx context.Context, m *messagingv1.Message) ([]byte, error) {
	info, err := e2ee.InspectGroupMessage(m.GetEnvelope())
	if err != nil {
		return nil, err
	}
	if info.Epoch != m.GetHeader().GetEpoch() || !sameID(info.SenderCardID, m.GetHeader().GetSenderCardId()) {
		return nil, fmt.Errorf("%w: the message's readable header (epoch %d, card %x) differs from its signed one (epoch %d, card %x)",
			e2ee.ErrMalformed, m.GetHeader().GetEpoch(), m.GetHeader().GetSenderCardId(), info.Epoch, info.SenderCardID)
	}
	if _, _, _, err := c.current(); err != nil {
		return nil, err
	}
	return c.Group(m.GetConversationId()).open(ctx, m.GetEnvelope(), info, m.GetSender())
}
