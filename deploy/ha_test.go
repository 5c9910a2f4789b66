package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The checks of the HA overlay (deploy/k8s/overlays/ha): every service and the gateway
// a Deployment of several replicas with a disruption budget and spread over nodes and
// zones, the services' state in PostgreSQL reached through Secrets, and PostgreSQL a
// CloudNativePG cluster of three instances with synchronous replication, backed up.

// cnpgCluster, cnpgRole, objectStore and scheduledBackup are the fields of
// CloudNativePG's Cluster and ScheduledBackup (postgresql.cnpg.io/v1) and of the Barman
// Cloud plugin's ObjectStore (barmancloud.cnpg.io/v1) that the overlay uses: decoding is
// strict, so any other field fails the test until the test knows it (the operator's Go
// module is not a dependency for three kinds).
type cnpgCluster struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Instances             int    `json:"instances"`
		ImageName             string `json:"imageName,omitempty"`
		PrimaryUpdateStrategy string `json:"primaryUpdateStrategy,omitempty"`
		PrimaryUpdateMethod   string `json:"primaryUpdateMethod,omitempty"`
		EnableSuperuserAccess *bool  `json:"enableSuperuserAccess,omitempty"`
		// The older form of synchronous replication (quorum between the two).
		MinSyncReplicas int `json:"minSyncReplicas,omitempty"`
		MaxSyncReplicas int `json:"maxSyncReplicas,omitempty"`
		PostgreSQL      struct {
			Synchronous *struct {
				Method         string `json:"method"`
				Number         int    `json:"number"`
				DataDurability string `json:"dataDurability,omitempty"`
				FailoverQuorum bool   `json:"failoverQuorum,omitempty"`
			} `json:"synchronous,omitempty"`
			Parameters map[string]string `json:"parameters,omitempty"`
		} `json:"postgresql"`
		Bootstrap struct {
			InitDB *struct {
				Database               string   `json:"database"`
				Owner                  string   `json:"owner"`
				DataChecksums          bool     `json:"dataChecksums,omitempty"`
				Secret                 *ref     `json:"secret,omitempty"`
				PostInitApplicationSQL []string `json:"postInitApplicationSQL,omitempty"`
			} `json:"initdb,omitempty"`
		} `json:"bootstrap"`
		Managed *struct {
			Roles []cnpgRole `json:"roles"`
		} `json:"managed,omitempty"`
		Certificates *struct {
			ServerTLSSecret      string `json:"serverTLSSecret,omitempty"`
			ServerCASecret       string `json:"serverCASecret,omitempty"`
			ClientCASecret       string `json:"clientCASecret,omitempty"`
			ReplicationTLSSecret string `json:"replicationTLSSecret,omitempty"`
		} `json:"certificates,omitempty"`
		Storage struct {
			Size         string `json:"size"`
			StorageClass string `json:"storageClass,omitempty"`
		} `json:"storage"`
		WALStorage *struct {
			Size         string `json:"size"`
			StorageClass string `json:"storageClass,omitempty"`
		} `json:"walStorage,omitempty"`
		Resources corev1.ResourceRequirements `json:"resources"`
		Affinity  struct {
			EnablePodAntiAffinity *bool  `json:"enablePodAntiAffinity,omitempty"`
			PodAntiAffinityType   string `json:"podAntiAffinityType,omitempty"`
			TopologyKey           string `json:"topologyKey,omitempty"`
		} `json:"affinity"`
		TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
		EnablePDB                 *bool                             `json:"enablePDB,omitempty"`
		Plugins                   []struct {
			Name          string            `json:"name"`
			Enabled       *bool             `json:"enabled,omitempty"`
			IsWALArchiver bool              `json:"isWALArchiver,omitempty"`
			Parameters    map[string]string `json:"parameters,omitempty"`
		} `json:"plugins,omitempty"`
	} `json:"spec"`
}

type ref struct {
	Name string `json:"name"`
}

