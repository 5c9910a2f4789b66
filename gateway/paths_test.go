package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/umbra-e2ee/umbra/gateway"
)

// gatewayRule is one HTTP rule of proto/gateway.yaml.
type gatewayRule struct {
	selector, method, path string
}

// gatewayRules reads the HTTP rules of proto/gateway.yaml: each "- selector:" line
// and the method line that follows it.
func gatewayRules(t *testing.T) []gatewayRule {
	t.Helper()
	f, err := os.Open("../proto/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rules []gatewayRule
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if sel, ok := strings.CutPrefix(line, "- selector: "); ok {
			rules = append(rules, gatewayRule{selector: sel})
			continue
		}
		for _, m := range []string{"get", "post", "put", "patch", "delete"} {
			if p, ok := strings.CutPrefix(line, m+": "); ok && len(rules) > 0 {
				rules[len(rules)-1].method, rules[len(rules)-1].path = m, p
			}
		}
	}
	if err := sc.Err(); err != nil || len(rules) == 0 {
		t.Fatalf("proto/gateway.yaml: %d rules, %v", len(rules), err)
	}
	return rules
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

// TestOpenAPIPathParameters holds proto/gateway.yaml, the served OpenAPI and the
// documents to one form of every route. gateway.yaml must name the request's proto
// fields ({card_id}: grpc-gateway resolves no other name), and protoc-gen-openapiv2,
// with json_names_for_fields, writes the same parameter by its JSON name ({cardId}),
// as it writes every body field; the URL is the same. The documents write routes as
// the OpenAPI serves them.
func TestOpenAPIPathParameters(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"paths"`
	}
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(closedAddr(t))})
	if err := json.Unmarshal(send(t, "GET", base+"/openapi.json", "", "").body, &doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range gatewayRules(t) {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(r.selector))
		if err != nil {
			t.Errorf("%s: %v", r.selector, err)
			continue
		}
		in := d.(protoreflect.MethodDescriptor).Input()
		var names []string
		served := pathParam.ReplaceAllStringFunc(r.path, func(p string) string {
			f := in.Fields().ByName(protoreflect.Name(p[1 : len(p)-1]))
			if f == nil {
				t.Errorf("%s: path parameter %s is no field of %s", r.selector, p, in.FullName())
				return p
			}
			names = append(names, f.JSONName())
			return "{" + f.JSONName() + "}"
		})
		op, ok := doc.Paths[served][r.method]
		if !ok {
			t.Errorf("%s %s (%s): the served OpenAPI has no %s %s", strings.ToUpper(r.method), r.path, r.selector, strings.ToUpper(r.method), served)
			continue
		}
		var got []string
		for _, p := range op.Parameters {
			if p.In == "path" {
				got = append(got, p.Name)
			}
		}
		if strings.Join(got, ",") != strings.Join(names, ",") {
			t.Errorf("%s %s: the OpenAPI's path parameters are %v; want %v", strings.ToUpper(r.method), served, got, names)
		}
	}

	// Every route with a parameter that a document names is written as served.
	files, _ := filepath.Glob("../docs/*.md")
	files = append(files, "../README.md")
	route := regexp.MustCompile(`/v1/[A-Za-z0-9_./:{}-]*\{[A-Za-z0-9_.]+\}[A-Za-z0-9_./:{}-]*`)
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range bytes.Split(text, []byte("\n")) {
			for _, m := range route.FindAll(line, -1) {
				if _, ok := doc.Paths[string(m)]; !ok {
					t.Errorf("%s:%d: route %s is not written as the served OpenAPI writes it (path parameters by their JSON names, such as {cardId})", filepath.Base(file), i+1, m)
				}
			}
		}
	}
}
