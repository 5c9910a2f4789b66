package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The client's JSON state files beside the keystore, read and written whole.

// stateFile is one kind of the client's state files: the pin file (pins.go) or the key
// transparency state (ktstate.go). Its strings name it in errors.
type stateFile struct {
	what    string // the file in errors of reading or writing it
	file    string // the file in errors about what it holds
	holds   string // what the file holds, and how to recover when it is damaged
	version int    // the version this SDK reads and writes
}

// read reads the file at path into v, which a missing file leaves as it is; version
// is v's version field, which must then be the one this SDK reads.
func (sf stateFile) read(path string, v any, version *int) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sdk: read %s: %w", sf.what, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("sdk: %s %s is damaged (%v): %s", sf.file, path, err, sf.holds)
	}
	if *version != sf.version {
		return fmt.Errorf("sdk: %s %s has version %d; this SDK reads version %d", sf.file, path, *version, sf.version)
	}
	return nil
}

// write replaces the file at path with v (writeStateFile).
func (sf stateFile) write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeStateFile(path, sf.what, b)
}

// writeStateFile replaces the file at path with b, mode 0600: written beside it,
// synced, then renamed over it, so a crash leaves the old file or the new one.
func writeStateFile(path, what string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sdk: write %s: %w", what, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("sdk: write %s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("sdk: write %s: %w", what, err)
	}
	return nil
}
