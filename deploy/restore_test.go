// The one-off restore pod of docs/operations.md.

package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

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
