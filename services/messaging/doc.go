// Package messaging implements umbra.messaging.v1.MessagingService: durable, ordered
// store-and-forward of ciphertext, with resumable subscriptions.
//
// # Write path
//
// One goroutine, the committer (committer.go), makes every write. A handler checks and
// prepares its request (sizes, header rules, the conversation, the caller's right to
// send, a group's member list), queues it and waits. The committer blocks for the
// first request, takes every other one already queued (without waiting for more; the
// next batch gathers while this one commits; waiting a little longer for fuller batches
// measured no faster), applies them in one bbolt transaction, fsynced on commit, then
// answers each request and wakes the streams of the inboxes that grew. Inside the transaction each request reads and checks first (its
// idempotency key, also against earlier requests of the same batch), then writes, so a
// refused request writes nothing and fails no other; only a storage error fails the
// batch, and then nothing of it is committed.
//
// The service sees its store through the Store interface (store.go). Its engine, the
// package internal/msgstore (BoltStore, opened by OpenBoltStore), appends each message
// or event to a log, with its fan-out (the inbox sequence each recipient got), in that
// transaction: a batch writes a few sequential pages, close to bbolt's raw rate. The
// indexes that find an entry by conversation and sequence, by inbox and sequence, by
// idempotency key and by expiry are kept in memory and written in bulk, in key order,
// with a later batch; reads merge both. After a crash, opening the store rebuilds the
// missing index entries from the log.
//
// The PostgreSQL engine (store_postgres*.go, PostgresStore) takes the same batches in
// one transaction each, so several replicas of the service can share one database: it
// numbers under row locks on the conversations and inboxes, stores each idempotency
// key once by its primary key, keeps messages in tables partitioned by expiry time, and
// wakes the other replicas' streams through Store.Watch (docs/storage-postgres.md).
//
// # Streams
//
// Subscribe keeps no queue per stream. A notifier holds, per identity with an open
// stream, its latest inbox sequence and a channel closed at every change; a stream reads
// its inbox from the store in pages from its own cursor until it has caught up, then
// waits on the channel. A slow client falls behind in the store only. The notifier also
// keeps the identity's latest committed items (64 at most, 1 MiB at most), which the
// committer hands over with each batch: a stream that has caught up takes new items
// from there instead of reading them back from the store.
//
// SendStream (sendstream.go) carries many sends on one stream: a reader goroutine checks
// and queues each request as Send does, without waiting for it to commit, up to
// SendStreamWindow ahead; the handler waits for each in turn and replies in the
// requests' order. A refused message gets its error in its reply; errors that are not
// about one message (the service stopping, the token expired or revoked) end the
// stream.
//
// # Conversations
//
// A direct conversation's id is derived from the app and its two identities; a group
// conversation's is the group identity, and the group service (Groups) decides who
// sends and reads. Until it answers, group conversations are refused.
//
// # What a message may claim
//
// An ENCRYPTED message's header names its sender's card; the card service (Cards)
// says whose card that is, and the answer is cached (cards.go), so only a card of the
// sender is stored, before the group service sees the message. PLAINTEXT direct
// messages are refused unless the app's settings allow them (appsettings.go); in a
// group, its encryption mode decides.
package messaging
