// The overlays rendered and decoded strictly, and TestOverlays, which runs every check
// over each of them.

package deploy

import (
	"os"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
			m.namespaces = append(m.namespaces, decodeAs[corev1.Namespace](decode, "v1"))
		case "ServiceAccount":
			m.accounts = append(m.accounts, decodeAs[corev1.ServiceAccount](decode, "v1"))
		case "ConfigMap":
			m.configMaps[name] = decodeAs[corev1.ConfigMap](decode, "v1")
		case "Service":
			m.services[name] = decodeAs[corev1.Service](decode, "v1")
		case "StatefulSet":
			m.statefulSets[name] = decodeAs[appsv1.StatefulSet](decode, "apps/v1")
		case "Deployment":
			m.deployments[name] = decodeAs[appsv1.Deployment](decode, "apps/v1")
		case "HorizontalPodAutoscaler":
			m.hpas = append(m.hpas, decodeAs[autoscalingv2.HorizontalPodAutoscaler](decode, "autoscaling/v2"))
		case "PodDisruptionBudget":
			m.pdbs = append(m.pdbs, decodeAs[policyv1.PodDisruptionBudget](decode, "policy/v1"))
		case "NetworkPolicy":
			m.policies = append(m.policies, decodeAs[networkingv1.NetworkPolicy](decode, "networking.k8s.io/v1"))
		case "Certificate":
			m.certificates[name] = decodeAs[certificate](decode, "cert-manager.io/v1")
		case "Issuer", "ClusterIssuer":
			m.issuers[gvk.Kind+"/"+name] = decodeAs[issuer](decode, "cert-manager.io/v1")
		case "Cluster":
			m.clusters[name] = decodeAs[cnpgCluster](decode, "postgresql.cnpg.io/v1")
		case "ScheduledBackup":
			m.scheduledBackups[name] = decodeAs[scheduledBackup](decode, "postgresql.cnpg.io/v1")
		case "ObjectStore":
			m.objectStores[name] = decodeAs[objectStore](decode, "barmancloud.cnpg.io/v1")
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

// decodeAs decodes the object into a new T with decode, which wants apiVersion.
func decodeAs[T any](decode func(apiVersion string, into any), apiVersion string) *T {
	v := new(T)
	decode(apiVersion, v)
	return v
}