type cnpgRole struct {
	Name            string   `json:"name"`
	Ensure          string   `json:"ensure,omitempty"`
	Comment         string   `json:"comment,omitempty"`
	Login           bool     `json:"login"`
	Superuser       bool     `json:"superuser"`
	CreateDB        bool     `json:"createdb"`
	CreateRole      bool     `json:"createrole"`
	Replication     bool     `json:"replication"`
	BypassRLS       bool     `json:"bypassrls,omitempty"`
	ConnectionLimit int      `json:"connectionLimit,omitempty"`
	InRoles         []string `json:"inRoles,omitempty"`
	PasswordSecret  *ref     `json:"passwordSecret,omitempty"`
	DisablePassword bool     `json:"disablePassword,omitempty"`
}

type secretKey struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

type objectStore struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		RetentionPolicy string `json:"retentionPolicy,omitempty"`
		Configuration   struct {
			DestinationPath string `json:"destinationPath"`
			EndpointURL     string `json:"endpointURL,omitempty"`
			S3Credentials   *struct {
				AccessKeyID        *secretKey `json:"accessKeyId,omitempty"`
				SecretAccessKey    *secretKey `json:"secretAccessKey,omitempty"`
				InheritFromIAMRole bool       `json:"inheritFromIAMRole,omitempty"`
			} `json:"s3Credentials,omitempty"`
			WAL *struct {
				Compression string `json:"compression,omitempty"`
			} `json:"wal,omitempty"`
			Data *struct {
				Compression string `json:"compression,omitempty"`
			} `json:"data,omitempty"`
		} `json:"configuration"`
	} `json:"spec"`
}

type scheduledBackup struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Schedule             string `json:"schedule"`
		BackupOwnerReference string `json:"backupOwnerReference,omitempty"`
		Cluster              ref    `json:"cluster"`
		Method               string `json:"method,omitempty"`
		PluginConfiguration  *struct {
			Name string `json:"name"`
		} `json:"pluginConfiguration,omitempty"`
		Immediate *bool `json:"immediate,omitempty"`
	} `json:"spec"`
}

const barmanPlugin = "barman-cloud.cloudnative-pg.io"

