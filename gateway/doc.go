// Package gateway is Umbra's REST front: every public, app-key, admin and access-token
// RPC of the five services over HTTP/JSON (grpc-gateway v2, protojson with camelCase
// names), server streams as newline-delimited JSON, the OpenAPI document, the JWK set,
// and health endpoints.
//
// The gateway reaches the services only through real gRPC connections, so every REST
// call passes the services' own interceptors (auth, validation, logging). It forwards the
// Authorization header and nothing else a client sends: a service token or any other
// metadata cannot be smuggled in from outside.
package gateway
