package node_test

import (
	"context"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/internal/pgtest"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// TestPostgresGroup: the group service over PostgreSQL, in two processes over one
// database as two replicas, serves its reads from the database, writes nothing in the
// data folder, and follows its database in /readyz: NOT_SERVING while it is down
// (requests fail fast with UNAVAILABLE), SERVING again by itself once it is back.
// (Its writes across replicas are services/group's tests: they need the card service,
// which has no PostgreSQL engine yet.)
func TestPostgresGroup(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	db := c.NewDatabase(t)
	dataDir := t.TempDir()
	start := func() *nodetest.Node { return startOverPostgres(t, db.URL, dataDir, gateway.Identity, gateway.Group) }
	n1, n2 := start(), start()
	app := n1.NewApp(t)
	alice := app.User(t, "alice")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, alice))
	for i, n := range []*nodetest.Node{n1, n2} {
		groups := groupv1.NewGroupServiceClient(n.Conn())
		if resp, err := groups.ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{}); err != nil || len(resp.GetGroups()) != 0 {
			t.Errorf("replica %d: ListMyGroups: %v, %v", i+1, resp, err)
		}
		_, err := groups.GetGroup(ctx, &groupv1.GetGroupRequest{GroupId: app.Group(t, "team")})
		if status.Code(err) != codes.NotFound {
			t.Errorf("replica %d: GetGroup of a missing group: %v, want NOT_FOUND", i+1, err)
		}
		if state, _ := serviceState(t, n, "group"); state != "SERVING" {
			t.Errorf("replica %d: /readyz: group %s with the database up", i+1, state)
		}
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("the data folder holds %d entries (%s...); a store in PostgreSQL writes none", len(entries), entries[0].Name())
	}

	c.Stop()
	waitServiceState(t, n1, "group", "NOT_SERVING")
	began := time.Now()
	_, err := groupv1.NewGroupServiceClient(n1.Conn()).ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{})
	if status.Code(err) != codes.Unavailable {
		// The token may be refused first (the identity store is down too): UNAVAILABLE
		// either way.
		t.Errorf("ListMyGroups with the database down: %v; want UNAVAILABLE", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the failing call took %v", took)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	waitServiceState(t, n1, "group", "SERVING")
	waitServiceState(t, n2, "group", "SERVING")
	if _, err := groupv1.NewGroupServiceClient(n2.Conn()).ListMyGroups(ctx, &groupv1.ListMyGroupsRequest{}); err != nil {
		t.Errorf("ListMyGroups once the database is back: %v", err)
	}
}