// checkReplicatedServices: no StatefulSet; every service and the gateway a Deployment
// of at least two replicas, with a disruption budget of its own that lets a drain take
// one pod and keeps one, and spread over nodes (required) and zones.
func checkReplicatedServices(t *testing.T, m *manifests) {
	if len(m.statefulSets) != 0 {
		t.Errorf("StatefulSets %v in the HA overlay; want every service a Deployment", sortedKeys(m.statefulSets))
	}
	names := append(sortedKeys(services), "gateway")
	for _, name := range names {
		d := m.deployments[name]
		if d == nil {
			t.Errorf("no Deployment %s", name)
			continue
		}
		pod := d.Spec.Template.Labels
		replicas := int32(1)
		if d.Spec.Replicas != nil {
			replicas = *d.Spec.Replicas
		}
		if replicas < 2 {
			t.Errorf("Deployment %s: %d replica(s); want at least 2", name, replicas)
		}
		if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(pod)) {
			t.Errorf("Deployment %s: its selector does not match its pods", name)
		}
		// Whose pods a selector takes: only this Deployment's.
		others := func(s *metav1.LabelSelector) []string {
			var o []string
			for _, other := range names {
				if od := m.deployments[other]; other != name && od != nil && selectorMatches(t, s, od.Spec.Template.Labels) {
					o = append(o, other)
				}
			}
			return o
		}
		budgets := 0
		for _, pdb := range m.pdbs {
			if !selectorMatches(t, pdb.Spec.Selector, pod) {
				continue
			}
			budgets++
			if o := others(pdb.Spec.Selector); len(o) > 0 {
				t.Errorf("PodDisruptionBudget %s covers %s and also %v", pdb.Name, name, o)
			}
			switch {
			case pdb.Spec.MaxUnavailable != nil && pdb.Spec.MinAvailable == nil:
				if v := pdb.Spec.MaxUnavailable; v.Type != 0 || v.IntValue() < 1 || int32(v.IntValue()) >= replicas {
					t.Errorf("PodDisruptionBudget %s: maxUnavailable %s of %d replicas; want from 1 to %d, so a drain can take a pod and never all", pdb.Name, v.String(), replicas, replicas-1)
				}
			case pdb.Spec.MinAvailable != nil && pdb.Spec.MaxUnavailable == nil:
				if v := pdb.Spec.MinAvailable; v.Type != 0 || v.IntValue() < 1 || int32(v.IntValue()) >= replicas {
					t.Errorf("PodDisruptionBudget %s: minAvailable %s of %d replicas; want from 1 to %d, so a drain can take a pod and never all", pdb.Name, v.String(), replicas, replicas-1)
				}
			default:
				t.Errorf("PodDisruptionBudget %s: want one of minAvailable and maxUnavailable", pdb.Name)
			}
		}
		if budgets != 1 {
			t.Errorf("Deployment %s: %d PodDisruptionBudgets select its pods; want one", name, budgets)
		}
		spread := map[string]corev1.UnsatisfiableConstraintAction{}
		for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
			if c.LabelSelector == nil || !selectorMatches(t, c.LabelSelector, pod) {
				t.Errorf("Deployment %s: the spread over %s does not count its own pods", name, c.TopologyKey)
				continue
			}
			if o := others(c.LabelSelector); len(o) > 0 {
				t.Errorf("Deployment %s: the spread over %s counts the pods of %v too", name, c.TopologyKey, o)
			}
			if c.MaxSkew != 1 {
				t.Errorf("Deployment %s: the spread over %s has maxSkew %d; want 1", name, c.TopologyKey, c.MaxSkew)
			}
			spread[c.TopologyKey] = c.WhenUnsatisfiable
		}
		if spread[corev1.LabelHostname] != corev1.DoNotSchedule {
			t.Errorf("Deployment %s: its replicas are not required on different nodes (a spread over %s, DoNotSchedule)", name, corev1.LabelHostname)
		}
		if _, ok := spread[corev1.LabelTopologyZone]; !ok {
			t.Errorf("Deployment %s: its replicas are not spread over zones (%s)", name, corev1.LabelTopologyZone)
		}
	}
}

// checkStoreInPostgres: a service of the HA overlay keeps nothing on disk (no volume
// but Secrets, no --data) and reads its connection string from a Secret (UMBRA_STORE),
// never from a flag, a literal or the ConfigMap, where a password would be in plain
// sight.
func checkStoreInPostgres(t *testing.T, w workload, c corev1.Container, set settings) {
	if set["data"] != "" {
		t.Errorf("--data is %q: the services keep their state in PostgreSQL, no bbolt file", set["data"])
	}
	for _, v := range w.pod.Spec.Volumes {
		if v.Secret == nil {
			t.Errorf("volume %s is no Secret: the services over PostgreSQL keep nothing on disk", v.Name)
		}
	}
	for _, a := range c.Args {
		if name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); strings.HasPrefix(a, "-") && name == "store" {
			t.Errorf("argument %q: the connection string comes from a Secret (UMBRA_STORE), never from the arguments", a)
		}
	}
	if secretOfStore(c) == "" {
		t.Error("UMBRA_STORE is not read from a Secret (env valueFrom secretKeyRef)")
	}
}

// secretOfStore is the Secret a container's UMBRA_STORE comes from, or "" if it comes
// from none (or from elsewhere too).
func secretOfStore(c corev1.Container) string {
	name := ""
	for _, e := range c.Env {
		if e.Name != "UMBRA_STORE" {
			continue
		}
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			return ""
		}
		if name != "" {
			return "" // set twice
		}
		name = e.ValueFrom.SecretKeyRef.Name
	}
	return name
}

