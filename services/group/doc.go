// Package group implements umbra.group.v1.GroupService: groups, membership and roles,
// join requests and invitations, and the epochs whose keys members wrap to each
// other's cards.
//
// State is group.db behind the Store and Tx interfaces (store.go), which say nothing of
// the engine, so that another can be added; the bbolt engine is BoltStore
// (store_bolt.go and store_bolt_*.go by topic), the PostgreSQL engine PostgresStore
// (store_postgres.go and store_postgres_*.go), and the records are
// proto/umbra/storage/group/v1/group.proto. Each RPC is one transaction in which the
// service's rules run on a Tx; a refused request writes nothing. The RPCs are grouped
// by topic: groups.go, members.go, joinrequests.go, invitations.go, settings.go,
// epochs.go, stage.go, statements.go and the other services' calls in internal.go.
//
// Peers. The service asks the card service for members' active cards
// (LookupActiveCards: a commit must cover exactly them, and its signer card must be the
// committer's) and follows its ListCardEvents feed (background.go) to mark a member's
// groups "rotation required" when the card the current epoch's key is wrapped to is
// rotated or revoked; the feed's cursor is kept in group.db with the marks. Events
// (GroupEvent payloads) are written to an outbox in the transaction of the change they
// report (events.go) and delivered to the messaging service's PublishEvent by a
// background loop, which deletes each once it was accepted (background.go).
//
// Epochs. CommitEpoch reads the group and the members, asks the card service, checks
// the commit with pkg/e2ee (parse, signature, wrapped-keys digest), and writes the new
// epoch only if the epoch, the membership and the members' cards are still those it
// checked (compare-and-swap; a changed membership or card is checked again). A
// member's keys are deleted when it stops being a member, so a removed, banned or
// departed identity never reads a key again, and one that comes back starts afresh.
//
// Signed membership. Every membership call carries the caller's signed statement of
// the change (statements.go; the format and rules are pkg/e2ee's and
// docs/wire-format.md §12). Before the call's transaction the service parses it and
// verifies its signature against the caller's active card (LookupActiveCards); in the
// transaction, after the call's own checks, it checks that the statement states exactly
// the request's change, follows the group's head, and passes the rules clients apply,
// then stores it in the membership bucket and moves the head (GroupRecord
// membership_sequence and membership_hash). GetMembershipChain serves the chain to
// members and invitees; CommitEpoch refuses a commit for another head.
//
// AuthorizeSend counts every accepted ENCRYPTED message toward the epoch's message
// limit in a batched write (Store.Batch), and marks rotation required when a message
// shows that the sender's card is no longer the one the epoch's key was wrapped to.
package group
