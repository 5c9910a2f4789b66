// The pod checks of every overlay's workloads: security context, resources, image,
// probes and metrics.

package deploy

import (
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// workload is one pod template and what it runs.
type workload struct {
	kind, name string
	pod        *corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var out []workload
	for _, name := range sortedKeys(m.statefulSets) {
		out = append(out, workload{"StatefulSet", name, &m.statefulSets[name].Spec.Template})
	}
	for _, name := range sortedKeys(m.deployments) {
		out = append(out, workload{"Deployment", name, &m.deployments[name].Spec.Template})
	}
	return out
}

// checkWorkloads checks every pod: its security context, resources, image, probes, and
// that its arguments and UMBRA_* settings are flags the real binary accepts.
func checkWorkloads(t *testing.T, m *manifests, bins binaries, image dockerfile) {
	if len(m.workloads()) != len(services)+1 {
		t.Errorf("%d workloads; want the %d services and the gateway", len(m.workloads()), len(services))
	}
	for _, w := range m.workloads() {
		t.Run(w.kind+"/"+w.name, func(t *testing.T) {
			spec := w.pod.Spec
			psc := spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Error("the pod does not set runAsNonRoot")
			}
			if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Error("the pod does not run as a non-zero uid")
			}
			if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("the pod's seccomp profile is not RuntimeDefault")
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the pod mounts a service account token it never uses")
			}
			if !slices.ContainsFunc(m.accounts, func(a *corev1.ServiceAccount) bool {
				return a.Name == spec.ServiceAccountName && a.AutomountServiceAccountToken != nil && !*a.AutomountServiceAccountToken
			}) {
				t.Errorf("service account %q is not in the manifests with automountServiceAccountToken false", spec.ServiceAccountName)
			}
			if spec.HostNetwork || spec.HostPID || spec.HostIPC {
				t.Error("the pod shares a host namespace")
			}
			if len(spec.InitContainers) != 0 || len(spec.Containers) != 1 {
				t.Fatalf("%d containers and %d init containers; want one container", len(spec.Containers), len(spec.InitContainers))
			}
			c := spec.Containers[0]
			checkContainerSecurity(t, c)
			checkResources(t, c)
			checkImage(t, c.Image)
			if len(c.Command) != 0 && !(len(c.Command) == 1 && c.Command[0] == image.entrypoint) {
				t.Errorf("command %q replaces the image's entrypoint %q", c.Command, image.entrypoint)
			}
			settings := checkFlags(t, m, w, c, bins.serveFlags)
			checkFilesMounted(t, c, settings)
			checkMetrics(t, m, w, c, settings)
			if w.name == "gateway" {
				checkGatewayPod(t, c, settings)
			} else {
				checkServicePod(t, w, c, settings, bins.probeFlags, image, m.ha)
			}
		})
	}
}

func checkContainerSecurity(t *testing.T, c corev1.Container) {
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no container securityContext")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Error("runs as uid 0")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root filesystem is not read-only")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) != 0 {
		t.Error("capabilities: want drop [ALL] and nothing added")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("the container's seccomp profile is not RuntimeDefault")
	}
}

func checkResources(t *testing.T, c corev1.Container) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		switch {
		case !okReq || !okLim:
			t.Errorf("%s: want both a request and a limit", r)
		case req.Sign() <= 0:
			t.Errorf("%s request %s is not positive", r, req.String())
		case req.Cmp(lim) > 0:
			t.Errorf("%s request %s exceeds the limit %s", r, req.String(), lim.String())
		}
	}
}

