// The Secrets the pods use and the certificates cert-manager issues for them.

package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// secretRefs returns the Secrets the pods use, by name, with what uses them.
func secretRefs(m *manifests) map[string]string {
	refs := map[string]string{}
	for _, w := range m.workloads() {
		for _, v := range w.pod.Spec.Volumes {
			if v.Secret != nil {
				refs[v.Secret.SecretName] = w.name + " volume " + v.Name
			}
		}
		for _, c := range w.pod.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					refs[e.ValueFrom.SecretKeyRef.Name] = w.name + " env " + e.Name
				}
			}
		}
	}
	databaseSecretRefs(m, refs)
	return refs
}

// checkSecrets: every Secret a pod uses is made by cert-manager (production), by a
// command docs/operations.md gives, or by the kubectl commands dev-certs.sh prints.
func checkSecrets(t *testing.T, m *manifests, docs string) {
	script, err := os.ReadFile("dev-certs.sh")
	if err != nil {
		t.Fatal(err)
	}
	printed := map[string]bool{}
	if loop := devCertsLoop.FindSubmatch(script); loop != nil && strings.Contains(docs, "deploy/dev-certs.sh") {
		for _, s := range strings.Fields(string(loop[1])) {
			printed["umbra-"+s+"-tls"] = true
		}
	}
	for _, name := range sortedKeys(secretRefs(m)) {
		made := printed[name] || strings.Contains(docs, "create secret generic "+name+" ") || documentedInLoop(docs)[name]
		for _, c := range m.certificates {
			made = made || c.Spec.SecretName == name
		}
		if !made {
			t.Errorf("Secret %s (%s) is made by no Certificate, no command in docs/operations.md and no line dev-certs.sh prints", name, secretRefs(m)[name])
		}
	}
}

// devCertsLoop finds the services whose Secret commands dev-certs.sh prints.
var devCertsLoop = regexp.MustCompile(`for s in ([a-z -]+); do\n\s*echo "kubectl -n \$ns create secret generic umbra-\$s-tls `)

// checkCertificates: cert-manager issues every TLS Secret, with the names peers dial and
// --service-peers accepts for the services, and none of those names for the gateway.
func checkCertificates(t *testing.T, m *manifests) {
	bySecret := map[string]*certificate{}
	for _, c := range m.certificates {
		bySecret[c.Spec.SecretName] = c
		ref := c.Spec.IssuerRef
		if ref.Group != "cert-manager.io" || (ref.Kind != "Issuer" && ref.Kind != "ClusterIssuer") {
			t.Errorf("Certificate %s: issuerRef %+v is no cert-manager issuer", c.Metadata.Name, ref)
		}
		if ref.Kind == "Issuer" && m.issuers["Issuer/"+ref.Name] == nil {
			t.Errorf("Certificate %s: Issuer %s is not in the manifests", c.Metadata.Name, ref.Name)
		}
	}
	for _, is := range m.issuers {
		if is.Spec.CA != nil {
			if ca := bySecret[is.Spec.CA.SecretName]; ca == nil || !ca.Spec.IsCA {
				t.Errorf("Issuer %s signs with %s, which no CA Certificate makes", is.Metadata.Name, is.Spec.CA.SecretName)
			}
		}
	}
	var peers []string
	for _, cm := range m.configMaps {
		if v, ok := cm.Data["UMBRA_SERVICE_PEERS"]; ok {
			peers = strings.Split(v, ",")
		}
	}
	for _, w := range m.workloads() {
		for _, v := range w.pod.Spec.Volumes {
			if v.Secret == nil || !strings.HasSuffix(v.Secret.SecretName, "-tls") {
				continue
			}
			c := bySecret[v.Secret.SecretName]
			if c == nil {
				t.Errorf("%s: no Certificate makes the Secret %s", w.name, v.Secret.SecretName)
				continue
			}
			names := append([]string{c.Spec.CommonName}, c.Spec.DNSNames...)
			switch {
			case w.name == "gateway" && v.Name == "public-tls":
				if !slices.Contains(c.Spec.Usages, "server auth") {
					t.Errorf("the gateway's public certificate %s is not for server auth", c.Metadata.Name)
				}
			case w.name == "gateway":
				if !slices.Contains(c.Spec.Usages, "client auth") {
					t.Errorf("the gateway's internal certificate %s is not for client auth", c.Metadata.Name)
				}
				for _, n := range names {
					if slices.Contains(peers, n) {
						t.Errorf("the gateway's certificate %s holds %q, a service peer: internal methods would be open to it", c.Metadata.Name, n)
					}
				}
				if c.Spec.IssuerRef.Kind != "Issuer" || m.issuers["Issuer/"+c.Spec.IssuerRef.Name].Spec.CA == nil {
					t.Errorf("the gateway's internal certificate %s is not from the internal CA", c.Metadata.Name)
				}
			default:
				if !slices.Contains(names, w.name) || !slices.Contains(peers, w.name) {
					t.Errorf("%s's certificate %s: names %v, service peers %v; want %q in both", w.name, c.Metadata.Name, names, peers, w.name)
				}
				if !slices.Contains(c.Spec.DNSNames, w.name) {
					t.Errorf("%s's certificate %s lacks the DNS name %q its peers dial", w.name, c.Metadata.Name, w.name)
				}
				if !slices.Contains(c.Spec.Usages, "server auth") || !slices.Contains(c.Spec.Usages, "client auth") {
					t.Errorf("%s's certificate %s: usages %v; want server auth and client auth", w.name, c.Metadata.Name, c.Spec.Usages)
				}
				if c.Spec.IssuerRef.Kind != "Issuer" || m.issuers["Issuer/"+c.Spec.IssuerRef.Name].Spec.CA == nil {
					t.Errorf("%s's certificate %s is not from the internal CA", w.name, c.Metadata.Name)
				}
				for _, other := range sortedKeys(services) {
					if other != w.name && slices.Contains(names, other) {
						t.Errorf("%s's certificate %s also holds %q", w.name, c.Metadata.Name, other)
					}
				}
			}
		}
	}
}
