package identity

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storecopy/copytest"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

// fillBolt writes every record kind of identity.db through the Store, closes it and
// returns its path.
func fillBolt(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "identity.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, app := range []string{"app_b", "app_a"} {
		must(s.CreateApp(&identitystoragev1.AppRecord{AppId: app, DisplayName: app, CreatedAt: timestamppb.New(t0), IdentitySecret: []byte("s-" + app)},
			&identitystoragev1.AppKeyRecord{KeyId: "k1-" + app, AppId: app, SecretHash: []byte("h")}))
	}
	must(s.AddAppKey(&identitystoragev1.AppKeyRecord{KeyId: "k2-app_a", AppId: "app_a", SecretHash: []byte("h2")}))
	_, err = s.RevokeAppKey("app_a", "k1-app_a", t0.Add(time.Minute))
	must(err)
	_, err = s.AddSigningKey(&identitystoragev1.SigningKeyRecord{KeyId: "sk1", CreatedAt: timestamppb.New(t0), Seed: []byte("p1")}, t0, true)
	must(err)
	_, err = s.AddSigningKey(&identitystoragev1.SigningKeyRecord{KeyId: "sk2", CreatedAt: timestamppb.New(t0.Add(time.Hour)), Seed: []byte("p2")}, t0.Add(48*time.Hour), false)
	must(err)
	for i, id := range []string{"u_1", "u_2", "u_1", "u_3"} { // u_1 twice: the log has a gap where its first was
		_, err = s.Revoke("app_a", id, t0.Add(time.Duration(i+1)*time.Second))
		must(err)
	}
	return path
}

// openTarget opens an empty PostgreSQL store, migrated as serve migrates it.
func openTarget(t *testing.T) (*PostgresStore, *pgtest.Database) {
	db := pgtest.NewDatabase(t)
	return openPostgres(t, db.URL), db
}

func TestCopyBoltToPostgres(t *testing.T) {
	ctx := context.Background()
	path := fillBolt(t)
	pg, db := openTarget(t)
	res := copytest.Copy(t, BoltCopier(pg), path)
	want := map[string]int{"apps": 2, "app_keys": 3, "app_keys_by_app": 3, "signing_keys": 2, "revocations": 3, "revocation_log": 3, "revocation_log.sequence": 1}
	if got := copytest.Kinds(res); fmt.Sprint(got) != fmt.Sprint(want) || res.AlreadyCopied {
		t.Fatalf("copied %v (already %v), want %v", got, res.AlreadyCopied, want)
	}

	// The copy behaves as the file did.
	src, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"app_a", "app_b"} {
		a1, k1, err1 := src.App(app)
		a2, k2, err2 := pg.App(app)
		if err1 != nil || err2 != nil || !proto.Equal(a1, a2) || len(k1) != len(k2) {
			t.Fatalf("App(%s): %v %v / %v %v", app, a1, err1, a2, err2)
		}
		for i := range k1 {
			if !proto.Equal(k1[i], k2[i]) {
				t.Errorf("App(%s) key %d: %v, want %v", app, i, k2[i], k1[i])
			}
		}
	}
	r1, l1, _ := src.Revocations(0, 100)
	r2, l2, err := pg.Revocations(0, 100)
	if err != nil || l1 != l2 || len(r1) != len(r2) {
		t.Fatalf("Revocations: %v %d %v, want %v %d", r2, l2, err, r1, l1)
	}
	s1, _ := src.SigningKeys()
	s2, _ := pg.SigningKeys()
	if len(s1) != len(s2) || !proto.Equal(s1[1], s2[1]) {
		t.Errorf("SigningKeys: %v, want %v", s2, s1)
	}
	src.Close()
	// The feed goes on from the file's latest sequence, without a gap.
	rec, err := pg.Revoke("app_a", "u_9", t0.Add(time.Hour))
	if err != nil || rec.GetSequence() != l1+1 {
		t.Fatalf("a revocation after the copy has sequence %d (%v), want %d", rec.GetSequence(), err, l1+1)
	}

	// Run again: the schema no longer holds an exact copy (a revocation was added).
	_, err = BoltCopier(pg).Copy(ctx, path)
	if err == nil || !strings.Contains(err.Error(), "revocations:") || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("a copy over a schema that changed since: %v", err)
	}
	db.Exec(t, "DELETE FROM umbra_identity.revocations WHERE identity = 'u_9'")
	db.Exec(t, "UPDATE umbra_identity.revocation_sequence SET last = $1", int64(l1))
	res, err = BoltCopier(pg).Copy(ctx, path)
	if err != nil || !res.AlreadyCopied {
		t.Errorf("a copy run again after it completed: %v, already %v", err, res.AlreadyCopied)
	}
}

