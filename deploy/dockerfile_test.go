package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is what the manifests rely on in the image.
type dockerfile struct {
	entrypoint string
	// copied are the paths the final stage copies files to.
	copied []string
}

var (
	argLine   = regexp.MustCompile(`(?m)^ARG ([A-Z_]+)=(\S+)$`)
	fromLine  = regexp.MustCompile(`(?m)^FROM (\S+)(?: AS (\S+))?$`)
	copyLine  = regexp.MustCompile(`(?m)^COPY --from=\S+ \S+ (\S+)$`)
	userLine  = regexp.MustCompile(`(?m)^USER (\S+)$`)
	entryLine = regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]$`)
)

// TestDockerfile checks the image's build: pinned base images, never latest, a static
// and reproducible binary, and a non-root final stage.
func TestDockerfile(t *testing.T) { readDockerfile(t) }

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	args := map[string]string{}
	for _, m := range argLine.FindAllStringSubmatch(src, -1) {
		args[m[1]] = m[2]
	}
	froms := fromLine.FindAllStringSubmatch(src, -1)
	if len(froms) < 2 {
		t.Fatalf("%d FROM lines; want a build stage and a runtime stage", len(froms))
	}
	for i, f := range froms {
		image := f[1]
		if strings.HasPrefix(image, "${") {
			image = args[strings.Trim(image, "${}")]
		}
		last := i == len(froms)-1
		name, tag, _ := strings.Cut(image, ":")
		tag, digest, _ := strings.Cut(tag, "@")
		switch {
		case name == "" || tag == "":
			t.Errorf("FROM %s: no tag", f[1])
		case tag == "latest":
			t.Errorf("FROM %s uses the latest tag", image)
		case last && !strings.HasPrefix(digest, "sha256:"):
			t.Errorf("the runtime image %s is not pinned by digest", image)
		case digest == "" && !versionTag.MatchString(tag):
			t.Errorf("FROM %s: pinned neither by digest nor by a version tag", image)
		}
		if last && !strings.Contains(name, "distroless") && name != "scratch" {
			t.Errorf("the runtime image %s is not a minimal (distroless) image", image)
		}
	}
	for _, need := range []string{"CGO_ENABLED=0", "-trimpath"} {
		if !strings.Contains(src, need) {
			t.Errorf("the build does not use %s", need)
		}
	}
	final := src[strings.LastIndex(src, "\nFROM "):]
	users := userLine.FindAllStringSubmatch(final, -1)
	if len(users) == 0 {
		t.Error("the final stage sets no USER")
	}
	for _, u := range users {
		if uid, _, _ := strings.Cut(u[1], ":"); uid == "0" || uid == "root" {
			t.Errorf("the final stage runs as %s", u[1])
		}
	}
	var d dockerfile
	for _, m := range copyLine.FindAllStringSubmatch(final, -1) {
		d.copied = append(d.copied, m[1])
	}
	if m := entryLine.FindStringSubmatch(final); m != nil {
		d.entrypoint = m[1]
	}
	if d.entrypoint != umbraPath || !slices.Contains(d.copied, umbraPath) {
		t.Errorf("the image's entrypoint is %q; want %s, copied from the build stage", d.entrypoint, umbraPath)
	}
	return d
}
