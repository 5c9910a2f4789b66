package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/umbra-e2ee/umbra"

// The layers of docs/architecture.md, as layerOf names them.
const (
	layerCmd      = "command"
	layerAssembly = "assembly"     // internal/node and its test harness
	layerSupport  = "test support" // internal/servicetest, and internal/bench for `umbra bench`
	layerGateway  = "gateway"
	layerService  = "service"
	layerInternal = "internal library"
	layerPkg      = "pkg library"
	layerProto    = "proto"
	// layerOutside are programs and assets beside the server: the web chat's bundle
	// (which cmd/umbra embeds) and the container health check.
	layerOutside = "outside the layers"
)

// layerOf returns the layer of the package at rel, a path inside the module, or "" when
// it has none.
func layerOf(rel string) string {
	switch {
	case under(rel, "cmd"):
		return layerCmd
	case under(rel, "internal/node"):
		return layerAssembly
	case under(rel, "internal/servicetest"), under(rel, "internal/bench"):
		return layerSupport
	case under(rel, "gateway"):
		return layerGateway
	case under(rel, "services"):
		return layerService
	case under(rel, "internal"):
		return layerInternal
	case under(rel, "pkg"):
		return layerPkg
	case under(rel, "proto"):
		return layerProto
	case under(rel, "clients/web"), under(rel, "deploy"):
		return layerOutside
	}
	return ""
}

// under reports whether rel is dir or inside it.
func under(rel, dir string) bool {
	return rel == dir || strings.HasPrefix(rel, dir+"/")
}

// serviceOf returns the service whose package rel is (services/<name>/...), or "".
func serviceOf(rel string) string {
	rest, ok := strings.CutPrefix(rel, "services/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// A rule says which of the module's packages the packages of one layer may import.
type rule struct {
	name string
	// from says whether the rule covers the package at rel.
	from func(rel string) bool
	// may says whether the package at from may import the package at to.
	may func(from, to string) bool
	// why is said with every breach.
	why string
}

func inLayer(layers ...string) func(rel string) bool {
	return func(rel string) bool { return slices.Contains(layers, layerOf(rel)) }
}

var rules = []rule{
	{
		name: "pkg imports only pkg and proto",
		from: inLayer(layerPkg),
		may:  func(_, to string) bool { return inLayer(layerPkg, layerProto)(to) },
		why:  "pkg/ is what outside programs import: building it must link no services/, gateway/ or internal/ code",
	},
	{
		name: "internal libraries import only libraries and proto",
		from: inLayer(layerInternal),
		may:  func(_, to string) bool { return inLayer(layerInternal, layerPkg, layerProto)(to) },
		why:  "the libraries under internal/ sit below the services, the gateway and the assembly (internal/node)",
	},
	{
		name: "the gateway imports no service and not the assembly",
		from: inLayer(layerGateway),
		may:  func(_, to string) bool { return inLayer(layerGateway, layerInternal, layerPkg, layerProto)(to) },
		why:  "the gateway reaches the services over gRPC; only the assembly (internal/node) wires them together",
	},
	{
		name: "a service imports no other service, nor the gateway or the assembly",
		from: inLayer(layerService),
		may: func(from, to string) bool {
			if layerOf(to) == layerService {
				return serviceOf(to) == serviceOf(from)
			}
			return inLayer(layerInternal, layerPkg, layerProto)(to)
		},
		why: "services call each other over gRPC through small interfaces each declares (docs/service-shape.md, peers.go)",
	},
	{
		name: "proto imports only proto",
		from: inLayer(layerProto),
		may:  func(_, to string) bool { return inLayer(layerProto)(to) },
		why:  "the generated code is the bottom layer",
	},
}

// A source is one non-test Go file of the module.
type source struct {
	pkg     string   // its package's path inside the module: "pkg/sdk"
	file    string   // its path inside the module: "pkg/sdk/client.go"
	imports []string // its imports, in full
}

// loadSources lists the module's packages with `go list` and reads the imports of
// their non-test files, all of them whatever their build constraints.
func loadSources(t *testing.T) []source {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Name,Dir,GoFiles,CgoFiles,IgnoredGoFiles,Error", module+"/...")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type listed struct {
		ImportPath, Name, Dir string
		GoFiles               []string
		CgoFiles              []string
		IgnoredGoFiles        []string
		Error                 *struct{ Err string }
	}
	var sources []source
	fset := token.NewFileSet()
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list: %v", err)
		}
		if p.Error != nil {
			t.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
			continue
		}
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		files := slices.Concat(p.GoFiles, p.CgoFiles)
		for _, name := range p.IgnoredGoFiles {
			if !strings.HasSuffix(name, "_test.go") {
				files = append(files, name)
			}
		}
		for _, name := range files {
			full := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(fset, full, nil, parser.ImportsOnly)
			if err != nil {
				t.Errorf("%v", err)
				continue
			}
			if f.Name.Name != p.Name {
				continue // a file left out of every build, such as a `//go:build ignore` generator
			}
			s := source{pkg: rel, file: path.Join(rel, name)}
			for _, imp := range f.Imports {
				imported, err := strconv.Unquote(imp.Path.Value)
				if err != nil {
					t.Fatalf("%s: %v", full, err)
				}
				s.imports = append(s.imports, imported)
			}
			sources = append(sources, s)
		}
	}
	if len(sources) == 0 {
		t.Fatal("go list found no package in the module")
	}
	return sources
}

