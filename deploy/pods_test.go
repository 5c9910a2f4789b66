package deploy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/umbra-e2ee/umbra/pkg/tlsconf/tlstest"
)

// TestDevOverlayAsProcesses runs every pod of the dev overlay as a process on loopback,
// with the pod's own arguments and environment (ConfigMap and Secrets): only addresses
// become loopback ports, mounted paths become folders holding what the Secrets would,
// and Service names become localhost. Then the pods' probes must pass, an app can be
// created through the gateway, and every store can be backed up with the operator's
// certificate. It proves the rendered configuration starts, not only that it parses.
func TestDevOverlayAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds umbra and runs six processes")
	}
	runOverlayAsProcesses(t, buildBinaries(t), render(t, "dev"), nil)
}

// runOverlayAsProcesses runs one pod of every workload of m as a process, as
// TestDevOverlayAsProcesses says. dbSecrets are the values of the Secrets the database
// objects make (the HA overlay's umbra-<service>-db), by Secret and key; with them the
// stores are in PostgreSQL, and online backups are refused as they must be.
func runOverlayAsProcesses(t *testing.T, bins binaries, m *manifests, dbSecrets map[string]map[string]string) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "umbra-test-ca")
	adminToken := "deploy-test-admin-credential-0123456789"

	// What each Secret holds: certificates from the test CA named as in production.
	secretFiles := func(name string) map[string]string {
		switch {
		case name == "umbra-backup-secret":
			return map[string]string{"backup-secret": "deploy-test-backup-secret-0123456789abcdef\n"}
		case strings.HasPrefix(name, "umbra-") && strings.HasSuffix(name, "-tls"):
			cn := strings.TrimSuffix(strings.TrimPrefix(name, "umbra-"), "-tls")
			certFile, keyFile := ca.Issue(t, t.TempDir(), cn, "localhost")
			return map[string]string{"tls.crt": readFile(t, certFile), "tls.key": readFile(t, keyFile), "ca.crt": readFile(t, ca.File)}
		}
		t.Fatalf("the test does not know what Secret %s holds", name)
		return nil
	}
	secretValue := func(ref *corev1.SecretKeySelector) string {
		if ref.Name == "umbra-admin" && ref.Key == "admin-token" {
			return adminToken
		}
		if v, ok := dbSecrets[ref.Name][ref.Key]; ok {
			return v
		}
		t.Fatalf("the test does not know Secret %s key %s", ref.Name, ref.Key)
		return ""
	}

	// Loopback ports for each pod's listeners.
	type ports struct{ grpc, http, metrics string }
	pods := map[string]ports{}
	for _, w := range m.workloads() {
		pods[w.name] = ports{freePort(t), freePort(t), freePort(t)}
	}
	// rewrite turns one flag's value in a pod into its value on this machine.
	rewrite := func(role, flagName, value string, mounts map[string]string) string {
		switch flagName {
		case "grpc-addr":
			return "127.0.0.1:" + pods[role].grpc
		case "http-addr":
			return "127.0.0.1:" + pods[role].http
		case "metrics-addr":
			return "127.0.0.1:" + pods[role].metrics
		}
		if peer, ok := strings.CutSuffix(flagName, "-addr"); ok {
			host, _, err := net.SplitHostPort(value)
			if err != nil || host != peer {
				t.Fatalf("--%s=%s does not name the %s Service", flagName, value, peer)
			}
			return "localhost:" + pods[peer].grpc
		}
		for mountPath, local := range mounts {
			if rest, ok := strings.CutPrefix(value, mountPath+"/"); ok {
				return filepath.Join(local, rest)
			}
			if value == mountPath {
				return local
			}
		}
		return value
	}

	type process struct {
		name string
		cmd  *exec.Cmd
		log  *bytes.Buffer
	}
	var procs []*process
	t.Cleanup(func() {
		for _, p := range procs {
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			done := make(chan error, 1)
			go func() { done <- p.cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s exited with %v after SIGTERM", p.name, err)
				}
			case <-time.After(15 * time.Second):
				p.cmd.Process.Kill()
				t.Errorf("%s did not stop within 15 s of SIGTERM", p.name)
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", p.name, p.log)
			}
		}
	})
	mountsOf := map[string]map[string]string{}
	for _, w := range m.workloads() {
		c := w.pod.Spec.Containers[0]
		volumes := map[string]corev1.Volume{}
		for _, v := range w.pod.Spec.Volumes {
			volumes[v.Name] = v
		}
		mounts := map[string]string{}
		for _, vm := range c.VolumeMounts {
			local := filepath.Join(dir, w.name, vm.Name)
			if err := os.MkdirAll(local, 0o700); err != nil {
				t.Fatal(err)
			}
			if v, ok := volumes[vm.Name]; ok && v.Secret != nil {
				for file, content := range secretFiles(v.Secret.SecretName) {
					if err := os.WriteFile(filepath.Join(local, file), []byte(content), 0o400); err != nil {
						t.Fatal(err)
					}
				}
			}
			mounts[path.Clean(vm.MountPath)] = local
		}
		mountsOf[w.name] = mounts

		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		setEnv := func(key, value string) {
			flagName := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(key, "UMBRA_"), "_", "-"))
			env = append(env, key+"="+rewrite(w.name, flagName, value, mounts))
		}
		for _, ef := range c.EnvFrom {
			cm := m.configMaps[ef.ConfigMapRef.Name]
			for _, k := range sortedKeys(cm.Data) {
				setEnv(k, cm.Data[k])
			}
		}
		for _, e := range c.Env {
			value := e.Value
			if e.ValueFrom != nil {
				value = secretValue(e.ValueFrom.SecretKeyRef)
			}
			setEnv(e.Name, value)
		}
		args := []string{"serve", w.name}
		for _, a := range c.Args[2:] {
			name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			args = append(args, "--"+name+"="+rewrite(w.name, name, value, mounts))
		}
		p := &process{name: w.name, cmd: exec.Command(bins.umbra, args...), log: &bytes.Buffer{}}
		p.cmd.Env = env
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}

	// The probes, as the kubelet would run them, until every one passes.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, ca.File)))
	https := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	probe := func(w workload, p *corev1.Probe) error {
		if p.HTTPGet != nil {
			resp, err := https.Get("https://localhost:" + pods[w.name].http + p.HTTPGet.Path)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", p.HTTPGet.Path, resp.Status)
			}
			return nil
		}
		args := []string{"--addr=127.0.0.1:" + pods[w.name].grpc}
		for _, f := range []string{"ca", "cert", "key"} {
			args = append(args, "--"+f+"="+rewrite(w.name, f, bins.probeFlags[f].def, mountsOf[w.name]))
		}
		args = append(args, p.Exec.Command[1:]...)
		out, err := exec.Command(bins.probe, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	// 60 s: six processes (and for the HA overlay five schemas migrating) on a shared,
	// loaded machine (a load average of 15 on two cores was seen) need the room.
	deadline := time.Now().Add(60 * time.Second)
	for _, w := range m.workloads() {
		c := w.pod.Spec.Containers[0]
		for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			for {
				err := probe(w, p)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s's %s probe still fails after 60 s: %v", w.name, kind, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}

	// An app through the gateway, with the admin credential from the Secret.
	req, _ := http.NewRequest(http.MethodPost, "https://localhost:"+pods["gateway"].http+"/v1/apps", strings.NewReader(`{"displayName":"deploy test"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(body.String(), `"apiKey":"uak_`) {
		t.Errorf("CreateApp through the gateway: %s %s", resp.Status, body)
	}

	// Every pod's metrics on its metrics port; none on the gateway's public listener.
	for _, w := range m.workloads() {
		resp, err := http.Get("http://127.0.0.1:" + pods[w.name].metrics + "/metrics")
		if err != nil {
			t.Errorf("%s /metrics: %v", w.name, err)
			continue
		}
		body := new(bytes.Buffer)
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(body.String(), "go_goroutines") {
			t.Errorf("%s /metrics on its metrics port: %s\n%.300s", w.name, resp.Status, body)
		}
	}
	if resp, err := https.Get("https://localhost:" + pods["gateway"].http + "/metrics"); err != nil {
		t.Error(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the gateway's public listener: %s; want 404", resp.Status)
	}

	// Online backups of every store, as docs/operations.md does them: the operator's
	// certificate, a certificate refused without it.
	opCert, opKey := ca.Issue(t, dir, "operator")
	for _, s := range sortedKeys(services) {
		backup := func(cert, key string) (string, error) {
			out, err := exec.Command(bins.umbra, "admin", "backup", "--server", "localhost:"+pods[s].grpc,
				"--tls-ca", ca.File, "--tls-cert", cert, "--tls-key", key, "--admin-token", adminToken,
				"--store", s, "--out", filepath.Join(dir, s+".db.backup")).CombinedOutput()
			return string(out), err
		}
		out, err := backup(opCert, opKey)
		switch {
		case dbSecrets != nil:
			// A store in PostgreSQL is backed up by PostgreSQL's tools (docs/operations.md).
			if err == nil || !strings.Contains(out, "is in PostgreSQL") {
				t.Errorf("umbra admin backup of %s, a store in PostgreSQL: %v\n%s; want it refused, naming PostgreSQL's tools", s, err, out)
			}
		case err != nil || !strings.Contains(out, "bytes written"):
			t.Errorf("umbra admin backup of %s with the operator certificate: %v\n%s", s, err, out)
		}
		if out, err := backup("", ""); err == nil {
			t.Errorf("umbra admin backup of %s without a client certificate worked: %s", s, out)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	return port
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
