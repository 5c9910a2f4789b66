// Package kinderr is the error type of pkg/e2ee and pkg/keybackup, written once: a
// failure of one kind (a sentinel error of the package), with a message that says what
// was wrong. Each package names it by a type alias, instantiated with a type of its own
// (E2EE, KeyBackup), so e2ee.Error and keybackup.Error stay two types (errors.As tells
// them apart) and each error reads "<package>: <kind>: <message>".
package kinderr

import "fmt"

// Package names the package an Error belongs to: a type with no fields, one for each
// package, whose Name is the prefix of every message.
type Package interface{ Name() string }

// E2EE is pkg/e2ee's Package.
type E2EE struct{}

func (E2EE) Name() string { return "e2ee" }

// KeyBackup is pkg/keybackup's Package.
type KeyBackup struct{}

func (KeyBackup) Name() string { return "keybackup" }

// Error is a failure of one kind, with what was wrong.
type Error[P Package] struct {
	Kind error
	Msg  string
}

func (e *Error[P]) Error() string {
	var p P
	return fmt.Sprintf("%s: %s: %s", p.Name(), e.Kind, e.Msg)
}

// Unwrap returns the kind, so errors.Is(err, kind) holds.
func (e *Error[P]) Unwrap() error { return e.Kind }

// Errorf returns an Error of package P and kind, with the message format and args make.
func Errorf[P Package](kind error, format string, args ...any) error {
	return &Error[P]{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
