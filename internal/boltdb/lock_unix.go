//go:build unix

package boltdb

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// CheckUnused returns an error wrapping ErrLocked when another process has the bbolt
// file at path open (bbolt holds an flock on it), without reading the file: it works on
// a damaged file too, which is what `umbra admin restore` replaces.
func CheckUnused(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return fmt.Errorf("%s is open in a running process (%w)", path, ErrLocked)
	}
	if err != nil {
		return err
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
