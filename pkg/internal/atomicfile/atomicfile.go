// Package atomicfile replaces small files so that a crash leaves the old content or the
// new, never a mix: the keystore (pkg/keystore) and the SDK's state files (pkg/sdk).
// internal/durable does the same for the server's files; pkg/ links no internal/ code.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode 0600. It writes a temporary file beside path (a
// name of its own, so two writers never share one), syncs it, renames it over path and
// syncs the folder, so the rename itself survives a crash. When it fails, the
// temporary file is removed and path is as it was.
func Write(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}
