package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/durable"
)

// A data folder records the stores created in it, in ManifestFile, so that a store
// which existed and is now missing or empty (deleted, truncated, a volume mounted
// without it) is refused instead of being started as a new, empty one: bbolt creates a
// missing file and initialises an empty one without a word, and every message,
// card or backup it held would be gone. The operator may start it empty on purpose
// (Config.AllowEmptyStores, the --allow-empty-store flag).
//
// A folder without the manifest (written by an Umbra from before it, or whose manifest
// was deleted) has no record: its stores are adopted as they are, and listed once they
// have opened. An empty file there is started empty, with a warning.

// ManifestFile is the name of the manifest in a data folder.
const ManifestFile = "stores.json"

// manifest is the content of ManifestFile.
type manifest struct {
	// Format is 1.
	Format int `json:"format"`
	// Stores are the stores created in the folder, sorted.
	Stores []string `json:"stores"`
}

// readManifest reads dir's manifest; found is false when there is none.
func readManifest(dir string) (m manifest, found bool, err error) {
	path := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return manifest{}, false, nil
	}
	if err != nil {
		return manifest{}, false, fmt.Errorf("node: read the list of this data folder's stores: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Format != 1 {
		return manifest{}, false, fmt.Errorf("node: %s, the list of this data folder's stores, is damaged (%v): write it again by hand (%s) or delete it to adopt the stores present as they are",
			path, err, `{"format": 1, "stores": ["identity", "messaging"]}`)
	}
	return m, true, nil
}

// storeState says whether the file at path is missing, empty or present ("").
func storeState(path string) string {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "missing"
	case err == nil && fi.Size() == 0:
		return "empty (0 bytes)"
	}
	return "" // present, or an error that opening it will report
}

// checkStores refuses to start a store of roles that dir's manifest lists and whose
// file is now missing or empty, unless allow names it; it logs what it lets start.
func checkStores(dir string, roles, allow []string, log *zap.Logger) error {
	for _, a := range allow {
		if !slices.Contains(gateway.Services(), a) {
			return fmt.Errorf("node: --allow-empty-store %q is not a store (stores: %s)", a, strings.Join(gateway.Services(), ", "))
		}
	}
	m, found, err := readManifest(dir)
	if err != nil {
		return err
	}
	var refused []string
	var states []string
	for _, r := range roles {
		path := StorePath(dir, r)
		state := storeState(path)
		allowed := slices.Contains(allow, r)
		switch {
		case state == "":
			if allowed {
				log.Warn("--allow-empty-store names a store whose file is present: it changes nothing; remove the flag, so that a store lost later is refused",
					zap.String("store", r), zap.String("file", path))
			}
		case !found:
			if state != "missing" {
				log.Warn("starting an empty store: this data folder keeps no list of its stores (it was written by an older Umbra), so there is no telling whether the file held data",
					zap.String("store", r), zap.String("file", path))
			}
		case !slices.Contains(m.Stores, r):
			// A store new to this folder: there is nothing to lose.
		case allowed:
			log.Warn("starting an EMPTY store in place of the one this data folder held, as --allow-empty-store asked: everything it held is gone unless a backup is restored",
				zap.String("store", r), zap.String("file", path), zap.String("was", state))
		default:
			refused = append(refused, r)
			states = append(states, fmt.Sprintf("%s is %s", path, state))
		}
	}
	if len(refused) == 0 {
		return nil
	}
	return fmt.Errorf("node: %s, but this data folder held the %s store%s (listed in %s): starting %s empty would lose everything %s held. Restore %s from a backup (umbra admin restore --store %s --from BACKUP --data %s), or, to start empty on purpose, pass --allow-empty-store %s",
		strings.Join(states, " and "), strings.Join(refused, " and "), plural(refused), filepath.Join(dir, ManifestFile),
		them(refused, "it"), them(refused, "it"), them(refused, "it"), refused[0], dir, strings.Join(refused, ","))
}

func plural(s []string) string {
	if len(s) > 1 {
		return "s"
	}
	return ""
}

func them(s []string, one string) string {
	if len(s) > 1 {
		return "them"
	}
	return one
}

// recordStore adds name to dir's manifest, creating it if needed. The manifest is
// replaced atomically (a temporary file, fsync, rename, fsync of the folder), under a
// lock on the folder, so that processes sharing the folder each add their own store
// without losing another's.
func recordStore(dir, name string) error {
	unlock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("node: lock %s to list its stores: %w", dir, err)
	}
	defer unlock()
	m, _, err := readManifest(dir)
	if err != nil {
		return err
	}
	if slices.Contains(m.Stores, name) {
		return nil
	}
	m.Format = 1
	m.Stores = append(m.Stores, name)
	slices.Sort(m.Stores)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(filepath.Join(dir, ManifestFile), append(b, '\n')); err != nil {
		return fmt.Errorf("node: list the %s store in %s: %w", name, dir, err)
	}
	return nil
}

// DataStores are the stores of the data folder dir, for `umbra admin migrate`: those
// its manifest lists, and those whose file (<store>.db) is there without being listed
// (a folder written before the manifest). A store the manifest lists whose file is now
// missing or empty is an error unless only, when not empty, leaves it out: copying the
// folder without it would lose it silently.
func DataStores(dir string, only []string) ([]string, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("node: %s is not a data folder: %v", dir, err)
	}
	m, _, err := readManifest(dir)
	if err != nil {
		return nil, err
	}
	var out, lost []string
	for _, s := range gateway.Services() {
		path := StorePath(dir, s)
		state := storeState(path)
		switch {
		case state == "":
			out = append(out, s)
		case slices.Contains(m.Stores, s) && (len(only) == 0 || slices.Contains(only, s)):
			lost = append(lost, fmt.Sprintf("%s is %s", path, state))
		}
	}
	if len(lost) > 0 {
		return nil, fmt.Errorf("node: %s, but %s lists it among the folder's stores: restore it from a backup first (umbra admin restore), or leave it out with --store",
			strings.Join(lost, " and "), filepath.Join(dir, ManifestFile))
	}
	return out, nil
}
