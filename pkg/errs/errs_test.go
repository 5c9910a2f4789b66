package errs

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoGRPC keeps the kinds free of gRPC, so that a store returning them does not pull
// gRPC in: the mapping to status codes is package errstatus's.
func TestNoGRPC(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the package's dependencies with")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	for _, dep := range deps {
		if dep == "google.golang.org/grpc" || strings.HasPrefix(dep, "google.golang.org/grpc/") {
			t.Errorf("pkg/errs depends on %s; the gRPC mapping belongs in pkg/errs/errstatus", dep)
		}
	}
}