func TestCopyInterruptedThenRerun(t *testing.T) {
	path := fillBolt(t)
	pg, db := openTarget(t)
	copytest.InterruptedThenRerun(t, db, BoltCopier(pg), path, "umbra_identity.apps")
	if _, err := BoltCopier(pg).Verify(context.Background(), path); err != nil {
		t.Fatal(err)
	}
}

func TestCopyRefusesATargetWithOtherData(t *testing.T) {
	ctx := context.Background()
	path := fillBolt(t)
	for _, tc := range []struct {
		name, kind string
		change     func(t *testing.T, pg *PostgresStore, db *pgtest.Database)
	}{
		{"a service started on it", "signing_keys", func(t *testing.T, pg *PostgresStore, _ *pgtest.Database) {
			if _, err := pg.AddSigningKey(&identitystoragev1.SigningKeyRecord{KeyId: "other", CreatedAt: timestamppb.New(t0)}, t0, true); err != nil {
				t.Fatal(err)
			}
		}},
		{"a record changed after the copy", "apps", func(t *testing.T, pg *PostgresStore, db *pgtest.Database) {
			if _, err := BoltCopier(pg).Copy(ctx, path); err != nil {
				t.Fatal(err)
			}
			db.Exec(t, "UPDATE umbra_identity.apps SET record = record || '\\x00'::bytea WHERE app_id = 'app_b'")
		}},
		{"a counter changed after the copy", "revocation_log.sequence", func(t *testing.T, pg *PostgresStore, db *pgtest.Database) {
			if _, err := BoltCopier(pg).Copy(ctx, path); err != nil {
				t.Fatal(err)
			}
			db.Exec(t, "UPDATE umbra_identity.revocation_sequence SET last = last + 1")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pg, db := openTarget(t)
			tc.change(t, pg, db)
			_, err := BoltCopier(pg).Copy(ctx, path)
			copytest.WantDifferences(t, "copy", err, tc.kind)
			_, err = BoltCopier(pg).Verify(ctx, path)
			copytest.WantDifferences(t, "verify", err, tc.kind)
		})
	}
}

func TestCopyRefusesAFileInUse(t *testing.T) {
	path := fillBolt(t)
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pg, _ := openTarget(t)
	if _, err := BoltCopier(pg).Copy(context.Background(), path); !errors.Is(err, boltdb.ErrLocked) {
		t.Errorf("copy of a file a service holds: %v, want ErrLocked", err)
	}
}

// A copier that writes something else than it read is caught by the verification, and
// rolls back.
func TestCopyVerifiesWhatItWrote(t *testing.T) {
	path := fillBolt(t)
	pg, db := openTarget(t)
	bad := pgdb.Copy{Kinds: slices.Clone(postgresCopy.Kinds)}
	for i, k := range bad.Kinds {
		if k.Name == "app_keys" {
			load := k.Load
			bad.Kinds[i].Load = func(b *pgx.Batch, key, value []byte) error {
				return load(b, key, protowire.AppendVarint(protowire.AppendTag(value, 99, protowire.VarintType), 1))
			}
		}
	}
	_, err := pg.db.CopyIn(context.Background(), bad, boltSource(path))
	if err == nil || !strings.Contains(err.Error(), "does not verify") || !strings.Contains(err.Error(), "\n  app_keys:") {
		t.Fatalf("a copy that wrote other bytes: %v", err)
	}
	if got := pgtest.Query[int64](t, db, "SELECT count(*) FROM umbra_identity.apps"); got[0] != 0 {
		t.Errorf("%d apps left behind by a copy that did not verify", got[0])
	}
}

// A copy whose process dies half way (its context canceled, its connection closed)
// leaves nothing: PostgreSQL rolls the transaction back.
func TestCopyCanceledHalfWay(t *testing.T) {
	path := fillBolt(t)
	pg, db := openTarget(t)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	src := func(fn func(kind string, key, value []byte) error) error {
		return boltSource(path)(func(kind string, key, value []byte) error {
			if n++; n == 8 {
				cancel()
				time.Sleep(50 * time.Millisecond)
			}
			return fn(kind, key, value)
		})
	}
	if _, err := pg.db.CopyIn(ctx, postgresCopy, src); err == nil {
		t.Fatal("a canceled copy succeeded")
	}
	if got := pgtest.Query[int64](t, db, "SELECT count(*) FROM umbra_identity.apps"); got[0] != 0 {
		t.Fatalf("%d apps left by a canceled copy", got[0])
	}
	if _, err := BoltCopier(pg).Copy(context.Background(), path); err != nil {
		t.Fatal(err)
	}
}