// checkDatabase: one CloudNativePG cluster of three instances on three nodes,
// synchronous replication on, no superuser over the network, one login role per service
// whose password is the Secret its UMBRA_STORE comes from, each service's schema owned
// by its role, a server certificate from the internal CA, and continuous backups.
func checkDatabase(t *testing.T, m *manifests, docs string) {
	if len(m.clusters) != 1 {
		t.Fatalf("%d CloudNativePG Clusters; want one", len(m.clusters))
	}
	name := sortedKeys(m.clusters)[0]
	c := m.clusters[name].Spec
	if c.Instances != 3 {
		t.Errorf("Cluster %s: %d instances; want 3 (a primary and two standbys)", name, c.Instances)
	}
	switch s := c.PostgreSQL.Synchronous; {
	case s != nil:
		if s.Number < 1 || s.Number >= c.Instances || (s.Method != "any" && s.Method != "first") {
			t.Errorf("Cluster %s: synchronous %+v; want method any or first and from 1 to %d standbys", name, *s, c.Instances-1)
		}
		if s.DataDurability != "" && s.DataDurability != "required" {
			t.Errorf("Cluster %s: synchronous dataDurability %q: a commit may then be acknowledged that no standby has", name, s.DataDurability)
		}
		if !s.FailoverQuorum {
			t.Errorf("Cluster %s: synchronous without failoverQuorum: a failover may promote the standby that lacks the latest acknowledged commit", name)
		}
		if c.MinSyncReplicas != 0 || c.MaxSyncReplicas != 0 {
			t.Errorf("Cluster %s: both synchronous and minSyncReplicas/maxSyncReplicas", name)
		}
	case c.MinSyncReplicas >= 1 && c.MaxSyncReplicas >= c.MinSyncReplicas && c.MaxSyncReplicas < c.Instances:
	default:
		t.Errorf("Cluster %s: synchronous replication is off: an acknowledged write could be lost in a failover", name)
	}
	if c.PostgreSQL.Parameters["synchronous_commit"] != "" && c.PostgreSQL.Parameters["synchronous_commit"] != "on" && c.PostgreSQL.Parameters["synchronous_commit"] != "remote_apply" {
		t.Errorf("Cluster %s: synchronous_commit %q does not wait for the standby", name, c.PostgreSQL.Parameters["synchronous_commit"])
	}
	if c.Affinity.EnablePodAntiAffinity != nil && !*c.Affinity.EnablePodAntiAffinity ||
		c.Affinity.PodAntiAffinityType != "required" || c.Affinity.TopologyKey != corev1.LabelHostname {
		t.Errorf("Cluster %s: affinity %+v; want the instances required on different nodes", name, c.Affinity)
	}
	if c.EnableSuperuserAccess == nil || *c.EnableSuperuserAccess {
		t.Errorf("Cluster %s: enableSuperuserAccess is not false: the postgres superuser would log in over the network", name)
	}
	init := c.Bootstrap.InitDB
	if init == nil {
		t.Fatalf("Cluster %s: no bootstrap.initdb", name)
	}
	if !init.DataChecksums {
		t.Errorf("Cluster %s: initdb without dataChecksums (docs/storage-postgres.md relies on page checksums)", name)
	}
	roles := map[string]cnpgRole{}
	if c.Managed != nil {
		for _, r := range c.Managed.Roles {
			roles[r.Name] = r
		}
	}
	bySecret := map[string]string{}
	for _, s := range sortedKeys(services) {
		role := "umbra_" + s
		d := m.deployments[s]
		if d == nil || len(d.Spec.Template.Spec.Containers) != 1 {
			continue // reported by checkReplicatedServices
		}
		secret := secretOfStore(d.Spec.Template.Spec.Containers[0])
		if other, ok := bySecret[secret]; ok && secret != "" {
			t.Errorf("%s and %s read their store from one Secret %s: one role and one password per service", other, s, secret)
		}
		bySecret[secret] = s
		r, ok := roles[role]
		switch {
		case !ok:
			t.Errorf("Cluster %s: no managed role %s for the %s service", name, role, s)
			continue
		case r.Ensure != "" && r.Ensure != "present", !r.Login:
			t.Errorf("Cluster %s: role %s does not log in", name, role)
		case r.Superuser || r.CreateDB || r.CreateRole || r.Replication || r.BypassRLS || len(r.InRoles) > 0:
			t.Errorf("Cluster %s: role %s has rights beyond its schema: %+v", name, role, r)
		case r.PasswordSecret == nil || r.DisablePassword:
			t.Errorf("Cluster %s: role %s has no password Secret", name, role)
		case r.PasswordSecret.Name != secret:
			t.Errorf("Cluster %s: role %s's password is in Secret %s, but the %s service reads its store from %q", name, role, r.PasswordSecret.Name, s, secret)
		}
		schema := fmt.Sprintf("CREATE SCHEMA %s AUTHORIZATION %s", role, role)
		if !slices.Contains(init.PostInitApplicationSQL, schema) {
			t.Errorf("Cluster %s: the bootstrap does not make the schema %s owned by its role (%q)", name, role, schema)
		}
	}
	if !slices.Contains(init.PostInitApplicationSQL, "REVOKE ALL ON SCHEMA public FROM PUBLIC") {
		t.Errorf("Cluster %s: the schema public stays open to every role", name)
	}
	// The services verify the server with the internal CA they mount.
	if cs := c.Certificates; cs == nil || cs.ServerTLSSecret == "" {
		t.Errorf("Cluster %s: no server certificate from the internal CA (certificates.serverTLSSecret)", name)
	} else {
		var cert *certificate
		for _, ct := range m.certificates {
			if ct.Spec.SecretName == cs.ServerTLSSecret {
				cert = ct
			}
		}
		switch {
		case cert == nil:
			t.Errorf("Cluster %s: no Certificate makes its server certificate %s", name, cs.ServerTLSSecret)
		case !slices.Contains(cert.Spec.DNSNames, name+"-rw"):
			t.Errorf("Certificate %s lacks the name %s-rw the services dial", cert.Metadata.Name, name)
		case cert.Spec.IssuerRef.Kind != "Issuer" || m.issuers["Issuer/"+cert.Spec.IssuerRef.Name] == nil || m.issuers["Issuer/"+cert.Spec.IssuerRef.Name].Spec.CA == nil:
			t.Errorf("Certificate %s is not from the internal CA whose ca.crt the services mount", cert.Metadata.Name)
		case cs.ServerCASecret != cs.ServerTLSSecret:
			t.Errorf("Cluster %s: serverCASecret %s is not the server certificate's Secret, whose ca.crt is the internal CA", name, cs.ServerCASecret)
		}
	}
	// The connection string the operator is told to put in each Secret verifies that
	// certificate and dials the primary's Service.
	for _, want := range []string{"@" + name + "-rw:5432/", "sslmode=verify-full", "sslrootcert=/etc/umbra/tls/ca.crt"} {
		if !strings.Contains(docs, want) {
			t.Errorf("docs/operations.md gives no connection string with %q", want)
		}
	}
	checkDatabaseBackups(t, m, name, docs)
}

