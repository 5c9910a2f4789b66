// Package web holds the web chat's build output: dist/, written by `npm run build` in
// this folder and committed (CI checks that a fresh build reproduces it byte for byte).
// `umbra dev` serves it at / from the binary; `umbra serve` never does.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Files returns the built web chat, with index.html at its root.
func Files() fs.FS {
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid path: fs.Sub cannot fail on it
	}
	return files
}
