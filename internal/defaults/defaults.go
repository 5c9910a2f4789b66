// Package defaults fills in the defaults of the services' configurations: one line a
// field instead of an if each.
package defaults

import "cmp"

// Set sets *v to d when *v is its type's zero value (0, "", a nil interface).
func Set[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// Positive sets *v to d unless *v is above zero: for a value where zero and below both
// mean the default.
func Positive[T cmp.Ordered](v *T, d T) {
	var zero T
	if *v <= zero {
		*v = d
	}
}
