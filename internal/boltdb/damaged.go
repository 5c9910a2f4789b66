package boltdb

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// DamagedError says that a store's file is damaged, and what the operator can do about
// it. Its message is one line: `umbra dev` and `umbra serve` print it alone when a store
// cannot be opened.
type DamagedError struct {
	// Path is the file.
	Path string
	// Cause says what is damaged, on one line.
	Cause string
}

func (e *DamagedError) Error() string {
	store, dir := StoreName(e.Path), filepath.Dir(e.Path)
	return fmt.Sprintf("%s is damaged (%s): check it with `umbra admin verify --store %s --data %s`, then restore a backup with `umbra admin restore --store %s --from BACKUP --data %s` (the damaged file is kept beside it)",
		e.Path, e.Cause, store, dir, store, dir)
}

// Unwrap returns errs.ErrDamaged, so that errors.Is(err, errs.ErrDamaged) holds.
func (e *DamagedError) Unwrap() error { return errs.ErrDamaged }

// StoreName is the store a file holds: its name without ".db" (messaging.db holds
// messaging).
func StoreName(path string) string { return strings.TrimSuffix(filepath.Base(path), ".db") }

// damaged returns a DamagedError for path with cause on one line.
func damaged(path string, cause any) *DamagedError {
	s := strings.Join(strings.Fields(fmt.Sprint(cause)), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return &DamagedError{Path: path, Cause: s}
}

// Protect runs fn, which reads the bbolt file at path, and turns what a damaged file
// makes bbolt do into a *DamagedError: a panic (bbolt asserts on a page it does not
// expect), a memory fault on the mapped file (SIGBUS or SIGSEGV, which the runtime turns
// into a panic on this goroutine while fn runs, instead of killing the process), or an
// error of fn that wraps errs.ErrDamaged (a record that fails its checksum). Other
// errors pass through unchanged.
//
// Stores call it around everything that reads their file while opening: bbolt's open,
// the start-up rebuilds of indexes, a service's first reads.
func Protect(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged(path, fmt.Sprintf("reading it failed: %v", r))
		}
	}()
	err = fn()
	var d *DamagedError
	if err != nil && errors.Is(err, errs.ErrDamaged) && !errors.As(err, &d) {
		err = damaged(path, err)
	}
	return err
}
