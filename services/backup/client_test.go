package backup

import (
	"crypto/rand"
	"testing"

	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"

	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
)

// This file holds the client's side of an evaluation (RFC 9497, verifiable mode), as a
// client built on circl does it: the service's tests and, exported, the node tests of
// package backup_test use it.

// clientSuite is the suite docs/wire-format.md names, as a client names it: not the
// service's own variable, so that a change there fails the tests.
var clientSuite = oprf.SuiteRistretto255

// Blinded is the client's side of one OPRF evaluation.
type Blinded struct {
	finalize *oprf.FinalizeData
	// Element is the blinded element an EvaluateRequest carries.
	Element []byte
}

// blindingKey is a public key for a client built before it knows the server's.
var blindingKey = func() *oprf.PublicKey {
	k, err := oprf.GenerateKey(clientSuite, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k.Public()
}()

// Blind blinds input.
func Blind(t testing.TB, input []byte) Blinded {
	t.Helper()
	// Blinding does not use the server's key, which the client learns only from the
	// response; any key stands in for it here.
	fin, req, err := oprf.NewVerifiableClient(clientSuite, blindingKey).Blind([][]byte{input})
	if err != nil {
		t.Fatal(err)
	}
	el, err := req.Elements[0].MarshalBinaryCompress()
	if err != nil {
		t.Fatal(err)
	}
	return Blinded{finalize: fin, Element: el}
}

// Finish checks resp's proof against its public key and returns the OPRF output.
func (b Blinded) Finish(resp *backupv1.EvaluateResponse) ([]byte, error) {
	pk := new(oprf.PublicKey)
	if err := pk.UnmarshalBinary(clientSuite, resp.GetPublicKey()); err != nil {
		return nil, err
	}
	ev := clientSuite.Group().NewElement()
	if err := ev.UnmarshalBinary(resp.GetEvaluatedElement()); err != nil {
		return nil, err
	}
	proof := new(dleq.Proof)
	if err := proof.UnmarshalBinary(clientSuite.Group(), resp.GetProof()); err != nil {
		return nil, err
	}
	outs, err := oprf.NewVerifiableClient(clientSuite, pk).Finalize(b.finalize, &oprf.Evaluation{Elements: []oprf.Evaluated{ev}, Proof: proof})
	if err != nil {
		return nil, err
	}
	return outs[0], nil
}

// finish is Finish that fails the test on an error.
func (b Blinded) finish(t testing.TB, resp *backupv1.EvaluateResponse) []byte {
	t.Helper()
	out, err := b.Finish(resp)
	if err != nil {
		t.Fatalf("finalize: %v", err)
	}
	return out
}
