// The umbra and umbra-healthcheck binaries the manifests are checked against, and
// their flags.

package deploy

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// flagInfo is one flag as `-h` prints it.
type flagInfo struct {
	isBool bool
	def    string
}

type binaries struct {
	umbra, probe string
	// serveFlags are the flags of `umbra serve <role>`, by role.
	serveFlags map[string]map[string]flagInfo
	probeFlags map[string]flagInfo
}

// buildBinaries builds umbra and umbra-healthcheck from this checkout and reads their
// flags from -h: the manifests are checked against the real flag sets.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build umbra with: the manifests' flags cannot be checked")
	}
	dir := t.TempDir()
	build := exec.Command(goBin, "build", "-o", dir, "../cmd/umbra", "./healthcheck")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b := binaries{umbra: filepath.Join(dir, "umbra"), probe: filepath.Join(dir, "healthcheck"), serveFlags: map[string]map[string]flagInfo{}}
	for _, role := range append(sortedKeys(services), "gateway") {
		b.serveFlags[role] = helpFlags(t, filepath.Join(dir, "umbra"), "serve", role, "-h")
	}
	b.probeFlags = helpFlags(t, b.probe, "-h")
	return b
}

var (
	helpFlag    = regexp.MustCompile(`^  -([a-z0-9-]+)(?: ([a-z0-9]+))?$`)
	helpDefault = regexp.MustCompile(`\(default "?([^")]*)"?\)$`)
)

func helpFlags(t *testing.T, bin string, args ...string) map[string]flagInfo {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	flags := map[string]flagInfo{}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := helpFlag.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = flagInfo{isBool: m[2] == ""}
			continue
		}
		if d := helpDefault.FindStringSubmatch(line); d != nil && last != "" {
			f := flags[last]
			f.def = d[1]
			flags[last] = f
		}
	}
	if len(flags) < 5 {
		t.Fatalf("%s %s: found %d flags in\n%s", filepath.Base(bin), strings.Join(args, " "), len(flags), out)
	}
	return flags
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
