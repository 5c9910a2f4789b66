// Package msgstore is the messaging service's storage engine: messaging.db, a bbolt
// file. Its exported API is all the service can use; the service's committer is its
// only writer.
//
// Every message and event is appended to a log, with its fan-out (the inbox sequence
// each recipient got), in the transaction that acknowledges it: a batch writes a few
// sequential pages, close to bbolt's raw rate. The indexes that find an entry by
// conversation and sequence, by inbox and sequence, by idempotency key and by expiry
// are kept in memory (memIndex) and written in bulk, in key order, with a later batch,
// every DefaultFlushEntries entries or DefaultFlushAge; reads merge both. After a
// crash, opening the store rebuilds the missing index entries from the log. The
// records and the bucket layout are in proto/umbra/storage/messaging/v1/messaging.proto.
//
// types.go holds the types of the API (a batch of writes, a query, an inbox item),
// which hold nothing of bbolt, and ops.go what applying an op means whatever the
// engine (the checks, a message's numbering, the records), which the service's
// PostgreSQL engine calls too; the other files are the bbolt engine, BoltStore: its
// writes (write.go), their index entries (flush.go), retention (sweep.go), its reads
// (read.go, memindex.go) and its checks (verify.go).
package msgstore
