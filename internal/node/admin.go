package node

import (
	"context"
	"crypto/sha256"
	"io"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
)

// adminServer implements umbra.admin.v1.AdminService for the stores of one process.
type adminServer struct {
	adminv1.UnimplementedAdminServiceServer
	stores map[string]*boltdb.DB
	// inPostgres are the hosted stores in PostgreSQL, which the engine's own tools
	// back up.
	inPostgres []string
}

// adminPolicies is the admin service's access table.
func adminPolicies() auth.Table {
	return auth.Table{
		adminv1.AdminService_ListStores_FullMethodName:  auth.Admin,
		adminv1.AdminService_BackupStore_FullMethodName: auth.Admin,
	}
}

func (a *adminServer) ListStores(_ context.Context, _ *adminv1.ListStoresRequest) (*adminv1.ListStoresResponse, error) {
	resp := &adminv1.ListStoresResponse{}
	for _, name := range slices.Sorted(maps.Keys(a.stores)) {
		var size int64
		if err := a.stores[name].View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err != nil {
			return nil, err
		}
		resp.Stores = append(resp.Stores, &adminv1.Store{Name: name, SizeBytes: size})
	}
	return resp, nil
}

// backupChunk is the most file bytes one message carries.
const backupChunk = 1 << 20

func (a *adminServer) BackupStore(req *adminv1.BackupStoreRequest, stream adminv1.AdminService_BackupStoreServer) error {
	db, ok := a.stores[req.GetName()]
	if !ok && slices.Contains(a.inPostgres, req.GetName()) {
		return errs.Preconditionf("the %s store is in PostgreSQL: back it up with PostgreSQL's own tools (pg_dump --schema umbra_%s, or the cluster's base backups and WAL archive)", req.GetName(), req.GetName())
	}
	if !ok {
		return errs.NotFoundf("this process hosts no store %q (ListStores names them)", req.GetName())
	}
	w := &chunkWriter{stream: stream, hash: sha256.New()}
	return db.View(func(tx *bolt.Tx) error {
		if _, err := tx.WriteTo(w); err != nil {
			return err
		}
		if err := w.flush(); err != nil {
			return err
		}
		return stream.Send(&adminv1.BackupStoreResponse{TotalBytes: w.total, Sha256: w.hash.Sum(nil)})
	})
}

// chunkWriter sends what is written to it in chunks of backupChunk bytes.
type chunkWriter struct {
	stream adminv1.AdminService_BackupStoreServer
	buf    []byte
	total  int64
	hash   interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.hash.Write(p)
	w.total += int64(len(p))
	n := len(p)
	for len(p) > 0 {
		take := min(len(p), backupChunk-len(w.buf))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == backupChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.stream.Send(&adminv1.BackupStoreResponse{Chunk: w.buf})
	w.buf = make([]byte, 0, backupChunk)
	return err
}