var (
	imageRef   = regexp.MustCompile(`^([a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9._/-]+(:([A-Za-z0-9_.-]+))?(@sha256:[0-9a-f]{64})?$`)
	versionTag = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([.-][A-Za-z0-9.-]+)?$`)
)

// checkImage wants an image pinned by digest or by a version tag, never latest.
func checkImage(t *testing.T, image string) {
	sub := imageRef.FindStringSubmatch(image)
	if sub == nil {
		t.Errorf("image %q is not an image reference", image)
		return
	}
	tag, digest := sub[3], sub[4]
	switch {
	case tag == "latest":
		t.Errorf("image %q uses the latest tag", image)
	case digest == "" && !versionTag.MatchString(tag):
		t.Errorf("image %q is pinned neither by digest nor by a version tag", image)
	}
}

func checkServicePod(t *testing.T, w workload, c corev1.Container, set settings, probeFlags map[string]flagInfo, image dockerfile, ha bool) {
	role := w.name
	if set["tls-client-ca"] == "" || set["tls-require-client-cert"] != "true" {
		t.Error("the service does not require client certificates from the internal CA (--tls-client-ca, --tls-require-client-cert)")
	}
	peers := strings.Split(set["service-peers"], ",")
	for _, s := range sortedKeys(services) {
		if !slices.Contains(peers, s) {
			t.Errorf("--service-peers %q does not accept %s", set["service-peers"], s)
		}
	}
	if slices.Contains(peers, "gateway") {
		t.Error("--service-peers accepts the gateway: internal methods would be open to it")
	}
	if set["admin-token"] == "" {
		t.Error("no admin credential (UMBRA_ADMIN_TOKEN): online backups need it")
	}
	if role == "backup" && set["backup-secret-file"] == "" {
		t.Error("the backup service has no --backup-secret-file")
	}
	_, grpcPort, err := net.SplitHostPort(set["grpc-addr"])
	if err != nil {
		t.Fatalf("--grpc-addr %q: %v", set["grpc-addr"], err)
	}
	if p := namedPort(c, "grpc"); p == nil || strconv.Itoa(int(p.ContainerPort)) != grpcPort {
		t.Errorf("no container port named grpc at --grpc-addr's port %s", grpcPort)
	}
	if ha {
		checkStoreInPostgres(t, w, c, set)
	} else if vm := mountOf(c, filepath.Join(set["data"], role+".db")); vm == nil || vm.Name != "data" {
		t.Errorf("--data %s is not on the volume claim \"data\"", set["data"])
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) == 0 {
			t.Errorf("no %s probe running %s", kind, healthcheckPath)
			continue
		}
		cmd := p.Exec.Command
		if cmd[0] != healthcheckPath || !slices.Contains(image.copied, healthcheckPath) {
			t.Errorf("%s probe runs %s; want %s, which the image holds", kind, cmd[0], healthcheckPath)
		}
		got := map[string]string{}
		for name, f := range probeFlags {
			got[name] = f.def
		}
		for _, a := range cmd[1:] {
			name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if _, known := probeFlags[name]; !ok || !known || !strings.HasPrefix(a, "-") {
				t.Errorf("%s probe argument %q: want --flag=value with a flag of umbra-healthcheck", kind, a)
				continue
			}
			got[name] = value
		}
		// Readiness follows the service's health, which follows its store. Over
		// PostgreSQL liveness asks for the whole server's, which does not: a database
		// failover makes the pods unready, it must not restart every one of them.
		want := services[role]
		if ha && kind == "liveness" {
			want = ""
		}
		if got["service"] != want {
			t.Errorf("%s probe checks the health of %q; want %q", kind, got["service"], want)
		}
		if got["server-name"] != role {
			t.Errorf("%s probe expects the certificate of %q; want %q", kind, got["server-name"], role)
		}
		if _, port, _ := net.SplitHostPort(got["addr"]); port != grpcPort {
			t.Errorf("%s probe dials %s, not the gRPC port %s", kind, got["addr"], grpcPort)
		}
		for _, file := range []string{"ca", "cert", "key"} {
			if vm := mountOf(c, got[file]); vm == nil || vm.Name != "tls" {
				t.Errorf("%s probe's --%s %s is not on the pod's tls volume", kind, file, got[file])
			}
		}
		if p.TimeoutSeconds < 3 {
			t.Errorf("%s probe timeout %ds is shorter than the probe's own 2 s", kind, p.TimeoutSeconds)
		}
	}
}

func checkGatewayPod(t *testing.T, c corev1.Container, set settings) {
	_, httpPort, err := net.SplitHostPort(set["http-addr"])
	if err != nil {
		t.Fatalf("--http-addr %q: %v", set["http-addr"], err)
	}
	https := namedPort(c, "https")
	if https == nil || strconv.Itoa(int(https.ContainerPort)) != httpPort {
		t.Errorf("no container port named https at --http-addr's port %s", httpPort)
	}
	for kind, want := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		p := want.p
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no %s HTTP probe", kind)
			continue
		}
		if p.HTTPGet.Path != want.path || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.String() != "https" {
			t.Errorf("%s probe %s %s on %s; want HTTPS %s on the https port", kind, p.HTTPGet.Scheme, p.HTTPGet.Path, p.HTTPGet.Port.String(), want.path)
		}
	}
	if pub, internal := mountOf(c, set["tls-cert"]), mountOf(c, set["peer-tls-cert"]); pub != nil && internal != nil && pub.Name == internal.Name {
		t.Error("the gateway serves clients with its internal certificate; want the public one")
	}
}

// checkMetrics: every pod, the gateway's included, serves /metrics on --metrics-addr,
// a container port named metrics that only the monitoring namespace reaches, and that
// no Service of the gateway (public in production) exposes.
func checkMetrics(t *testing.T, m *manifests, w workload, c corev1.Container, set settings) {
	_, port, err := net.SplitHostPort(set["metrics-addr"])
	if err != nil {
		t.Errorf("--metrics-addr %q: %v; every pod serves its metrics on a port of its own", set["metrics-addr"], err)
		return
	}
	metrics := namedPort(c, "metrics")
	if metrics == nil || strconv.Itoa(int(metrics.ContainerPort)) != port {
		t.Errorf("no container port named metrics at --metrics-addr's port %s", port)
		return
	}
	for _, api := range []string{"http-addr", "grpc-addr"} {
		if _, p, _ := net.SplitHostPort(set[api]); p == port {
			t.Errorf("--metrics-addr shares its port %s with --%s", port, api)
		}
	}
	scraped := false
	for _, p := range m.policies {
		if !selectorMatches(t, &p.Spec.PodSelector, w.pod.Labels) {
			continue
		}
		for i, rule := range p.Spec.Ingress {
			if !coversPort(rule.Ports, metrics) {
				continue
			}
			if len(rule.From) == 0 {
				t.Errorf("NetworkPolicy %s rule %d opens %s's metrics port to everyone", p.Name, i, w.name)
			}
			for _, peer := range rule.From {
				if peer.IPBlock != nil || peer.NamespaceSelector == nil {
					t.Errorf("NetworkPolicy %s rule %d opens %s's metrics port to others than the monitoring namespace", p.Name, i, w.name)
					continue
				}
				if selectorMatches(t, peer.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": "monitoring"}) {
					scraped = true
				}
			}
		}
	}
	if !scraped {
		t.Errorf("no NetworkPolicy lets the monitoring namespace reach %s's metrics port", w.name)
	}
	if w.name == "gateway" {
		for _, sp := range m.services["gateway"].Spec.Ports {
			if sp.TargetPort.String() == "metrics" || sp.TargetPort.IntValue() == int(metrics.ContainerPort) {
				t.Errorf("the gateway's Service (public in production) exposes the metrics port as %s", sp.Name)
			}
		}
	}
}

func namedPort(c corev1.Container, name string) *corev1.ContainerPort {
	for i, p := range c.Ports {
		if p.Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}
