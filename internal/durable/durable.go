// Package durable writes small files so that a crash never leaves half of one: the
// node's list of its stores, the witness's cosigned state, the dev sign-in's list of names
// and `umbra dev`'s credentials.
package durable

import (
	"os"
	"path/filepath"
)

// WriteFile replaces path with b (mode 0600): a reader sees the old content or the
// new, and after a crash the file holds one of them. It writes path.tmp, syncs it,
// renames it over path and syncs the folder, so the rename itself survives a crash.
func WriteFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
