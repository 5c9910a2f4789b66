// The overlays' NetworkPolicies.

package deploy

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

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
