// The overlays' StatefulSets, Services and the gateway's replicas.

package deploy

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

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
