//go:build !unix

package node

// lockDir does not lock on systems without flock: processes there should not share a
// data folder while they start.
func lockDir(string) (func(), error) { return func() {}, nil }
