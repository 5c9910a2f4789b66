package card

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storecopy/copytest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// A card service on bbolt, its card.db copied into PostgreSQL, and the service started
// again over the copy: the cards, the feed, the service keys and the key transparency
// log are the same, the checkpoint's roots identical, and new changes go on from them.
func TestCopyBoltToPostgres(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "migrate")
	us := e.newUsers(t, a, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	k1, k2 := newKeys(t, e2ee.SuiteX25519), newKeys(t, e2ee.SuiteX25519)
	c1 := e.publish(t, alice, k1, nil, nil)
	e.publish(t, alice, k2, c1.GetCardId(), k1)
	e.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	d1 := e.publish(t, dave, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if _, err := e.client.RevokeCard(dave.ctx(), &cardv1.RevokeCardRequest{CardId: d1.GetCardId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RotateServiceKey(as(testAdmin), &cardv1.RotateServiceKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Second)
	if _, err := e.client.PublishCard(bob.ctx(), e.resetRequest(t, bob, newKeys(t, e2ee.SuiteX25519), e.grant(t, bob, 0))); err != nil {
		t.Fatal(err)
	}
	e.publish(t, carol, newKeys(t, e2ee.SuiteX25519), nil, nil)
	// A log key rotation under way: its second key is in kt_log_keys.
	if _, err := e.client.RotateLogKey(as(testAdmin), &cardv1.RotateLogKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	before := e.publishCheckpoint(t)
	logKeys, err := e.client.GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events, err := e.client.ListCardEvents(asService(testServiceToken), &cardv1.ListCardEventsRequest{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := e.client.GetServiceKey(context.Background(), &cardv1.GetServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	dir, clk := e.dir, e.clock
	e.stop()

	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	res := copytest.Copy(t, BoltCopier(pg), filepath.Join(dir, "card.db"))
	res.Print(testWriter{t})
	for _, kind := range []string{"cards", "active", "history", "events", "events.sequence", "reset_grants", "service_key",
		"kt_log_key", "kt_log_keys", "kt_leaves", "kt_log_tiles", "kt_map_tiles", "kt_map_values", "kt_checkpoints"} {
		if res.Source[kind].Count == 0 {
			t.Errorf("no %s copied", kind)
		}
	}
	pg.Close()

	e2 := newEnv(t, envOptions{dir: dir, clock: clk, postgres: db.URL})
	if after := e2.checkpoint(t); *after != *before {
		t.Fatalf("the checkpoint over the copy is %+v, was %+v", after, before)
	}
	events2, err := e2.client.ListCardEvents(asService(testServiceToken), &cardv1.ListCardEventsRequest{PageSize: 100})
	if err != nil || len(events2.GetEvents()) != len(events.GetEvents()) || events2.GetLatestSequence() != events.GetLatestSequence() {
		t.Fatalf("ListCardEvents over the copy: %d events (latest %d) %v, want %d (%d)", len(events2.GetEvents()), events2.GetLatestSequence(), err,
			len(events.GetEvents()), events.GetLatestSequence())
	}
	if logKeys2, err := e2.client.GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{}); err != nil || logKeys2.String() != logKeys.String() {
		t.Errorf("GetLogKey over the copy: %v %v, want %v", logKeys2, err, logKeys)
	}
	keys2, err := e2.client.GetServiceKey(context.Background(), &cardv1.GetServiceKeyRequest{})
	if err != nil || keys2.String() != keys.String() {
		t.Errorf("GetServiceKey over the copy: %v %v, want %v", keys2, err, keys)
	}
	// A new card: the feed goes on without a gap, the log appends consistently.
	e2.clock.Add(time.Second)
	eve := e2.newUser(t, a, "eve")
	e2.publish(t, eve, newKeys(t, e2ee.SuiteX25519), nil, nil)
	next := e2.publishCheckpoint(t)
	if next.Size != before.Size+1 {
		t.Fatalf("after one more card the log has %d entries, want %d", next.Size, before.Size+1)
	}
	proof, err := e2.client.GetConsistencyProof(context.Background(), &cardv1.GetConsistencyProofRequest{FromSize: before.Size, ToSize: next.Size})
	if err != nil {
		t.Fatal(err)
	}
	if err := kt.VerifyConsistency(before, next, proof.GetProof()); err != nil {
		t.Errorf("the log over the copy is not consistent with the file's: %v", err)
	}
	events3, err := e2.client.ListCardEvents(asService(testServiceToken), &cardv1.ListCardEventsRequest{AfterSequence: events.GetLatestSequence()})
	if err != nil || len(events3.GetEvents()) != 1 || events3.GetEvents()[0].GetSequence() != events.GetLatestSequence()+1 {
		t.Errorf("the event after the copy: %v %v, want sequence %d", events3, err, events.GetLatestSequence()+1)
	}
	// A rotation after the copy chains from the copied key.
	if _, err := e2.client.RotateServiceKey(as(testAdmin), &cardv1.RotateServiceKeyRequest{}); err != nil {
		t.Errorf("a rotation over the copy: %v", err)
	}
}

func TestCopyInterruptedThenRerun(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "migrate")
	for _, u := range e.newUsers(t, a, "alice", "bob") {
		e.publish(t, u, newKeys(t, e2ee.SuiteX25519), nil, nil)
	}
	e.publishCheckpoint(t)
	dir := e.dir
	e.stop()
	path := filepath.Join(dir, "card.db")
	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	copytest.InterruptedThenRerun(t, db, BoltCopier(pg), path, "umbra_card.cards")
	// A tile changed in the copy: the log no longer proves what the file's did.
	db.Exec(t, "UPDATE umbra_card.kt_map_tiles SET tile = tile || '\\x00'::bytea WHERE tile_key = (SELECT tile_key FROM umbra_card.kt_map_tiles ORDER BY 1 LIMIT 1)")
	_, err := BoltCopier(pg).Verify(ctx, path)
	copytest.WantDifferences(t, "verify a changed tile", err, "kt_map_tiles")
	_, err = BoltCopier(pg).Copy(ctx, path)
	copytest.WantDifferences(t, "copy again over a changed tile", err, "kt_map_tiles")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
