package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/identity"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// runAdmin is the operator's side of the stores: list a running process's stores, back
// one up online, check one offline, restore one into a stopped service's data folder, or
// copy a stopped node's stores into PostgreSQL (admin_migrate.go); and of the key
// transparency log key: start and end its rotation (adminLogKey).
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("admin", args, stderr, "stores", "backup", "verify", "restore", "migrate", "rotate-log-key", "retire-log-key")
	if err != nil {
		return err
	}
	fs := newFlagSet("admin "+sub, stderr)
	var server grpcclient.Config
	fs.StringVar(&server.Addr, "server", "127.0.0.1:9090", "gRPC address of the process that hosts the store")
	fs.BoolVar(&server.Insecure, "insecure", false, "allow plaintext beyond loopback")
	fs.StringVar(&server.TLS.CAFile, "tls-ca", "", "CA that signs the server's certificate (enables TLS)")
	fs.StringVar(&server.TLS.CertFile, "tls-cert", "", "client certificate, when the server requires one")
	fs.StringVar(&server.TLS.KeyFile, "tls-key", "", "key of --tls-cert")
	adminToken := fs.String("admin-token", "", "the admin credential")
	store := fs.String("store", "", "the store: identity, card, backup, group or messaging (migrate: a comma-separated list; default: every store of --from)")
	out := fs.String("out", "", "backup: the file to write")
	from := fs.String("from", "", "restore: the backup file; migrate: the stopped node's data folder")
	to := fs.String("to", "", "migrate: the PostgreSQL connection string (postgres://...) to copy the stores into")
	verifyOnly := fs.Bool("verify", false, "migrate: only compare the stores with their copy, writing nothing")
	data := fs.String("data", "", "verify, restore: the stopped service's data folder")
	file := fs.String("file", "", "verify: a store's file to check instead of the one in --data (a backup)")
	logKey := fs.String("key", "", "retire-log-key: the log key to retire, its verifier key or key id (umbra card log-key lists them)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if sub == "verify" {
		if *store == "" || (*data == "") == (*file == "") {
			return usagef(stderr, "usage: umbra admin verify --store messaging --data /var/lib/umbra   (or --file messaging.db.backup)")
		}
		path := *file
		if path == "" {
			path = node.StorePath(*data, *store)
		}
		return verifyStore(stdout, *store, path)
	}
	if sub == "restore" {
		if *store == "" || *from == "" || *data == "" {
			return usagef(stderr, "usage: umbra admin restore --store card --from card.db.backup --data /var/lib/umbra")
		}
		return restoreStore(stdout, *store, *from, *data)
	}
	if sub == "migrate" {
		if *from == "" || *to == "" {
			return usagef(stderr, "usage: umbra admin migrate --from /var/lib/umbra --to 'postgres://user@db:5432/umbra' [--store identity,card] [--verify]")
		}
		return migrateStores(ctx, stdout, *from, *to, *store, *verifyOnly)
	}
	if *adminToken == "" {
		return errors.New("the admin credential is needed: --admin-token or UMBRA_ADMIN_TOKEN")
	}
	conn, err := grpcclient.Dial(server)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := adminv1.NewAdminServiceClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*adminToken)
	switch sub {
	case "rotate-log-key", "retire-log-key":
		if sub == "retire-log-key" && *logKey == "" {
			return usagef(stderr, "usage: umbra admin retire-log-key --key <verifier key or key id>   (umbra card log-key lists them)")
		}
		return adminLogKey(ctx, cardv1.NewCardServiceClient(conn), sub, *logKey, stdout)
	case "stores":
		resp, err := client.ListStores(ctx, &adminv1.ListStoresRequest{})
		if err != nil {
			return err
		}
		for _, s := range resp.GetStores() {
			fmt.Fprintf(stdout, "%-10s %12d bytes\n", s.GetName(), s.GetSizeBytes())
		}
	case "backup":
		if *store == "" || *out == "" {
			return usagef(stderr, "usage: umbra admin backup --store card --out card.db.backup")
		}
		n, err := backupStore(ctx, client, *store, *out)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %d bytes written to %s\n", *store, n, *out)
	}
	return nil
}

// backupStore streams a store into out, checking its size and hash before the file
// takes its name.
func backupStore(ctx context.Context, client adminv1.AdminServiceClient, store, out string) (int64, error) {
	stream, err := client.BackupStore(ctx, &adminv1.BackupStoreRequest{Name: store})
	if err != nil {
		return 0, err
	}
	tmp := out + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp)
	defer f.Close()
	h := sha256.New()
	var n int64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return 0, errors.New("the backup stream ended without its final size and hash")
		}
		if err != nil {
			return 0, err
		}
		if _, err := io.MultiWriter(f, h).Write(msg.GetChunk()); err != nil {
			return 0, err
		}
		n += int64(len(msg.GetChunk()))
		if msg.GetTotalBytes() > 0 {
			if msg.GetTotalBytes() != n || !bytes.Equal(msg.GetSha256(), h.Sum(nil)) {
				return 0, fmt.Errorf("the copy does not match: %d bytes received, %d sent", n, msg.GetTotalBytes())
			}
			break
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return n, os.Rename(tmp, out)
}