// checkDatabaseBackups: the WAL archived and base backups taken on a schedule, into an
// object store whose credentials come from a Secret.
func checkDatabaseBackups(t *testing.T, m *manifests, cluster, docs string) {
	c := m.clusters[cluster].Spec
	var store string
	for _, p := range c.Plugins {
		if p.Name == barmanPlugin && p.IsWALArchiver && (p.Enabled == nil || *p.Enabled) {
			store = p.Parameters["barmanObjectName"]
		}
	}
	os := m.objectStores[store]
	if os == nil {
		t.Errorf("Cluster %s: no WAL archive (plugin %s with isWALArchiver and the barmanObjectName of an ObjectStore in the manifests)", cluster, barmanPlugin)
		return
	}
	cfg := os.Spec.Configuration
	if cfg.DestinationPath == "" {
		t.Errorf("ObjectStore %s has no destinationPath", store)
	}
	if s3 := cfg.S3Credentials; s3 != nil && !s3.InheritFromIAMRole && (s3.AccessKeyID == nil || s3.SecretAccessKey == nil) {
		t.Errorf("ObjectStore %s: S3 credentials neither from Secrets nor from the IAM role", store)
	}
	if os.Spec.RetentionPolicy == "" {
		t.Errorf("ObjectStore %s keeps every backup for ever (no retentionPolicy)", store)
	}
	if !strings.Contains(docs, store) {
		t.Errorf("docs/operations.md does not say where to point the ObjectStore %s (a placeholder in the manifests)", store)
	}
	scheduled := false
	for _, b := range m.scheduledBackups {
		if b.Spec.Cluster.Name == cluster && b.Spec.Method == "plugin" && b.Spec.PluginConfiguration != nil && b.Spec.PluginConfiguration.Name == barmanPlugin && b.Spec.Schedule != "" {
			scheduled = true
		}
	}
	if !scheduled {
		t.Errorf("no ScheduledBackup of Cluster %s through %s", cluster, barmanPlugin)
	}
}