// TestLayers fails when an import runs up the layers (docs/architecture.md), naming
// every file that does it.
func TestLayers(t *testing.T) {
	sources := loadSources(t)

	t.Run("every package sits in a layer", func(t *testing.T) {
		seen := map[string]bool{}
		for _, s := range sources {
			if !seen[s.pkg] && layerOf(s.pkg) == "" {
				t.Errorf("%s is in no layer: place it in docs/architecture.md's Layers and in layerOf", s.pkg)
			}
			seen[s.pkg] = true
		}
	})
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			var breaches []string
			for _, s := range sources {
				if !r.from(s.pkg) {
					continue
				}
				for _, imp := range s.imports {
					to, ok := strings.CutPrefix(imp, module+"/")
					if ok && !r.may(s.pkg, to) {
						breaches = append(breaches, fmt.Sprintf("%s (%s) imports %s (%s)", s.file, layerOf(s.pkg), imp, layerOf(to)))
					}
				}
			}
			if len(breaches) > 0 {
				t.Errorf("%s:\n\t%s", r.why, strings.Join(breaches, "\n\t"))
			}
		})
	}

	t.Run("only a service's store files import its storage engine", func(t *testing.T) {
		// The rule covers each service's own package (services/<name>), whose Store
		// interface must say nothing about the engine: only store_bolt*.go imports
		// bbolt, only store_postgres*.go imports PostgreSQL's driver, each its own
		// engine only. A package of its own under a service, such as the messaging
		// service's log engine, is engine code.
		var breaches []string
		for _, s := range sources {
			if layerOf(s.pkg) != layerService || s.pkg != "services/"+serviceOf(s.pkg) {
				continue
			}
			file := path.Base(s.file)
			for _, imp := range s.imports {
				e := engineOf(imp)
				if e == nil {
					continue
				}
				if ok, _ := path.Match(e.files, file); !ok {
					breaches = append(breaches, fmt.Sprintf("%s imports %s (%s: only %s may)", s.file, imp, e.name, e.files))
				}
			}
		}
		if len(breaches) > 0 {
			t.Errorf("only a service's store_<engine>*.go files (and tests) may import a storage engine, each its own, so that another engine can implement the service's Store (docs/service-shape.md):\n\t%s",
				strings.Join(breaches, "\n\t"))
		}
	})
}

// An engine is a storage engine's imports, and the files of a service that may make them.
type engine struct {
	name  string
	files string   // a path.Match pattern of file names
	paths []string // import paths, and their subpackages
}

var engines = []engine{
	{"bbolt", "store_bolt*.go", []string{"go.etcd.io/bbolt", module + "/internal/boltdb"}},
	{"PostgreSQL", "store_postgres*.go", []string{"github.com/jackc/pgx/v5", "github.com/pressly/goose/v3", module + "/internal/pgdb"}},
}

// engineOf returns the engine whose package imp is, or nil.
func engineOf(imp string) *engine {
	for i, e := range engines {
		for _, p := range e.paths {
			if imp == p || strings.HasPrefix(imp, p+"/") {
				return &engines[i]
			}
		}
	}
	return nil
}
