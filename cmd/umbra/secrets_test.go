package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// TestServerStoresNoSecret is the threat model's claim that the server never holds a
// plaintext, a private key, a group key, a password or a passphrase, checked on
// everything the server wrote. A real `umbra dev`, logging at debug level, serves
// `umbra demo` and CLI users who send encrypted direct and group messages carrying
// unique markers, rotate and reset keys, and back their keys up under a password and a
// recovery key. Then the node is stopped and every file of its data folder (the five
// stores and anything else in it) and its whole log are searched for every plaintext,
// password, passphrase, recovery key, private key (from the users' keystores, opened
// with their passphrases) and group epoch key (unwrapped by a member) of the run: raw,
// in hex, and in base64 at every alignment.
func TestServerStoresNoSecret(t *testing.T) {
	bin := e2eBinary(t)
	grpcPort, httpPort := e2eFreePorts(t)
	dataDir := filepath.Join(t.TempDir(), "umbra-data")
	p := e2eStartDev(t, bin, dataDir, grpcPort, httpPort, "--log-level", "debug")
	server := fmt.Sprintf("127.0.0.1:%d", grpcPort)
	work := t.TempDir()

	// secrets are what the server must never hold, by name; markers make each
	// plaintext unique to this run.
	secrets := map[string][]byte{}
	run := randomMarker(t)
	marker := func(what string) string {
		m := "umbra-secret-" + what + "-" + run
		secrets["plaintext "+what] = []byte(m)
		return m
	}
	secret := func(name, value string) string {
		secrets[name] = []byte(value)
		return value
	}
	// Each device's keystore has its own passphrase: by home folder and user.
	passphrases := map[string]string{}
	for _, device := range []string{"phone/alice", "phone/bob", "phone/carol", "laptop/bob"} {
		passphrases[device] = secret("keystore passphrase of "+device, "keystore passphrase of "+device+" "+randomMarker(t))
	}
	backupPassword := secret("backup password", "backup password "+randomMarker(t))

	// umbra runs the CLI as user (a profile of home, with that user's passphrase).
	umbra := func(home, user string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = work
		cmd.Env = append(e2eEnv(os.Environ()),
			"UMBRA_API_KEY="+p.apiKey,
			"UMBRA_SERVER="+server,
			"UMBRA_HOME="+filepath.Join(work, home),
			"UMBRA_USER="+user,
			"UMBRA_PASSPHRASE="+passphrases[home+"/"+user],
			"UMBRA_BACKUP_PASSWORD="+backupPassword,
		)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: umbra %v: %v\nstdout: %s\nstderr: %s", user, args, err, &stdout, &stderr)
		}
		return stdout.String()
	}

	for _, u := range []string{"alice", "bob", "carol"} {
		umbra("phone", u, "login", u)
		umbra("phone", u, "keys", "init")
	}
	// Direct messages both ways, before and after alice rotates her keys.
	a2b, b2a := marker("direct alice to bob"), marker("direct bob to alice")
	umbra("phone", "alice", "send", "--to", "bob", a2b)
	umbra("phone", "bob", "send", "--to", "alice", b2a)
	umbra("phone", "alice", "keys", "rotate")
	afterRotation := marker("direct after rotation")
	umbra("phone", "alice", "send", "--to", "bob", afterRotation)
	wantIn(t, "bob's inbox", umbra("phone", "bob", "listen", "--from-start", "--until-caught-up"), a2b, afterRotation)
	wantIn(t, "alice's inbox", umbra("phone", "alice", "listen", "--from-start", "--until-caught-up"), b2a)

	// A group: messages at epoch 1, then carol's removal and a message at epoch 2.
	team := "team-" + run
	umbra("phone", "alice", "group", "create", "--members", "bob,carol", team)
	g1, g2 := marker("group from alice"), marker("group from carol")
	umbra("phone", "alice", "group", "send", team, g1)
	umbra("phone", "carol", "group", "send", team, g2)
	umbra("phone", "alice", "group", "remove", team, "carol")
	g3 := marker("group after removal")
	umbra("phone", "alice", "group", "send", team, g3)
	wantIn(t, "bob's group", umbra("phone", "bob", "group", "listen", "--from-start", "--until-caught-up", team), g1, g2, g3, "started epoch 2")

	// Backups: a password and a recovery key; a restore on a laptop.
	umbra("phone", "bob", "backup", "create")
	secret("recovery key", strings.TrimSpace(umbra("phone", "bob", "backup", "recovery-key")))
	umbra("laptop", "bob", "login", "bob")
	umbra("laptop", "bob", "backup", "restore")
	wantIn(t, "the laptop", umbra("laptop", "bob", "listen", "--from-start", "--until-caught-up"), a2b)

	// alice loses her keys and resets them; bob writes to the new card.
	umbra("phone", "alice", "keys", "reset")
	afterReset := marker("direct after reset")
	umbra("phone", "bob", "trust", "accept", "alice") // a key change to bob, who pinned her old card
	umbra("phone", "bob", "send", "--to", "alice", afterReset)
	wantIn(t, "alice after the reset", umbra("phone", "alice", "listen", "--until-caught-up"), afterReset)

	// The whole demo, keeping its keystores so their keys can be searched for.
	demo := umbra("phone", "alice", "demo", "--keep")
	checkDemoOutput(t, demo)
	for _, m := range []string{demoHello, demoAfterRotation, demoWelcome, demoAfterRemoval} {
		secrets["demo plaintext "+m] = []byte(m)
	}
	secret("demo backup password", demoPassword)
	secret("demo wrong password", demoWrongPassword)
	demoRun := regexp.MustCompile(`\(run ([a-z0-9]+)\)`).FindStringSubmatch(demo)
	demoHome := regexp.MustCompile(`keystores kept in (\S+)`).FindStringSubmatch(demo)
	if demoRun == nil || demoHome == nil {
		t.Fatalf("the demo printed no run id or keystore folder:\n%s", demo)
	}
	t.Cleanup(func() { os.RemoveAll(demoHome[1]) })

	// Every private key of every keystore, and the public keys to check the scan with.
	keystores := map[string][]byte{} // path -> passphrase (nil: unencrypted)
	for device, pass := range passphrases {
		home, user, _ := strings.Cut(device, "/")
		keystores[filepath.Join(work, home, "profiles", user, "keystore")] = []byte(pass)
	}
	demoStores, err := filepath.Glob(filepath.Join(demoHome[1], "*", "keystore"))
	if err != nil || len(demoStores) != 4 {
		t.Fatalf("demo keystores: %v, %v; want 4 (alice, bob, carol, bob's laptop)", demoStores, err)
	}
	for _, path := range demoStores {
		keystores[path] = nil
	}
	opened := map[string]*keystore.Keystore{}
	var publicKeys [][]byte
	for path, pass := range keystores {
		ks, err := keystore.Open(path, pass)
		if err != nil {
			t.Fatalf("open keystore %s: %v", path, err)
		}
		opened[path] = ks
		for i, kp := range keyPairs(t, ks) {
			kem, err := kp.KEMPrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("%s key %d", path, i)
			secrets[name+" Ed25519 seed"] = kp.SigningSeed()
			secrets[name+" Ed25519 private key"] = kp.Signing
			secrets[name+" KEM private key"] = kem
			publicKeys = append(publicKeys, kp.SigningPublicKey())
		}
	}
	// alice's phone holds 3 (a rotation and a reset), the demo's alice 2 (a rotation),
	// every other keystore 1 (bob's laptop and the demo's: the restored key).
	if n := len(publicKeys); n != 11 {
		t.Fatalf("%d key pairs in the keystores; want 11", n)
	}

	// Every epoch key of both groups, unwrapped by bob's keystores.
	bobPhone := opened[filepath.Join(work, "phone", "profiles", "bob", "keystore")]
	for i, k := range epochKeys(t, server, p.apiKey, "bob", team, bobPhone) {
		secrets[fmt.Sprintf("epoch %d key of the CLI group", i+1)] = k
	}
	demoBob := opened[filepath.Join(demoHome[1], "bob-phone", "keystore")]
	if demoBob == nil {
		t.Fatalf("no keystore of the demo's bob in %v", demoStores)
	}
	prefix := "demo-" + demoRun[1] + "-"
	for i, k := range epochKeys(t, server, p.apiKey, prefix+"bob", prefix+"team", demoBob) {
		secrets[fmt.Sprintf("epoch %d key of the demo group", i+1)] = k
	}

	p.stop(t)

	// What the server wrote: every file of the data folder, and its output.
	files := map[string][]byte{}
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"identity", "card", "backup", "group", "messaging"} {
		if len(files[filepath.Join(dataDir, db+".db")]) == 0 {
			t.Fatalf("no %s.db in the data folder (files: %v)", db, keysOf(files))
		}
	}
	log, err := os.ReadFile(p.stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	files["log (standard error)"], files["standard output"] = log, []byte(p.stdout.String())
	if !bytes.Contains(log, []byte("/umbra.messaging.v1.MessagingService/Send")) {
		t.Fatalf("the log does not show the sends; is it the debug log of this run?\n%.2000s", log)
	}

	// The scan reads the right bytes: every public key is in card.db.
	cards := files[filepath.Join(dataDir, "card.db")]
	for i, pub := range publicKeys {
		if !bytes.Contains(cards, pub) {
			t.Errorf("public key %d of the keystores is not in card.db: the keys or the files read are not the run's", i)
		}
	}
	for name, s := range secrets {
		forms := encodings(s)
		for path, b := range files {
			for form, enc := range forms {
				if bytes.Contains(b, enc) {
					t.Errorf("%s (%s) is in %s", name, form, path)
				}
			}
		}
	}
	t.Logf("searched %d files (%d bytes in all) for %d secrets", len(files), totalSize(files), len(secrets))
}

