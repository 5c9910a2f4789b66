package deploy

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// The stateful services, each the name of its role, its Service, its StatefulSet and
// the certificate name its peers dial and accept; and the name its gRPC health status is
// reported under.
var services = map[string]string{
	"identity":  identityv1.IdentityService_ServiceDesc.ServiceName,
	"card":      cardv1.CardService_ServiceDesc.ServiceName,
	"backup":    backupv1.BackupService_ServiceDesc.ServiceName,
	"group":     groupv1.GroupService_ServiceDesc.ServiceName,
	"messaging": messagingv1.MessagingService_ServiceDesc.ServiceName,
}

var overlays = []string{"dev", "production", "ha"}

// haOverlay is the overlay whose services are stateless replicas over PostgreSQL
// (ha_test.go checks it); the others run each service over its bbolt file.
const haOverlay = "ha"

const (
	healthcheckPath = "/usr/local/bin/umbra-healthcheck"
	umbraPath       = "/usr/local/bin/umbra"
)

// TestOverlays renders every overlay and checks what the deployment relies on.
func TestOverlays(t *testing.T) {
	bins := buildBinaries(t)
	docs, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatalf("the operator's guide: %v", err)
	}
	image := readDockerfile(t)
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			m := render(t, overlay)
			m.ha = overlay == haOverlay
			checkWorkloads(t, m, bins, image)
			if m.ha {
				checkReplicatedServices(t, m)
				checkDatabase(t, m, string(docs))
				checkDatabaseNetworkPolicies(t, m)
			} else {
				checkStatefulServices(t, m)
			}
			checkServices(t, m)
			checkGateway(t, m)
			checkNetworkPolicies(t, m)
			checkSecrets(t, m, string(docs))
			checkNoPlaintextSecrets(t, m)
			if overlay == "production" || overlay == haOverlay {
				checkCertificates(t, m)
			}
		})
	}
}

// manifests are one overlay's objects, decoded.
type manifests struct {
	namespaces   []*corev1.Namespace
	accounts     []*corev1.ServiceAccount
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	deployments  map[string]*appsv1.Deployment
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	pdbs         []*policyv1.PodDisruptionBudget
	policies     []*networkingv1.NetworkPolicy
	certificates map[string]*certificate
	issuers      map[string]*issuer
	// The CloudNativePG objects of the HA overlay (ha_test.go).
	clusters         map[string]*cnpgCluster
	objectStores     map[string]*objectStore
	scheduledBackups map[string]*scheduledBackup
	// raw is every object as rendered, for the checks that read all of them.
	raw []map[string]any
	// ha: the services are Deployments over PostgreSQL (the HA overlay).
	ha bool
}

