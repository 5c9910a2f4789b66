package main

import (
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/umbra-e2ee/umbra/gateway"
)

// storesFlag is a list of store names, comma-separated, the flag repeatable.
type storesFlag []string

func (s *storesFlag) String() string { return strings.Join(*s, ",") }

func (s *storesFlag) Set(v string) error {
	for _, name := range strings.Split(v, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if !slices.Contains(gateway.Services(), name) {
			return fmt.Errorf("%q is not a store (stores: %s)", name, strings.Join(gateway.Services(), ", "))
		}
		if !slices.Contains(*s, name) {
			*s = append(*s, name)
		}
	}
	return nil
}

// registerAllowEmpty adds --allow-empty-store to fs (`umbra dev` and `umbra serve`).
func registerAllowEmpty(fs *flag.FlagSet, s *storesFlag) {
	fs.Var(s, "allow-empty-store", "start this store empty although the data folder held it and its file is now missing or empty "+
		"(everything it held is lost; restore a backup instead with umbra admin restore); comma-separated, repeatable")
}
