package ktaudit

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/internal/ktlog/ktlogtest"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

func dial(t *testing.T, v *ktlogtest.View) ktlog.Log {
	t.Helper()
	l, err := ktlog.Dial(ktlog.Config{Addr: v.Listen(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// rotation is alice's endorsed rotation to card c.
func rotation(t *testing.T, c, previous byte) []byte {
	t.Helper()
	key := kt.MapKey("app_test", "u_alice")
	b, err := kt.EncodeLeaf(&ktv1.LogLeaf{Version: kt.Version, MapKey: key[:], Kind: ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION,
		CardId: bytes.Repeat([]byte{c}, kt.HashSize), PreviousCardId: bytes.Repeat([]byte{previous}, kt.HashSize), OccurredAtUnixNanos: 99})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAuditHonestLog(t *testing.T) {
	log := ktlogtest.New(t)
	v := log.NewView()
	first := v.Append(t, ktlogtest.Publications(t, 0, 3)...)
	second := v.Append(t, ktlogtest.Publications(t, 3, 40)...)
	v.Append(t, ktlogtest.Publications(t, 43, 25)...)
	var pages int
	res, err := Audit(context.Background(), dial(t, v), Config{
		LogKeys:     []string{log.VerifierKey()},
		Checkpoints: []Source{{"second.txt", second}, {"first.txt", first}},
		PageSize:    7,
		Progress:    func(done, total uint64) { pages++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 68 || len(res.Checked) != 3 || res.Checked[0].Size != 3 || res.Checked[1].Size != 43 || res.Checked[2].Source != "the log's latest" {
		t.Fatalf("result %+v", res)
	}
	if pages < 68/7 {
		t.Errorf("%d pages of at most 7 entries for 68 entries", pages)
	}
}

// TestAuditCatchesAMapThatDisagreesWithTheLog: a card appended to the log but not
// applied to the map (a map that hides alice's newer card): every proof against that
// checkpoint verifies, and only replaying the log shows the map is not the log's.
func TestAuditCatchesAMapThatDisagreesWithTheLog(t *testing.T) {
	log := ktlogtest.New(t)
	v := log.NewView()
	leaves := append(ktlogtest.Publications(t, 0, 5), ktlogtest.Leaf(t, "app_test", "u_alice", ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 0xa1, 50))
	v.Append(t, leaves...)
	honest := v.Checkpoint(t)
	// The log gets alice's rotation; the map the server signs does not.
	v.Append(t, rotation(t, 0xa2, 0xa1))
	withRotation := v.Checkpoint(t)
	hiding := *withRotation
	hiding.MapRoot = honest.MapRoot
	v.Serve(log.Sign(t, &hiding))
	_, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{log.VerifierKey()}})
	var m *MismatchError
	if !errors.As(err, &m) || !errors.Is(err, ErrMismatch) || m.What != "map root" || m.Size != 7 || m.Checkpoint != honest.MapRoot || m.Recomputed != withRotation.MapRoot {
		t.Fatalf("Audit = %v; want a map root mismatch at 7 entries", err)
	}
	if !strings.Contains(err.Error(), "hides or invents a card event") {
		t.Errorf("the message does not say what the mismatch means: %v", err)
	}
}

// TestAuditCatchesACheckpointThatIsNotItsEntries: a checkpoint whose log root is not
// the root of the entries the log serves (a split view's checkpoint, or a rewritten
// log), whether the log serves it as its latest or a witness's state holds it.
func TestAuditCatchesACheckpointThatIsNotItsEntries(t *testing.T) {
	log := ktlogtest.New(t)
	v := log.NewView()
	v.Append(t, ktlogtest.Publications(t, 0, 4)...)
	split := v.Fork(t)
	v.Append(t, ktlogtest.Publications(t, 4, 3)...)
	other := split.Append(t, ktlogtest.Publications(t, 40, 3)...) // 7 entries, other cards

	t.Run("given", func(t *testing.T) {
		_, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{log.VerifierKey()}, Checkpoints: []Source{{"witness state.json", other}}})
		var m *MismatchError
		if !errors.As(err, &m) || m.What != "log root" || m.Size != 7 || m.Source != "witness state.json" {
			t.Fatalf("Audit = %v; want a log root mismatch of the given checkpoint", err)
		}
	})
	t.Run("latest", func(t *testing.T) {
		// The log serves its entries with the other view's checkpoint as its latest.
		liar := v.Fork(t)
		liar.Serve(other)
		_, err := Audit(context.Background(), dial(t, liar), Config{LogKeys: []string{log.VerifierKey()}})
		var m *MismatchError
		if !errors.As(err, &m) || m.What != "log root" || m.Source != "the log's latest" {
			t.Fatalf("Audit = %v; want a log root mismatch of the latest", err)
		}
	})
	t.Run("newer than the log", func(t *testing.T) {
		bigger := v.Fork(t)
		big := bigger.Append(t, ktlogtest.Publications(t, 7, 2)...)
		_, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{log.VerifierKey()}, Checkpoints: []Source{{"old.txt", big}}})
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "went back") {
			t.Fatalf("Audit = %v; want the log going back", err)
		}
	})
	t.Run("not signed by the log key", func(t *testing.T) {
		stranger, _ := kt.NewLogSigner(ktlogtest.Origin, bytes.Repeat([]byte{3}, 32))
		forged, _ := kt.SignCheckpoint(v.Checkpoint(t), stranger)
		if _, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{log.VerifierKey()}, Checkpoints: []Source{{"forged.txt", forged}}}); !errors.Is(err, kt.ErrUnknownLogKey) {
			t.Fatalf("Audit = %v; want ErrUnknownLogKey", err)
		}
		if _, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{stranger.VerifierKey()}}); !errors.Is(err, kt.ErrUnknownLogKey) {
			t.Fatalf("Audit with another key = %v; want ErrUnknownLogKey", err)
		}
	})
}