// certificate and issuer are the fields of cert-manager's v1 Certificate and Issuer
// that the overlays use: decoding is strict, so any other field fails the test (the
// cert-manager module is not a dependency for two kinds).
type certificate struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		SecretName     string `json:"secretName"`
		SecretTemplate *struct {
			Labels map[string]string `json:"labels,omitempty"`
		} `json:"secretTemplate,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		IsCA        bool     `json:"isCA,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef struct {
			Group string `json:"group"`
			Kind  string `json:"kind"`
			Name  string `json:"name"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

type issuer struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

// render builds the overlay with kustomize and decodes every object strictly into its
// API type: a misspelt or misplaced field fails here, not at kubectl apply.
func render(t *testing.T, overlay string) *manifests {
	t.Helper()
	out, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join("k8s", "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	m := &manifests{
		configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		statefulSets: map[string]*appsv1.StatefulSet{}, deployments: map[string]*appsv1.Deployment{},
		certificates: map[string]*certificate{}, issuers: map[string]*issuer{},
		clusters: map[string]*cnpgCluster{}, objectStores: map[string]*objectStore{}, scheduledBackups: map[string]*scheduledBackup{},
	}
	for _, r := range out.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		m.raw = append(m.raw, obj)
		gvk := r.GetGvk()
		apiVersion := gvk.ApiVersion()
		name := r.GetName()
		decode := func(want string, into any) {
			t.Helper()
			if apiVersion != want {
				t.Errorf("%s %s: apiVersion %s, want %s", gvk.Kind, name, apiVersion, want)
			}
			if err := yaml.UnmarshalStrict(b, into); err != nil {
				t.Errorf("%s %s does not decode strictly: %v", gvk.Kind, name, err)
			}
		}
		switch gvk.Kind {
		case "Namespace":
			v := &corev1.Namespace{}
			decode("v1", v)
			m.namespaces = append(m.namespaces, v)
		case "ServiceAccount":
			v := &corev1.ServiceAccount{}
			decode("v1", v)
			m.accounts = append(m.accounts, v)
		case "ConfigMap":
			v := &corev1.ConfigMap{}
			decode("v1", v)
			m.configMaps[name] = v
		case "Service":
			v := &corev1.Service{}
			decode("v1", v)
			m.services[name] = v
		case "StatefulSet":
			v := &appsv1.StatefulSet{}
			decode("apps/v1", v)
			m.statefulSets[name] = v
		case "Deployment":
			v := &appsv1.Deployment{}
			decode("apps/v1", v)
			m.deployments[name] = v
		case "HorizontalPodAutoscaler":
			v := &autoscalingv2.HorizontalPodAutoscaler{}
			decode("autoscaling/v2", v)
			m.hpas = append(m.hpas, v)
		case "PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			decode("policy/v1", v)
			m.pdbs = append(m.pdbs, v)
		case "NetworkPolicy":
			v := &networkingv1.NetworkPolicy{}
			decode("networking.k8s.io/v1", v)
			m.policies = append(m.policies, v)
		case "Certificate":
			v := &certificate{}
			decode("cert-manager.io/v1", v)
			m.certificates[name] = v
		case "Issuer", "ClusterIssuer":
			v := &issuer{}
			decode("cert-manager.io/v1", v)
			m.issuers[gvk.Kind+"/"+name] = v
		case "Cluster":
			v := &cnpgCluster{}
			decode("postgresql.cnpg.io/v1", v)
			m.clusters[name] = v
		case "ScheduledBackup":
			v := &scheduledBackup{}
			decode("postgresql.cnpg.io/v1", v)
			m.scheduledBackups[name] = v
		case "ObjectStore":
			v := &objectStore{}
			decode("barmancloud.cnpg.io/v1", v)
			m.objectStores[name] = v
		case "Secret":
			// Secrets are made by documented commands or by cert-manager, never kept here.
			t.Errorf("Secret %s is in the manifests: secrets are never committed", name)
		default:
			t.Errorf("%s %s: a kind this test does not know; teach it the kind's invariants", gvk.Kind, name)
		}
		if ns := r.GetNamespace(); gvk.Kind != "Namespace" && gvk.Kind != "ClusterIssuer" && ns != "umbra" {
			t.Errorf("%s %s is in namespace %q, want umbra", gvk.Kind, name, ns)
		}
	}
	if len(m.namespaces) != 1 || m.namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("want one Namespace enforcing the restricted Pod Security Standard")
	}
	return m
}

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

// settings are a container's effective `umbra serve` flags: the ConfigMap's and env's
// UMBRA_* variables, overridden by its arguments.
type settings map[string]string

// checkFlags checks that the container runs `umbra serve <its role>` with flags that
// command accepts, and that every UMBRA_* variable it gets names one of them (an
// unknown variable is silently ignored by the binary).
func checkFlags(t *testing.T, m *manifests, w workload, c corev1.Container, serveFlags map[string]map[string]flagInfo) settings {
	if len(c.Args) < 2 || c.Args[0] != "serve" {
		t.Fatalf("args %q: want serve <role> ...", c.Args)
	}
	role := c.Args[1]
	if role != w.name {
		t.Errorf("the %s %s runs role %q", w.kind, w.name, role)
	}
	flags, ok := serveFlags[role]
	if !ok {
		t.Fatalf("umbra serve has no role %q", role)
	}
	byEnv := map[string]string{}
	for name := range flags {
		byEnv["UMBRA_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = name
	}
	set := settings{}
	env := func(key, value, from string) {
		name, ok := byEnv[key]
		if !ok {
			t.Errorf("%s sets %s, which is no flag of umbra serve %s", from, key, role)
			return
		}
		set[name] = value
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Errorf("envFrom other than a ConfigMap: %+v", ef)
			continue
		}
		cm, ok := m.configMaps[ef.ConfigMapRef.Name]
		if !ok {
			t.Errorf("envFrom ConfigMap %s is not in the manifests", ef.ConfigMapRef.Name)
			continue
		}
		for _, k := range sortedKeys(cm.Data) {
			env(k, cm.Data[k], "ConfigMap "+cm.Name)
		}
	}
	for _, e := range c.Env {
		value := e.Value
		if e.ValueFrom != nil {
			value = "(from " + e.ValueFrom.String() + ")"
		}
		env(e.Name, value, "env")
	}
	args := c.Args[2:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("argument %q is not a flag (umbra serve takes no other arguments)", a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f, ok := flags[name]
		if !ok {
			t.Errorf("flag --%s is not a flag of umbra serve %s", name, role)
			continue
		}
		if !hasValue {
			if f.isBool {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				t.Errorf("flag --%s has no value", name)
			}
		}
		set[name] = value
	}
	// The TLS every non-loopback listener of umbra serve needs, and never --insecure.
	for _, need := range []string{"tls-cert", "tls-key", "peer-tls-ca", "peer-tls-cert", "peer-tls-key"} {
		if set[need] == "" {
			t.Errorf("--%s is not set", need)
		}
	}
	if v := set["insecure"]; v != "" && v != "false" {
		t.Errorf("--insecure is %s", v)
	}
	for _, s := range sortedKeys(services) {
		if set[s+"-addr"] == "" && role != "identity" {
			t.Errorf("--%s-addr is not set", s)
		}
	}
	return set
}

// checkFilesMounted checks that every file flag points into a mounted volume.
func checkFilesMounted(t *testing.T, c corev1.Container, set settings) {
	for _, name := range []string{"tls-cert", "tls-key", "tls-client-ca", "peer-tls-ca", "peer-tls-cert", "peer-tls-key", "backup-secret-file"} {
		file := set[name]
		if file == "" {
			continue
		}
		if mountOf(c, file) == nil {
			t.Errorf("--%s=%s is in no mounted volume", name, file)
		}
	}
}

func mountOf(c corev1.Container, file string) *corev1.VolumeMount {
	for i, vm := range c.VolumeMounts {
		if strings.HasPrefix(path.Clean(file), path.Clean(vm.MountPath)+"/") {
			return &c.VolumeMounts[i]
		}
	}
	return nil
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

// checkStatefulServices: one StatefulSet of one replica per service, each with its
// volume claim.
func checkStatefulServices(t *testing.T, m *manifests) {
	if got, want := sortedKeys(m.statefulSets), sortedKeys(services); !slices.Equal(got, want) {
		t.Errorf("StatefulSets %v; want one per service %v", got, want)
	}
	for name, ss := range m.statefulSets {
		if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
			t.Errorf("StatefulSet %s: replicas must be 1 (one writer per bbolt file)", name)
		}
		if len(ss.Spec.VolumeClaimTemplates) == 0 {
			t.Errorf("StatefulSet %s has no volumeClaimTemplate", name)
		}
		for _, vct := range ss.Spec.VolumeClaimTemplates {
			if q, ok := vct.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
				t.Errorf("StatefulSet %s: claim %s requests no storage", name, vct.Name)
			}
			if !slices.Contains(vct.Spec.AccessModes, corev1.ReadWriteOnce) {
				t.Errorf("StatefulSet %s: claim %s is not ReadWriteOnce", name, vct.Name)
			}
		}
		if svc, ok := m.services[ss.Spec.ServiceName]; !ok || !selects(svc.Spec.Selector, ss.Spec.Template.Labels) {
			t.Errorf("StatefulSet %s: its serviceName %q is no Service selecting its pods", name, ss.Spec.ServiceName)
		}
		sel, err := metav1.LabelSelectorAsSelector(ss.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(ss.Spec.Template.Labels)) {
			t.Errorf("StatefulSet %s: its selector does not match its pods", name)
		}
	}
}

// checkServices: every workload is reachable through a Service whose gRPC port is named
// grpc with appProtocol grpc, and each peer address names such a Service.
func checkServices(t *testing.T, m *manifests) {
	for _, w := range m.workloads() {
		svc, ok := m.services[w.name]
		if !ok || !selects(svc.Spec.Selector, w.pod.Labels) {
			t.Errorf("no Service %s selecting the %s pods", w.name, w.name)
			continue
		}
		var grpc *corev1.ServicePort
		for i, p := range svc.Spec.Ports {
			if p.Name == "grpc" {
				grpc = &svc.Spec.Ports[i]
			}
		}
		if grpc == nil || grpc.AppProtocol == nil || *grpc.AppProtocol != "grpc" || grpc.TargetPort.String() != "grpc" {
			t.Errorf("Service %s: want a port named grpc, appProtocol grpc, targeting the container port grpc", w.name)
			continue
		}
		if namedPort(w.pod.Spec.Containers[0], "grpc") == nil {
			t.Errorf("Service %s targets port grpc, which its pods do not name", w.name)
		}
		// Every peer dials <service>:<port> of this Service.
		for _, cm := range m.configMaps {
			addr, ok := cm.Data["UMBRA_"+strings.ToUpper(w.name)+"_ADDR"]
			if !ok {
				continue
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil || host != w.name || port != strconv.Itoa(int(grpc.Port)) {
				t.Errorf("peers dial the %s service at %q; its Service is %s:%d", w.name, addr, w.name, grpc.Port)
			}
		}
	}
}

// checkGateway: at least two replicas, an autoscaler that keeps at least two, and a
// disruption budget.
func checkGateway(t *testing.T, m *manifests) {
	d, ok := m.deployments["gateway"]
	if !ok {
		t.Fatal("no gateway Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("the gateway Deployment has fewer than 2 replicas")
	}
	var hpa *autoscalingv2.HorizontalPodAutoscaler
	for _, h := range m.hpas {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == "gateway" && h.Spec.ScaleTargetRef.APIVersion == "apps/v1" {
			hpa = h
		}
	}
	switch {
	case hpa == nil:
		t.Error("no HorizontalPodAutoscaler for the gateway")
	case hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2:
		t.Error("the gateway's autoscaler may go below 2 replicas")
	case hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas:
		t.Error("the gateway's autoscaler has maxReplicas below minReplicas")
	case len(hpa.Spec.Metrics) == 0:
		t.Error("the gateway's autoscaler has no metric")
	}
	covered := false
	for _, pdb := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		if pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.IntValue() >= 1 || pdb.Spec.MaxUnavailable != nil {
			covered = true
		}
	}
	if !covered {
		t.Error("no PodDisruptionBudget keeps a gateway pod available")
	}
	for _, s := range sortedKeys(services) {
		// A one-replica set cannot keep a pod available through a drain: a budget
		// would either block every drain or allow every eviction.
		ss := m.statefulSets[s]
		if ss == nil {
			continue // a Deployment of the HA overlay: checkReplicatedServices
		}
		for _, pdb := range m.pdbs {
			sel, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if sel != nil && sel.Matches(labels.Set(ss.Spec.Template.Labels)) && pdb.Spec.MinAvailable != nil {
				t.Errorf("PodDisruptionBudget %s sets minAvailable on the one-replica %s: node drains would block", pdb.Name, s)
			}
		}
	}
}

// checkNetworkPolicies: ingress is denied by default, and the services' gRPC ports are
// open to the gateway and the services only, with every one of them able to reach
// every service.
func checkNetworkPolicies(t *testing.T, m *manifests) {
	defaultDeny := false
	for _, p := range m.policies {
		if len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(p.Spec.Ingress) == 0 {
			defaultDeny = true
		}
	}
	if !defaultDeny {
		t.Error("no NetworkPolicy denies ingress by default")
	}
	pods := map[string]*corev1.PodTemplateSpec{}
	for _, w := range m.workloads() {
		pods[w.name] = w.pod
	}
	callers := append(sortedKeys(services), "gateway")
	for _, s := range sortedKeys(services) {
		target := pods[s]
		if target == nil {
			continue
		}
		grpcPort := namedPort(target.Spec.Containers[0], "grpc")
		if grpcPort == nil {
			continue
		}
		reached := map[string]bool{}
		for _, p := range m.policies {
			if !selectorMatches(t, &p.Spec.PodSelector, target.Labels) {
				continue
			}
			for i, rule := range p.Spec.Ingress {
				if !coversPort(rule.Ports, grpcPort) {
					continue
				}
				if len(rule.From) == 0 {
					t.Errorf("NetworkPolicy %s rule %d opens %s's gRPC port to everyone", p.Name, i, s)
				}
				for _, peer := range rule.From {
					if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil {
						t.Errorf("NetworkPolicy %s rule %d opens %s's gRPC port beyond this namespace's pods", p.Name, i, s)
						continue
					}
					for name, pod := range pods {
						if selectorMatches(t, peer.PodSelector, pod.Labels) {
							if !slices.Contains(callers, name) {
								t.Errorf("NetworkPolicy %s lets %s reach %s's gRPC port", p.Name, name, s)
							}
							reached[name] = true
						}
					}
					if selectorMatches(t, peer.PodSelector, map[string]string{"app.kubernetes.io/name": "debug-shell"}) {
						t.Errorf("NetworkPolicy %s rule %d lets pods that are not Umbra's reach %s's gRPC port", p.Name, i, s)
					}
				}
			}
		}
		for _, c := range callers {
			if !reached[c] {
				t.Errorf("no NetworkPolicy lets %s reach %s's gRPC port", c, s)
			}
		}
	}
}

func coversPort(ports []networkingv1.NetworkPolicyPort, p *corev1.ContainerPort) bool {
	if len(ports) == 0 {
		return true
	}
	for _, np := range ports {
		if np.Port == nil || np.Port.String() == p.Name || np.Port.IntValue() == int(p.ContainerPort) {
			return true
		}
	}
	return false
}

func selectorMatches(t *testing.T, s *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("label selector %v: %v", s, err)
		return false
	}
	return sel.Matches(labels.Set(l))
}

func selects(selector, l map[string]string) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(l))
}

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

// TestRestorePod checks the one-off restore pod of every store: it decodes strictly,
// mounts the claim the StatefulSet made, and runs `umbra admin restore` with flags the
// binary accepts and the data folder the service uses.
func TestRestorePod(t *testing.T) {
	bins := buildBinaries(t)
	b, err := os.ReadFile(filepath.Join("k8s", "restore", "restore-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	prod := render(t, "production")
	for _, store := range sortedKeys(services) {
		t.Run(store, func(t *testing.T) {
			pod := &corev1.Pod{}
			if err := yaml.UnmarshalStrict(bytes.ReplaceAll(b, []byte("STORE"), []byte(store)), pod); err != nil {
				t.Fatalf("does not decode strictly: %v", err)
			}
			ss := prod.statefulSets[store]
			if ss == nil {
				t.Fatalf("no StatefulSet %s", store)
			}
			claim := ss.Spec.VolumeClaimTemplates[0].Name + "-" + ss.Name + "-0"
			var data *corev1.Volume
			for i, v := range pod.Spec.Volumes {
				if v.PersistentVolumeClaim != nil {
					data = &pod.Spec.Volumes[i]
				}
			}
			if data == nil || data.PersistentVolumeClaim.ClaimName != claim {
				t.Errorf("the pod does not mount the claim %s", claim)
			}
			if psc := pod.Spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
				psc.FSGroup == nil || *psc.FSGroup != *ss.Spec.Template.Spec.SecurityContext.FSGroup {
				t.Error("the pod does not run as non-root with the service's fsGroup")
			}
			for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
				checkContainerSecurity(t, c)
				checkResources(t, c)
				checkImage(t, c.Image)
			}
			c := pod.Spec.Containers[0]
			if len(c.Args) < 2 || c.Args[0] != "admin" || c.Args[1] != "restore" {
				t.Fatalf("args %q: want admin restore ...", c.Args)
			}
			flags := helpFlags(t, bins.umbra, "admin", "restore", "-h")
			got := map[string]string{}
			for _, a := range c.Args[2:] {
				name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if _, known := flags[name]; !ok || !known {
					t.Errorf("argument %q: want --flag=value with a flag of umbra admin restore", a)
				}
				got[name] = value
			}
			var dataDir string
			for k, v := range prod.configMaps {
				if strings.HasPrefix(k, "umbra-config") {
					dataDir = v.Data["UMBRA_DATA"]
				}
			}
			if got["store"] != store || got["data"] != dataDir || mountOf(c, got["from"]) == nil {
				t.Errorf("restores --store %s --data %s --from %s; want store %s into %s from a mounted file", got["store"], got["data"], got["from"], store, dataDir)
			}
			if vm := mountOf(c, filepath.Join(got["data"], store+".db")); vm == nil || vm.Name != data.Name {
				t.Errorf("--data %s is not on the claim", got["data"])
			}
		})
	}
}
