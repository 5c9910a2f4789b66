package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
)

// runAdmin is the operator's side of a running process: list its stores, back one up
// online, or restore one into a stopped service's data folder.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("admin", args, stderr, "stores", "backup", "restore")
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
	store := fs.String("store", "", "the store: identity, card, backup, group or messaging")
	out := fs.String("out", "", "backup: the file to write")
	from := fs.String("from", "", "restore: the backup file")
	data := fs.String("data", "", "restore: the stopped service's data folder")
	if err := parse(fs, args); err != nil {
		return err
	}
	if sub == "restore" {
		if *store == "" || *from == "" || *data == "" {
			fmt.Fprintln(stderr, "usage: umbra admin restore --store card --from card.db.backup --data /var/lib/umbra")
			return errUsage
		}
		return restoreStore(stdout, *store, *from, *data)
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
			fmt.Fprintln(stderr, "usage: umbra admin backup --store card --out card.db.backup")
			return errUsage
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

// restoreStore puts a backup in place of a stopped service's file. The backup must be
// a bbolt file written by an Umbra store, and the service must not be running (its file
// is locked while it is); the file it replaces is kept beside it.
func restoreStore(stdout io.Writer, store, from, data string) error {
	if err := checkBackup(from); err != nil {
		return fmt.Errorf("%s is not a usable backup: %w", from, err)
	}
	target := filepath.Join(data, store+".db")
	if _, err := os.Stat(target); err == nil {
		db, err := bolt.Open(target, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
		if err != nil {
			return fmt.Errorf("%s is in use or unreadable (%v): stop the %s service first", target, err, store)
		}
		db.Close()
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

// checkBackup opens the file read-only and looks for the schema bucket every Umbra
// store has.
func checkBackup(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("_meta")); b == nil || b.Get([]byte("schema_version")) == nil {
			return errors.New("no Umbra schema version in it")
		}
		return nil
	})
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