// TestAuditAcrossALogKeyRotation: with the old and the new log key, the auditor checks
// checkpoints signed before, during and after a rotation against one replay; with one
// key only, what the other alone signed is refused (ErrUnknownLogKey); a checkpoint of
// the new key whose entries are not the log's is still a mismatch.
func TestAuditAcrossALogKeyRotation(t *testing.T) {
	log := ktlogtest.New(t)
	v := log.NewView()
	before := v.Append(t, ktlogtest.Publications(t, 0, 3)...)
	oldKey := log.VerifierKey()
	newKey := log.Rotate(t).VerifierKey()
	during := v.Append(t, ktlogtest.Publications(t, 3, 4)...)
	log.Retire()
	split := v.Fork(t)
	v.Append(t, ktlogtest.Publications(t, 7, 2)...)
	other := split.Append(t, ktlogtest.Publications(t, 70, 2)...) // 9 entries, signed by the new key, other cards

	files := []Source{{"before.txt", before}, {"during.txt", during}}
	res, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{oldKey, newKey}, Checkpoints: files})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Checked) != 3 || res.Checked[0].Size != 3 || res.Checked[1].Size != 7 || res.Checked[2].Size != 9 {
		t.Fatalf("result %+v; want the checkpoints of 3, 7 and 9 entries checked", res)
	}
	if _, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{newKey}, Checkpoints: files}); !errors.Is(err, kt.ErrUnknownLogKey) || !strings.Contains(err.Error(), "before.txt") {
		t.Errorf("the new key only, with a checkpoint the old key alone signed: %v; want ErrUnknownLogKey for before.txt", err)
	}
	if _, err := Audit(context.Background(), dial(t, v), Config{LogKeys: []string{oldKey}}); !errors.Is(err, kt.ErrUnknownLogKey) {
		t.Errorf("the old key only, after its retirement: %v; want ErrUnknownLogKey", err)
	}
	_, err = Audit(context.Background(), dial(t, v), Config{LogKeys: []string{oldKey, newKey}, Checkpoints: append(files, Source{"rewritten.txt", other})})
	var m *MismatchError
	if !errors.As(err, &m) || m.Source != "rewritten.txt" {
		t.Errorf("a checkpoint of the new key over other entries: %v; want a mismatch of rewritten.txt", err)
	}
}
