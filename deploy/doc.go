// Package deploy holds how Umbra is deployed: the container image (Dockerfile), the
// Kubernetes manifests (k8s/: a kustomize base and the dev, production and ha overlays), the
// services' probe (healthcheck/) and the dev certificates script (dev-certs.sh). It has
// no code of its own: its tests render every overlay, decode each object strictly into
// the Kubernetes API types, and check the invariants docs/operations.md relies on
// against the real `umbra serve` flags. docs/operations.md is the operator's guide.
package deploy
