package servicetest

import (
	"context"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// CardRequest returns the PublishCard request of a card of identity for kp, created at
// now, replacing previous (nil for a first card) and endorsed by endorser when it is
// set, as a client builds it.
func CardRequest(kp *e2ee.KeyPair, identity string, now time.Time, previous []byte, endorser *e2ee.KeyPair) (*cardv1.PublishCardRequest, error) {
	content, sig, err := e2ee.NewCard(kp, identity, now, previous)
	if err != nil {
		return nil, err
	}
	req := &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}
	if endorser != nil {
		next, err := e2ee.ParseCard(content, sig)
		if err != nil {
			return nil, err
		}
		ec, es, err := e2ee.Endorse(endorser, next)
		if err != nil {
			return nil, err
		}
		req.Endorsement = &cardv1.CardEndorsement{Content: ec, Signature: es}
	}
	return req, nil
}

// PublishCard publishes, as the caller of ctx, a card of identity for a new key pair
// of the compact suite (X25519), built as CardRequest builds it, and returns the key
// pair and the stored card.
func PublishCard(ctx context.Context, cards cardv1.CardServiceClient, identity string, now time.Time, previous []byte, endorser *e2ee.KeyPair) (*e2ee.KeyPair, *cardv1.Card, error) {
	kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	if err != nil {
		return nil, nil, err
	}
	req, err := CardRequest(kp, identity, now, previous, endorser)
	if err != nil {
		return nil, nil, err
	}
	resp, err := cards.PublishCard(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return kp, resp.GetCard(), nil
}