// randomMarker returns 16 random hex characters.
func randomMarker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// keyPairs returns every key pair a keystore holds, superseded ones included.
func keyPairs(t *testing.T, ks *keystore.Keystore) []*e2ee.KeyPair {
	t.Helper()
	raw, err := ks.KeyBundle()
	if err != nil {
		t.Fatal(err)
	}
	var bundle envelopev1.KeyBundle
	if err := proto.Unmarshal(raw, &bundle); err != nil {
		t.Fatal(err)
	}
	var out []*e2ee.KeyPair
	for _, k := range bundle.GetKeys() {
		if kp := ks.KeyFor(k.GetCardId()); kp != nil {
			out = append(out, kp)
		}
	}
	if len(out) != len(bundle.GetKeys()) || len(out) == 0 {
		t.Fatalf("keystore %s: %d of %d keys found by card id", ks.Path(), len(out), len(bundle.GetKeys()))
	}
	return out
}

// epochKeys fetches, as the app's user uid, the wrapped keys of the app's group guid
// and unwraps them with ks, checking each against its signed commit.
func epochKeys(t *testing.T, server, apiKey, uid, guid string, ks *keystore.Keystore) [][]byte {
	t.Helper()
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: server})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	ids := identityv1.NewIdentityServiceClient(conn)
	appCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	resolved, err := ids.ResolveIdentities(appCtx, &identityv1.ResolveIdentitiesRequest{Uids: []string{uid}, Guids: []string{guid}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ids.IssueToken(appCtx, &identityv1.IssueTokenRequest{Identity: resolved.GetUsers()[uid]})
	if err != nil {
		t.Fatal(err)
	}
	userCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok.GetAccessToken())
	resp, err := groupv1.NewGroupServiceClient(conn).GetEpochKeys(userCtx, &groupv1.GetEpochKeysRequest{GroupId: resolved.GetGroups()[guid]})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, ek := range resp.GetKeys() {
		commit, err := e2ee.ParseEpochCommit(ek.GetCommit().GetCommit())
		if err != nil {
			t.Fatal(err)
		}
		key, err := commit.OpenEpochKey(ek.GetWrappedKey(), ks.KeyFor)
		if err != nil {
			t.Fatalf("epoch %d of %s: %v", ek.GetEpoch(), guid, err)
		}
		out = append(out, key)
	}
	if len(out) != 2 {
		t.Fatalf("%s holds %d epoch keys of %s; want 2", uid, len(out), guid)
	}
	return out
}

