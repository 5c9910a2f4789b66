package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/umbra-e2ee/umbra/pkg/internal/atomicfile"
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

// write replaces the file at path with v as indented JSON and a newline, mode 0600, with
// atomicfile.Write: a crash leaves the old file or the new one.
func (sf stateFile) write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sdk: write %s: %w", sf.what, err)
	}
	if err := atomicfile.Write(path, append(b, '\n')); err != nil {
		return fmt.Errorf("sdk: write %s: %w", sf.what, err)
	}
	return nil
}
