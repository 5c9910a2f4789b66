package group

import (
	"fmt"
	"os"
	"testing"

	"google.golang.org/grpc/codes"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// fastDir is a data folder in memory when the machine has one (/dev/shm), so that the
// setup of a 10,000-member group (10,000 card publications, each an fsync) does not
// dominate; the measured commits are then bbolt without the disk, and the same code
// path. Elsewhere it is t.TempDir().
func fastDir(tb testing.TB) string {
	tb.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "umbra-group-")
		if err == nil {
			tb.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return tb.TempDir()
}

// bigGroup makes a group of n members, each with a card, and returns them, the owner
// first.
func bigGroup(tb testing.TB, e *env, n int) (string, []*user) {
	tb.Helper()
	a := e.newApp(tb)
	uids := make([]string, n)
	for i := range uids {
		uids[i] = fmt.Sprintf("member-%05d", i)
	}
	us := e.newUsers(tb, a, true, uids...)
	group := e.groupID(tb, a, "big")
	e.create(tb, us[0], group, us[1:min(n, MaxInitialMembers+1)]...)
	for start := MaxInitialMembers + 1; start < n; start += MaxAddMembers {
		if _, err := e.client.AddMembers(us[0].ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(us[start:min(start+MaxAddMembers, n)]...)}); err != nil {
			tb.Fatal(err)
		}
	}
	return group, us
}

// TestCommit10000Members: a commit for a group at the default member limit, staged in
// chunks of 500, is accepted, and every member gets its key.
func TestCommit10000Members(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("sets up 10,000 members with cards; skipped with -short")
	}
	e := newEnv(t, envOptions{noLoops: true, quiet: true, dir: fastDir(t)})
	group, us := bigGroup(t, e, DefaultMaxMembers)
	resp, err := e.stagedCommit(t, group, us[1], us, MaxKeysPerRequest)
	if err != nil || resp.GetCommit().GetEpoch() != 1 || resp.GetGroup().GetMemberCount() != DefaultMaxMembers {
		t.Fatalf("commit: %v, %v", resp, err)
	}
	for _, u := range []*user{us[0], us[5000], us[9999]} {
		if ks, err := e.keyEpochs(u, group); err != nil || len(ks) != 1 || ks[0] != 1 {
			t.Errorf("%s's keys: %v, %v", u.identity, ks, err)
		}
	}
	// One member more is refused.
	extra := e.newUsers(t, us[0].app, false, "one too many")
	_, err = e.client.AddMembers(us[0].ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(extra...)})
	wantCode(t, err, codes.FailedPrecondition, "at most 10000")
}

// unlimitedCalls lifts the per-identity call limit, which a benchmark's loop would hit.
var unlimitedCalls = Config{CallRate: 1e9, CallBurst: 1 << 30}

// BenchmarkCommit10000 measures a commit for 10,000 members: 20 StageEpochKeys chunks
// of 500 keys and the CommitEpoch, over gRPC, with the card service's lookup of the
// 10,000 active cards. One op is one epoch.
func BenchmarkCommit10000(b *testing.B) {
	e := newEnv(b, envOptions{noLoops: true, quiet: true, dir: fastDir(b), cfg: unlimitedCalls})
	group, us := bigGroup(b, e, DefaultMaxMembers)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.stagedCommit(b, group, us[i%len(us)], us, MaxKeysPerRequest); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthorizeSend measures AuthorizeSend of ENCRYPTED messages at the current
// epoch (each counted, in a batched write) from 16 callers per CPU at once, as a
// messaging service with many senders would call it, over gRPC.
func BenchmarkAuthorizeSend(b *testing.B) {
	e := newEnv(b, envOptions{noLoops: true, quiet: true, cfg: unlimitedCalls})
	group, us := sendersGroup(b, e)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := e.authorize(us[i%len(us)], group, 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// sendersGroup makes the group "bench" of eight members with cards, encrypted, with
// no rotation policy, and commits its first epoch: the group whose senders the
// AuthorizeSend benchmarks authorize.
func sendersGroup(b *testing.B, e *env) (string, []*user) {
	b.Helper()
	a := e.newApp(b)
	us := e.newUsers(b, a, true, "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7")
	group := e.groupID(b, a, "bench")
	if _, err := e.client.CreateGroup(us[0].ctx(), &groupv1.CreateGroupRequest{GroupId: group, Members: identities(us[1:]...),
		EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN,
		RotationPolicy: &groupv1.RotationPolicy{}}); err != nil {
		b.Fatal(err)
	}
	e.commit(b, group, us[0], us...)
	return group, us
}
