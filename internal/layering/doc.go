// Package layering holds no code: its test checks that the module's imports run down
// its layers, as docs/architecture.md ("Layers") draws them, and that each service
// keeps each storage engine in its own store files (store_bolt*.go for bbolt,
// store_postgres*.go for PostgreSQL), as docs/service-shape.md says.
//
// The layers, top to bottom: cmd/umbra; the assembly (internal/node, with its test
// harness internal/node/nodetest); the gateway and the services; the libraries
// (internal/ for server plumbing, pkg/ for what outside programs import); proto/. The
// packages that support tests and tools, internal/servicetest and internal/bench, sit
// beside the assembly: they may import services, and no service or library imports them.
//
// The rules are about what `go build` links: a package's files without _test.go,
// whatever their build constraints. Test files may import upward: a pkg/sdk test starts
// a real server with internal/node/nodetest, and a gateway test a whole node, but
// building pkg/sdk or the gateway never links them, so an outside program that imports
// pkg/ still gets no server code.
package layering
