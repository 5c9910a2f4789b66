package group

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// postgresSuite runs the service's tests of behaviour again over the PostgreSQL
// engine: every env a test of it builds keeps the group service's state in a database
// of its own (overPostgres).
const postgresSuite = "TestServiceOverPostgres"

// TestServiceOverPostgres runs the service's tests of behaviour through real gRPC over
// the PostgreSQL engine, as they run over bbolt: the rules, their refusals (and that
// a refused request writes nothing), events, the sweeper and the card follower.
func TestServiceOverPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"Epochs", TestEpochs},
		{"ConcurrentCommits", TestConcurrentCommits},
		{"CardRotation", TestCardRotation},
		{"OutboxRetries", TestOutboxRetries},
		{"Membership", TestMembership},
		{"JoinRequests", TestJoinRequests},
		{"Invitations", TestInvitations},
		{"InternalMethods", TestInternalMethods},
		{"BadInput", TestBadInput},
		{"EncryptionModes", TestEncryptionModes},
		{"RotationPolicy", TestRotationPolicy},
		{"HistoryVisibility", TestHistoryVisibility},
		{"AuthorizeSendCountsEveryMessage", TestAuthorizeSendCountsEveryMessage},
		{"StagedCommit", TestStagedCommit},
		{"ShareEpochKeys", TestShareEpochKeys},
		{"BadStatementsAreRefusedAndWriteNothing", TestBadStatementsAreRefusedAndWriteNothing},
		{"MembershipChain", TestMembershipChain},
	} {
		t.Run(tc.name, tc.test)
	}
}

// overPostgres reports whether t is one of TestServiceOverPostgres's.
func overPostgres(t testing.TB) bool { return strings.HasPrefix(t.Name(), postgresSuite+"/") }

// pgTableBuckets name the tables as the bbolt engine's buckets, for the tests that
// look for a bucket's keys in a snapshot.
var pgTableBuckets = map[string]string{"outbox": "group_outbox", "statements": "membership", "card_cursor": "group_state"}

// pgSnapshot returns every row of the group service's tables but the bookkeeping ones
// (goose's versions, the outbox's claim), as "table/columns" -> record. The card
// cursor's row is left out while it is 0, as group.db has no cursor until the follower
// sets one.
func pgSnapshot(t testing.TB, s *PostgresStore) map[string]string {
	t.Helper()
	out := map[string]string{}
	ctx := context.Background()
	tables := pgtest.QueryWith[string](t, ctx, s.db.Pool, "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename NOT IN ('goose_db_version', 'outbox_claim')", Schema)
	for _, table := range tables {
		rows, err := s.db.Pool.Query(ctx, "SELECT * FROM "+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			var key []string
			var value string
			for i, f := range rows.FieldDescriptions() {
				if f.Name == "record" {
					value = fmt.Sprintf("%x", vals[i])
					continue
				}
				key = append(key, fmt.Sprint(vals[i]))
			}
			if table == "card_cursor" && fmt.Sprint(vals[len(vals)-1]) == "0" {
				continue
			}
			bucket := table
			if b, ok := pgTableBuckets[table]; ok {
				bucket = b
			}
			out[bucket+"/"+strings.Join(key, "/")] = value
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// BenchmarkAuthorizeSendPostgres is BenchmarkAuthorizeSend over the PostgreSQL engine:
// every message counted in the group's row, in batched transactions, by one replica
// or by two over one database (the callers split between them, so the two contend
// for the group's lock).
func BenchmarkAuthorizeSendPostgres(b *testing.B) {
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			e := newEnv(b, envOptions{noLoops: true, quiet: true, cfg: unlimitedCalls, postgres: true})
			clients := []groupv1.GroupServiceClient{e.client}
			if replicas == 2 {
				clients = append(clients, e.replica(b).client)
			}
			group, us := sendersGroup(b, e)
			var caller atomic.Int64
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := clients[int(caller.Add(1))%len(clients)]
				i := 0
				for pb.Next() {
					i++
					u := us[i%len(us)]
					_, err := c.AuthorizeSend(asService(), &groupv1.AuthorizeSendRequest{
						AppId: u.app.id, GroupId: group, Sender: u.identity,
						Kind: groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED, Epoch: 1, SenderCardId: u.cardID,
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
