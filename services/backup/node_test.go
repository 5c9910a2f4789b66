package backup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// nodeClient is one identity's view of a whole Umbra started by nodetest.
type nodeClient struct {
	identity string
	ctx      context.Context
	backup   backupv1.BackupServiceClient
	msg      messagingv1.MessagingServiceClient
}

func newNodeClient(t *testing.T, n *nodetest.Node, a *nodetest.App, uid string) nodeClient {
	t.Helper()
	id := a.User(t, uid)
	return nodeClient{
		identity: id,
		ctx:      metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.Token(t, id)),
		backup:   backupv1.NewBackupServiceClient(n.Conn()),
		msg:      messagingv1.NewMessagingServiceClient(n.Conn()),
	}
}

// evaluate runs the client side of one OPRF evaluation with circl and returns the
// response and the auth key a client would derive from the output (the Argon2id and
// HKDF steps stand in for a hash: the service never sees them).
func (c nodeClient) evaluate(t *testing.T, purpose backupv1.EvaluationPurpose, secret string) (*backupv1.EvaluateResponse, []byte, error) {
	t.Helper()
	b := backup.Blind(t, []byte(c.identity+"\x00"+secret))
	resp, err := c.backup.Evaluate(c.ctx, &backupv1.EvaluateRequest{Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, Purpose: purpose, BlindedElement: b.Element})
	if err != nil {
		return nil, nil, err
	}
	out, err := b.Finish(resp)
	if err != nil {
		t.Fatalf("finalize: %v", err)
	}
	key := sha256.Sum256(out)
	return resp, key[:], nil
}

func (c nodeClient) put(t *testing.T, secret string, expected uint64) uint64 {
	t.Helper()
	ev, key, err := c.evaluate(t, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP, secret)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(key)
	resp, err := c.backup.PutBackup(c.ctx, &backupv1.PutBackupRequest{
		Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD,
		Record: &backupv1.BackupRecord{
			Ciphertext: []byte("ciphertext of " + secret + ", tag appended"), Nonce: make([]byte, 12),
			Aead: backupv1.BackupAead_BACKUP_AEAD_AES_256_GCM, AuthKeyHash: h[:],
			Kdf: &backupv1.Argon2IdParams{Time: 1, MemoryKib: 64 << 10, Threads: 4, Salt: make([]byte, 32)},
		},
		ExpectedVersion: expected, OprfKeyVersion: ev.GetOprfKeyVersion(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetBackup().GetVersion()
}

func (c nodeClient) restore(t *testing.T, secret string) (*backupv1.RestoreResponse, error) {
	t.Helper()
	ev, key, err := c.evaluate(t, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE, secret)
	if err != nil {
		return nil, err
	}
	return c.backup.Restore(c.ctx, &backupv1.RestoreRequest{Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, AuthKey: key, ExpectedVersion: ev.GetOprfKeyVersion()})
}

// TestNode: the backup service as `umbra dev` runs it: a backup and its restore, a
// change of password, another identity that sees nothing, and wrong passwords until
// the slot is erased, which the owner hears of in its messaging stream.
func TestNode(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	a := n.NewApp(t)
	alice, bob := newNodeClient(t, n, a, "alice"), newNodeClient(t, n, a, "bob")

	if v := alice.put(t, "first password", 0); v != 1 {
		t.Fatalf("version %d", v)
	}
	resp, err := alice.restore(t, "first password")
	if err != nil || !bytes.Equal(resp.GetCiphertext(), []byte("ciphertext of first password, tag appended")) {
		t.Fatalf("restore: %v, %v", resp, err)
	}
	if v := alice.put(t, "second password", resp.GetVersion()); v != 2 {
		t.Fatalf("version %d after the change of password", v)
	}

	infos, err := bob.backup.GetBackupInfo(bob.ctx, &backupv1.GetBackupInfoRequest{})
	if err != nil || len(infos.GetBackups()) != 0 {
		t.Fatalf("bob sees %v, %v", infos, err)
	}
	if _, err := bob.restore(t, "second password"); status.Code(err) != codes.NotFound {
		t.Fatalf("bob's restore: %v", err)
	}

	in := servicetest.SubscribeFromStart(t, alice.ctx, alice.msg, 16)
	spendAllAttempts(t, alice)
	ev := in.Next(t, 15*time.Second).GetEvent()
	var be backupv1.BackupEvent
	if ev.GetType() != "umbra.backup.v1.BackupEvent" || proto.Unmarshal(ev.GetPayload(), &be) != nil {
		t.Fatalf("event %v", ev)
	}
	if be.GetKind() != backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED || be.GetVersion() != 2 || be.GetSlot() != backupv1.BackupSlot_BACKUP_SLOT_PASSWORD {
		t.Fatalf("backup event %v", &be)
	}
	if _, err := alice.restore(t, "second password"); status.Code(err) != codes.NotFound {
		t.Fatalf("restore after the erasure: %v", err)
	}
}

// spendAllAttempts guesses wrong passwords until the slot is erased, through each of
// via in turn (the replicas of one identity's view), and checks that each guess says
// how many attempts remain and the last that the backup was erased.
func spendAllAttempts(t *testing.T, via ...nodeClient) {
	t.Helper()
	for left := backup.DefaultMaxAttempts - 1; left >= 0; left-- {
		_, err := via[left%len(via)].restore(t, fmt.Sprintf("guess %d", left))
		want := fmt.Sprintf("%d attempt", left)
		if left == 0 {
			want = "was erased"
		}
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), want) {
			t.Fatalf("wrong password with %d left, through %d of %d: %v; want PERMISSION_DENIED saying %q", left, left%len(via), len(via), err, want)
		}
	}
}

// TestNodeRefusesBadSecret: a process that hosts the backup role refuses to start
// without a server secret of at least 32 bytes, and says so.
func TestNodeRefusesBadSecret(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, secret, msg string
	}{
		{"missing", "", "no server secret"},
		{"short", "0123456789", "the server secret is 10 bytes; at least 32 are required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := node.Run(ctx, node.Config{
				Roles:           gateway.Services(),
				DataDir:         t.TempDir(),
				GRPC:            grpcserver.Config{Addr: "127.0.0.1:0"},
				AdminCredential: nodetest.Admin,
				ServiceToken:    nodetest.ServiceToken,
				Backup:          backup.Config{Secret: []byte(tc.secret)},
				Ready: func(context.Context, node.Addrs) error {
					return fmt.Errorf("the node started")
				},
			}, zaptest.NewLogger(t))
			if err == nil || !strings.Contains(err.Error(), "start backup") || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v; want a refusal with %q", err, tc.msg)
			}
		})
	}
}