// encodings returns the forms in which secret could sit in a file: raw, hex (both
// cases), and standard and URL-safe base64 (padded or not) at each of the three
// alignments it can have inside a longer encoded value (the characters that depend on
// its bytes alone).
func encodings(secret []byte) map[string][]byte {
	out := map[string][]byte{
		"raw":       secret,
		"hex":       []byte(hex.EncodeToString(secret)),
		"hex upper": []byte(strings.ToUpper(hex.EncodeToString(secret))),
	}
	for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
		for k := range 3 {
			e := enc.EncodeToString(append(make([]byte, k), secret...))
			first, end := (8*k+5)/6, 8*(k+len(secret))/6
			if end-first >= 12 {
				out[fmt.Sprintf("%s at offset %d", name, k)] = []byte(e[first:end])
			}
		}
	}
	return out
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func totalSize(m map[string][]byte) int {
	n := 0
	for _, b := range m {
		n += len(b)
	}
	return n
}

// TestEncodingsFindEmbeddedSecrets: a secret inside a longer value, at any offset, is
// found in that value's hex and base64 encodings, so TestServerStoresNoSecret would
// catch a key or a plaintext that a store or a log line kept encoded.
func TestEncodingsFindEmbeddedSecrets(t *testing.T) {
	secret := []byte("a 32-byte secret, like a key...!")
	for prefix := range 7 {
		value := append(append(bytes.Repeat([]byte{0xa5}, prefix), secret...), 0x5a, 0x00, 0xff)
		for name, enc := range map[string]string{
			"hex":        hex.EncodeToString(value),
			"base64":     base64.StdEncoding.EncodeToString(value),
			"raw base64": base64.RawURLEncoding.EncodeToString(value),
			"JSON bytes": `{"envelope":"` + base64.StdEncoding.EncodeToString(value) + `"}`,
		} {
			found := false
			for _, form := range encodings(secret) {
				found = found || strings.Contains(enc, string(form))
			}
			if !found {
				t.Errorf("the secret after %d bytes, in %s (%s), is not found", prefix, name, enc)
			}
		}
	}
	for form, enc := range encodings(secret) {
		if bytes.Contains([]byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, 64))), enc) {
			t.Errorf("the %s form matches a value without the secret", form)
		}
	}
}
