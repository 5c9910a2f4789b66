package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

// TestBenchMessagingPostgres runs `umbra bench messaging --store postgres://…` (the
// connection string in UMBRA_STORE) for one second with one messaging replica and with
// two, against a throwaway PostgreSQL: each round starts its processes, sends and
// delivers, and reports its rate next to the raw PostgreSQL baseline of the same run,
// with the CPU time per message of the processes; the raw baseline's table is dropped.
func TestBenchMessagingPostgres(t *testing.T) {
	bin := e2eBinary(t)
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "messaging", "--senders", "4", "--subscribers", "4",
		"--duration", "1s", "--warmup", "500ms", "--replicas", "1,2")
	cmd.Env = append(e2eEnv(os.Environ()), "UMBRA_STORE="+db.URL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("umbra bench messaging --store: %v\n%s", err, out.String())
	}
	got := out.String()
	rounds := strings.Split(got, "messaging replica")
	if len(rounds) != 3 {
		t.Fatalf("want two rounds (1 and 2 messaging replicas):\n%s", got)
	}
	for i, round := range rounds[1:] {
		for _, want := range []string{
			`sent \(durable acks\) +[1-9][0-9]* msgs/s`,
			`delivered +[1-9][0-9]* msgs/s`,
			`Umbra CPU +[0-9]+ µs/msg`,
			`PostgreSQL CPU +[0-9]+ µs/msg`,
			`raw PostgreSQL +[1-9][0-9]* writes/s .*synchronous_commit on`,
			`sent / raw +[0-9.]+ %`,
		} {
			if !regexp.MustCompile(want).MatchString(round) {
				t.Errorf("round %d: no line matching %q in:\n%s", i+1, want, round)
			}
		}
	}
	if !strings.Contains(got, "fsync on, synchronous_commit on") {
		t.Errorf("the database's durability settings are not reported:\n%s", got)
	}
	if n := pgtest.Query[int64](t, db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'umbra_bench'"); n[0] != 0 {
		t.Errorf("%d raw baseline tables left behind", n[0])
	}
}

// TestBenchReplicasFlag: --replicas takes a list of counts from 1 to 8, and anything
// else is a usage error that names the flag.
func TestBenchReplicasFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"1,2", []int{1, 2}},
		{" 3 ", []int{3}},
		{"0", nil},
		{"9", nil},
		{"1,x", nil},
		{"", nil},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseReplicas(tc.in)
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), "--replicas") {
					t.Errorf("parseReplicas(%q) = %v, %v; want an error naming --replicas", tc.in, got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("parseReplicas(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}