// verifiers check each store's file offline: its pages, every record, the store's own
// indexes (boltdb.Verify and each service's additions).
var verifiers = map[string]func(path string) (*boltdb.Report, error){
	gateway.Identity:  identity.Verify,
	gateway.Card:      card.Verify,
	gateway.Backup:    backup.Verify,
	gateway.Group:     group.Verify,
	gateway.Messaging: messaging.Verify,
}

// verify checks the file at path as a file of store and prints what it found; the
// error says whether it is sound.
func verify(stdout io.Writer, store, path string) error {
	check, ok := verifiers[store]
	if !ok {
		return fmt.Errorf("there is no store %q (stores: %s)", store, strings.Join(gateway.Services(), ", "))
	}
	r, err := check(path)
	if err != nil {
		return err
	}
	if len(r.Problems) == 0 {
		var records []string
		total := 0
		for _, name := range slices.Sorted(maps.Keys(r.Records)) {
			records = append(records, fmt.Sprintf("%s %d", name, r.Records[name]))
			total += r.Records[name]
		}
		fmt.Fprintf(stdout, "%s: sound. %d pages of %d bytes (%d in use); %d records checked (%s); %d index entries checked\n",
			path, r.Stats.Pages, r.Stats.PageSize, r.Stats.Reachable, total, strings.Join(records, ", "), r.Entries)
		if r.Legacy {
			fmt.Fprintln(stdout, "It was written before record checksums: its records decode, but have no checksum to check; the service adds them when it next opens the file.")
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s is damaged:\n", path)
	for _, p := range r.Problems {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	if r.Omitted > 0 {
		fmt.Fprintf(stdout, "  ... and %d more problems\n", r.Omitted)
	}
	return fmt.Errorf("%w (%d problems, listed above)", errs.ErrDamaged, len(r.Problems)+r.Omitted)
}

// verifyStore is `umbra admin verify`: it checks a stopped service's file (or a backup)
// and says what to do about a damaged one.
func verifyStore(stdout io.Writer, store, path string) error {
	err := verify(stdout, store, path)
	if errors.Is(err, errs.ErrDamaged) {
		return fmt.Errorf("%s is damaged: restore a backup with `umbra admin restore --store %s --from BACKUP --data %s` (check the backup first with `umbra admin verify --store %s --file BACKUP`)",
			path, store, filepath.Dir(path), store)
	}
	return err
}

// restoreStore puts a backup in place of a stopped service's file. The backup must pass
// `umbra admin verify` as a file of that store, and the service must not be running
// (its file is locked while it is); the file it replaces is kept beside it.
func restoreStore(stdout io.Writer, store, from, data string) error {
	if err := verify(stdout, store, from); err != nil {
		return fmt.Errorf("%s is not a usable backup of the %s store, nothing was changed: %w", from, store, err)
	}
	target := node.StorePath(data, store)
	if _, err := os.Stat(target); err == nil {
		// Only the lock is checked: the file it replaces may be too damaged to open.
		if err := boltdb.CheckUnused(target); err != nil {
			return fmt.Errorf("%v: stop the %s service first", err, store)
		}
		kept := fmt.Sprintf("%s.replaced-%s", target, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(target, kept); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "the previous file is kept as %s\n", kept)
	}
	if err := copyFile(from, target+".restore"); err != nil {
		return err
	}
	if err := os.Rename(target+".restore", target); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s restored from %s; start the service\n", target, from)
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// adminLogKey starts a log key rotation (rotate-log-key: a new key signs every
// checkpoint beside the current one) or ends one (retire-log-key: the named key stops
// signing), and prints the keys that sign, as clients, witnesses and auditors take
// them (docs/operations.md, "Rotating the log key").
func adminLogKey(ctx context.Context, cards cardv1.CardServiceClient, sub, key string, stdout io.Writer) error {
	var keys []*cardv1.LogKey
	if sub == "rotate-log-key" {
		resp, err := cards.RotateLogKey(ctx, &cardv1.RotateLogKeyRequest{})
		if err != nil {
			return err
		}
		keys = resp.GetKeys()
		fmt.Fprintf(stdout, "new log key %s (id %s): it signs every checkpoint from now on, beside the current one\n", resp.GetKey().GetVerifierKey(), resp.GetKey().GetKeyId())
	} else {
		resp, err := cards.RetireLogKey(ctx, &cardv1.RetireLogKeyRequest{Key: key})
		if err != nil {
			return err
		}
		keys = resp.GetKeys()
		fmt.Fprintf(stdout, "log key %s (id %s) retired: it signs no more checkpoints, and its private key is erased\n", resp.GetKey().GetVerifierKey(), resp.GetKey().GetKeyId())
	}
	var signing []string
	for _, k := range keys {
		if k.GetRetiredAt() == nil {
			signing = append(signing, k.GetVerifierKey())
		}
	}
	fmt.Fprintf(stdout, "the log keys that sign, as --log-key (and sdk.Config.LogKeys) take them:\n%s\n", strings.Join(signing, ","))
	if sub == "rotate-log-key" {
		fmt.Fprintln(stdout, "next: ship the new key to your apps, witnesses and auditors beside the old one; when they all have it, umbra admin retire-log-key --key <the old key>")
	} else {
		fmt.Fprintln(stdout, "clients, witnesses and auditors that know only the retired key now refuse every new checkpoint: they need the key(s) above")
	}
	return nil
}