// TestNodeREST: the backup flow through the REST gateway, and a failed restore's
// attempt count in the HTTP error's details.
func TestNodeREST(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	a := n.NewApp(t)
	alice := a.User(t, "alice")
	token := a.Token(t, alice)
	call := func(method, path string, req proto.Message, resp proto.Message) (int, []byte) {
		t.Helper()
		var body []byte
		if req != nil {
			var err error
			if body, err = protojson.Marshal(req); err != nil {
				t.Fatal(err)
			}
		}
		code, out := n.REST(t, method, path, token, string(body))
		if code == http.StatusOK && resp != nil {
			if err := protojson.Unmarshal(out, resp); err != nil {
				t.Fatalf("%s %s: %v in %s", method, path, err, out)
			}
		}
		return code, out
	}
	// evaluate runs one evaluation over REST and returns the auth key.
	evaluate := func(purpose backupv1.EvaluationPurpose, secret string) (*backupv1.EvaluateResponse, []byte) {
		t.Helper()
		b := backup.Blind(t, []byte(secret))
		resp := &backupv1.EvaluateResponse{}
		if code, body := call(http.MethodPost, "/v1/backups:evaluate", &backupv1.EvaluateRequest{Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, Purpose: purpose, BlindedElement: b.Element}, resp); code != http.StatusOK {
			t.Fatalf("evaluate: %d %s", code, body)
		}
		out, err := b.Finish(resp)
		if err != nil {
			t.Fatalf("evaluate response %v: %v", resp, err)
		}
		key := sha256.Sum256(out)
		return resp, key[:]
	}

	ev, key := evaluate(backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP, "pw")
	h := sha256.Sum256(key)
	put := &backupv1.PutBackupResponse{}
	code, body := call(http.MethodPost, "/v1/backups", &backupv1.PutBackupRequest{
		Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD,
		Record: &backupv1.BackupRecord{
			Ciphertext: []byte("a sealed key bundle, tag appended"), Nonce: make([]byte, 12),
			Aead: backupv1.BackupAead_BACKUP_AEAD_CHACHA20_POLY1305, AuthKeyHash: h[:],
			Kdf: &backupv1.Argon2IdParams{Time: 2, MemoryKib: 19 << 10, Threads: 1, Salt: make([]byte, 16)},
		},
		OprfKeyVersion: ev.GetOprfKeyVersion(),
	}, put)
	if code != http.StatusOK || put.GetBackup().GetVersion() != 1 {
		t.Fatalf("put: %d %s", code, body)
	}
	info := &backupv1.GetBackupInfoResponse{}
	if code, body := call(http.MethodGet, "/v1/backups", nil, info); code != http.StatusOK || len(info.GetBackups()) != 1 || info.GetBackups()[0].GetMaxAttempts() != backup.DefaultMaxAttempts {
		t.Fatalf("info: %d %s", code, body)
	}

	ev, _ = evaluate(backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE, "wrong")
	code, body = call(http.MethodPost, "/v1/backups:restore", &backupv1.RestoreRequest{Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, AuthKey: make([]byte, 32), ExpectedVersion: ev.GetOprfKeyVersion()}, nil)
	var failure struct {
		Message string `json:"message"`
		Details []struct {
			Type      string `json:"@type"`
			Remaining int    `json:"remainingAttempts"`
		} `json:"details"`
	}
	if err := json.Unmarshal(body, &failure); err != nil {
		t.Fatalf("%d %s: %v", code, body, err)
	}
	if code != http.StatusForbidden || !strings.Contains(failure.Message, "9 attempts remain") || len(failure.Details) != 1 ||
		failure.Details[0].Type != "type.googleapis.com/umbra.backup.v1.RestoreFailure" || failure.Details[0].Remaining != 9 {
		t.Fatalf("wrong auth key over REST: %d %s", code, body)
	}

	ev, key = evaluate(backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE, "pw")
	restored := &backupv1.RestoreResponse{}
	code, body = call(http.MethodPost, "/v1/backups:restore", &backupv1.RestoreRequest{Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, AuthKey: key, ExpectedVersion: ev.GetOprfKeyVersion()}, restored)
	if code != http.StatusOK || string(restored.GetCiphertext()) != "a sealed key bundle, tag appended" {
		t.Fatalf("restore: %d %s", code, body)
	}
	if code, body := call(http.MethodDelete, "/v1/backups?slot=BACKUP_SLOT_PASSWORD&expectedVersion=1", nil, nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, body := call(http.MethodGet, "/v1/backups", nil, info); code != http.StatusOK || len(info.GetBackups()) != 0 {
		t.Fatalf("info after delete: %d %s", code, body)
	}
}
