// Package card implements umbra.card.v1.CardService, the public-key directory: cards
// published by clients, their history, and the service's counter-signature.
//
// A card is the client's exact CardContent bytes and their self-signature; the service
// verifies them with pkg/e2ee, never re-serialises them, and keeps every card ever
// published so that old messages stay verifiable after a rotation. The rotation rule
// (rotation.go) runs inside the one transaction of a publication, so an identity has
// at most one ACTIVE card whatever the concurrency, also across replicas over one
// PostgreSQL database. Every publication and
// revocation appends an event to a feed (ListCardEvents) in the same transaction.
//
// State lives behind the Store interface (store.go), namespaced by app; its bbolt
// engine is card.db (store_bolt.go), its PostgreSQL engine the schema umbra_card
// (store_postgres.go, docs/storage-postgres.md). Its only private keys are the service's own
// Ed25519 counter-signing key and the key transparency log key, which signs
// checkpoints, both generated on first start (transparency.go, docs/key-transparency.md). The
// service calls no other service. Its background work (background.go) follows its own
// feed into the key transparency log and map, and publishes a checkpoint every
// CheckpointInterval; the group service follows the same feed.
package card
