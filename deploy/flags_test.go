// The `umbra serve` flags and UMBRA_* settings the manifests give each container.

package deploy

import (
	"path"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

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
