package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

// TestHAOverlayAsProcesses runs one pod of every workload of the HA overlay as a process
// on loopback, as TestDevOverlayAsProcesses does for the dev overlay, over a real
// PostgreSQL made as the overlay's CloudNativePG Cluster makes it: its database and
// owner, its bootstrap SQL (a role and a schema per service), its managed roles with a
// password each; and each service's Secret umbra-<service>-db holding the connection
// string docs/operations.md has the operator make. So the roles' rights are proven
// enough for every service to migrate its schema and run (the messaging service making
// its partitions too), and not more: no service reaches another's schema.
func TestHAOverlayAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds umbra, starts PostgreSQL and runs six processes")
	}
	bins := buildBinaries(t)
	m := render(t, haOverlay)
	docs := readFile(t, "../docs/operations.md")
	if len(m.clusters) != 1 {
		t.Fatalf("%d CloudNativePG Clusters in the HA overlay; want one", len(m.clusters))
	}
	spec := m.clusters[sortedKeys(m.clusters)[0]].Spec
	init := spec.Bootstrap.InitDB
	if init == nil || spec.Managed == nil {
		t.Fatal("the Cluster has no initdb bootstrap or no managed roles")
	}
	db := pgtest.NewCluster(t, pgtest.Options{})
	exec := func(database, sql string) {
		t.Helper()
		if err := db.Exec(database, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// What the operator does at bootstrap: the owner, the database, then the
	// application SQL as a superuser in the new database.
	exec("postgres", "CREATE ROLE "+init.Owner+" LOGIN")
	exec("postgres", fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0", init.Database, init.Owner))
	for _, sql := range init.PostInitApplicationSQL {
		exec(init.Database, sql)
	}
	// The managed roles, as the Cluster declares them, each with its Secret's password;
	// and the connection string of docs/operations.md in each service's Secret, pointed
	// at this server (no TLS here: sslmode=verify-full needs the operator's Service name).
	uri := documentedURI.FindStringSubmatch(docs)
	if uri == nil {
		t.Fatal("docs/operations.md gives no --from-literal=uri=\"postgres://...\" for the database Secrets")
	}
	secrets := map[string]map[string]string{}
	for _, r := range spec.Managed.Roles {
		if r.PasswordSecret == nil {
			t.Fatalf("role %s has no password Secret", r.Name)
		}
		b := make([]byte, 32)
		rand.Read(b)
		pw := hex.EncodeToString(b)
		attrs := []string{"LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOREPLICATION"}
		if !r.Login {
			attrs[0] = "NOLOGIN"
		}
		if r.Superuser || r.CreateDB || r.CreateRole || r.Replication {
			t.Fatalf("role %s asks for more than this test grants", r.Name)
		}
		limit := r.ConnectionLimit
		if limit == 0 {
			limit = -1 // CloudNativePG's default: no limit
		}
		exec("postgres", fmt.Sprintf("ALTER ROLE %s %s CONNECTION LIMIT %d PASSWORD '%s'", r.Name, strings.Join(attrs, " "), limit, pw))
		service := strings.TrimPrefix(r.Name, "umbra_")
		u := strings.NewReplacer("$s", service, "$pw", pw).Replace(uri[1])
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatalf("the documented connection string of %s does not parse: %v", service, err)
		}
		parsed.Host = db.Addr()
		q := parsed.Query()
		q.Set("sslmode", "disable")
		q.Del("sslrootcert")
		parsed.RawQuery = q.Encode()
		secrets[r.PasswordSecret.Name] = map[string]string{"uri": parsed.String(), "username": r.Name, "password": pw}
	}
	runOverlayAsProcesses(t, bins, m, secrets)
	umbra := &pgtest.Database{Cluster: db, Name: init.Database, URL: db.URL(init.Database)}

	// Each service made its tables in its own schema, as its own role, and no role can
	// read another's schema.
	for _, s := range sortedKeys(services) {
		tables := pgtest.Query[string](t, umbra,
			"SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tableowner = $2", "umbra_"+s, "umbra_"+s)
		if len(tables) < 2 {
			t.Errorf("schema umbra_%s has %d tables owned by umbra_%s: %v", s, len(tables), s, tables)
		}
	}
	for _, s := range sortedKeys(services) {
		for _, other := range sortedKeys(services) {
			if other == s {
				continue
			}
			ok := pgtest.Query[bool](t, umbra,
				"SELECT has_schema_privilege($1, $2, 'USAGE')", "umbra_"+s, "umbra_"+other)
			if len(ok) != 1 || ok[0] {
				t.Errorf("role umbra_%s may use schema umbra_%s", s, other)
			}
		}
	}
}

// documentedURI is the connection string docs/operations.md has the operator put in
// each service's database Secret.
var documentedURI = regexp.MustCompile(`--from-literal=uri="(postgres://[^"]+)"`)
