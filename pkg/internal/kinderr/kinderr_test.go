package kinderr

import (
	"errors"
	"fmt"
	"testing"
)

type pkgA struct{}

func (pkgA) Name() string { return "a" }

type pkgB struct{}

func (pkgB) Name() string { return "b" }

var errKind = errors.New("some kind")

func TestError(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("wrapped: %w", Errorf[pkgA](errKind, "%d bytes", 3))
	if got, want := err.Error(), "wrapped: a: some kind: 3 bytes"; got != want {
		t.Errorf("message %q; want %q", got, want)
	}
	if !errors.Is(err, errKind) {
		t.Error("errors.Is does not find the kind")
	}
	var a *Error[pkgA]
	if !errors.As(err, &a) || a.Kind != errKind || a.Msg != "3 bytes" {
		t.Errorf("errors.As as the package's own Error: %+v", a)
	}
	// Each package's Error is a type of its own: one package's error is not another's.
	var b *Error[pkgB]
	if errors.As(err, &b) {
		t.Error("an error of package a matched package b's Error")
	}
}