// databaseSecretRefs adds the Secrets the database objects use to refs.
func databaseSecretRefs(m *manifests, refs map[string]string) {
	for name, c := range m.clusters {
		if c.Spec.Managed != nil {
			for _, r := range c.Spec.Managed.Roles {
				if r.PasswordSecret != nil {
					refs[r.PasswordSecret.Name] = "Cluster " + name + " role " + r.Name
				}
			}
		}
		if i := c.Spec.Bootstrap.InitDB; i != nil && i.Secret != nil {
			refs[i.Secret.Name] = "Cluster " + name + " bootstrap"
		}
		if cs := c.Spec.Certificates; cs != nil {
			for _, s := range []string{cs.ServerTLSSecret, cs.ServerCASecret, cs.ClientCASecret, cs.ReplicationTLSSecret} {
				if s != "" {
					refs[s] = "Cluster " + name + " certificates"
				}
			}
		}
	}
	for name, os := range m.objectStores {
		if s3 := os.Spec.Configuration.S3Credentials; s3 != nil {
			for _, k := range []*secretKey{s3.AccessKeyID, s3.SecretAccessKey} {
				if k != nil {
					refs[k.Name] = "ObjectStore " + name
				}
			}
		}
	}
}

// documentedLoop finds the commands of docs/operations.md that make one Secret per
// service in a shell loop: for s in identity card ...; do ... create secret generic
// umbra-$s-db ...
var documentedLoop = regexp.MustCompile(`for s in ([a-z ]+); do\n(?:[^\n]*\n){0,4}?[^\n]*create secret generic umbra-\$s-([a-z-]+) `)

func documentedInLoop(docs string) map[string]bool {
	made := map[string]bool{}
	for _, loop := range documentedLoop.FindAllStringSubmatch(docs, -1) {
		for _, s := range strings.Fields(loop[1]) {
			made["umbra-"+s+"-"+loop[2]] = true
		}
	}
	return made
}

