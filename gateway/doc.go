// Package gateway is Umbra's REST front: every public, app-key, admin and access-token
// RPC of the five services over HTTP/JSON (grpc-gateway v2, protojson with camelCase
// names), server streams as newline-delimited JSON, the OpenAPI document, the JWK set,
// and health endpoints. In `umbra dev` only, it also serves the web chat's built files at
// / (Config.Web) and the development sign-in under /dev/ (Config.Dev).
//
// The gateway reaches the services only through real gRPC connections, so every REST
// call passes the services' own interceptors (auth, validation, logging). Of the headers
// a client sends it forwards Authorization and no other: a service token or any other
// metadata cannot be smuggled in from outside. grpc-gateway itself adds
// x-forwarded-for and x-forwarded-host, which start from the client's own values, so no
// service may trust them (for rate limits or anything else) without a trusted proxy in
// front; and it honours a client's Grpc-Timeout, which can only shorten a call.
//
// Errors an Umbra service returns pass to the caller as they are; a failure to reach a
// service (which would name addresses and dial errors) becomes a generic message, and
// its cause is logged.
package gateway