// checkDatabaseNetworkPolicies: the database pods take PostgreSQL connections from the
// five services, from each other and from the operator, and from nobody else: not the
// gateway, not any pod of the namespace, not the outside.
func checkDatabaseNetworkPolicies(t *testing.T, m *manifests) {
	for _, cluster := range sortedKeys(m.clusters) {
		db := map[string]string{"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance", "cnpg.io/instanceRole": "primary"}
		postgres := &corev1.ContainerPort{Name: "postgresql", ContainerPort: 5432}
		manager := &corev1.ContainerPort{Name: "status", ContainerPort: 8000}
		reached := map[string]bool{}
		operator, peers := false, false
		for _, p := range m.policies {
			if !selectorMatches(t, &p.Spec.PodSelector, db) {
				continue
			}
			for i, rule := range p.Spec.Ingress {
				toPostgres, toManager := coversPort(rule.Ports, postgres), coversPort(rule.Ports, manager)
				if !toPostgres && !toManager {
					continue
				}
				if len(rule.From) == 0 {
					t.Errorf("NetworkPolicy %s rule %d opens the database to everyone", p.Name, i)
				}
				for _, peer := range rule.From {
					switch {
					case peer.IPBlock != nil:
						t.Errorf("NetworkPolicy %s rule %d opens the database to addresses %v", p.Name, i, peer.IPBlock)
					case peer.NamespaceSelector != nil:
						// Only the operator's namespace, never this one as a whole.
						if selectorMatches(t, peer.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": "umbra"}) ||
							len(peer.NamespaceSelector.MatchLabels) == 0 && len(peer.NamespaceSelector.MatchExpressions) == 0 {
							t.Errorf("NetworkPolicy %s rule %d opens the database to every pod of a namespace", p.Name, i)
						}
						if selectorMatches(t, peer.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": "cnpg-system"}) && toManager {
							operator = true
						}
					case peer.PodSelector != nil:
						for _, w := range m.workloads() {
							if !selectorMatches(t, peer.PodSelector, w.pod.Labels) {
								continue
							}
							if _, ok := services[w.name]; !ok {
								t.Errorf("NetworkPolicy %s lets %s reach the database", p.Name, w.name)
							}
							if toPostgres {
								reached[w.name] = true
							}
						}
						if selectorMatches(t, peer.PodSelector, map[string]string{"app.kubernetes.io/name": "debug-shell"}) {
							t.Errorf("NetworkPolicy %s rule %d lets pods that are not Umbra's reach the database", p.Name, i)
						}
						if selectorMatches(t, peer.PodSelector, db) && toPostgres {
							peers = true
						}
					}
				}
			}
		}
		for _, s := range sortedKeys(services) {
			if !reached[s] {
				t.Errorf("no NetworkPolicy lets %s reach the database %s", s, cluster)
			}
		}
		if !peers {
			t.Errorf("no NetworkPolicy lets the instances of %s replicate from each other", cluster)
		}
		if !operator {
			t.Errorf("no NetworkPolicy lets the CloudNativePG operator (namespace cnpg-system) reach the instances of %s on port 8000", cluster)
		}
	}
}

// passwordInURL finds a connection string (or any URL) that holds a password.
var passwordInURL = regexp.MustCompile(`[a-z][a-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@`)

// secretish are names of settings whose values are secrets.
var secretish = regexp.MustCompile(`(?i)(password|passwd|secret|token|_store$|^store$|credential)`)

// checkNoPlaintextSecrets walks every rendered object: no URL with a password, no field
// named like a password holding a string, no environment variable or ConfigMap key named
// like a secret or a store holding a literal. Secrets are made by commands, never kept here.
func checkNoPlaintextSecrets(t *testing.T, m *manifests) {
	for _, obj := range m.raw {
		kind, _ := obj["kind"].(string)
		meta, _ := obj["metadata"].(map[string]any)
		where := fmt.Sprintf("%s %v", kind, meta["name"])
		walkStrings(obj, "", func(path, key, value string) {
			if passwordInURL.MatchString(value) {
				t.Errorf("%s %s holds a connection string with a password", where, path)
			}
			if k := strings.ToLower(key); (strings.HasSuffix(k, "password") || k == "passwd" || k == "pwd") && value != "" {
				t.Errorf("%s %s is a password in plain text", where, path)
			}
		})
		if kind == "ConfigMap" {
			data, _ := obj["data"].(map[string]any)
			for k := range data {
				if secretish.MatchString(k) && !strings.HasSuffix(k, "_FILE") {
					t.Errorf("%s: key %s is a secret or a connection string in a ConfigMap", where, k)
				}
			}
		}
	}
	for _, w := range m.workloads() {
		for _, c := range w.pod.Spec.Containers {
			for _, e := range c.Env {
				if secretish.MatchString(e.Name) && !strings.HasSuffix(e.Name, "_FILE") && e.Value != "" {
					t.Errorf("%s: env %s is a literal; secrets and connection strings come from Secrets", w.name, e.Name)
				}
			}
		}
	}
}

// walkStrings calls f with every string in v, its path and the key it is under.
func walkStrings(v any, path string, f func(path, key, value string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok {
				f(path+"."+k, k, s)
				continue
			}
			walkStrings(e, path+"."+k, f)
		}
	case []any:
		for i, e := range x {
			if s, ok := e.(string); ok {
				f(fmt.Sprintf("%s[%d]", path, i), "", s)
				continue
			}
			walkStrings(e, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}
