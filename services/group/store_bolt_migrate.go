package group

import (
	"bytes"
	"fmt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// copyOrder is every bucket of group.db, in the order a copy writes them.
var copyOrder = [][]byte{
	bucketGroups, bucketMembers, bucketMemberGroups, bucketBans, bucketJoinRequests,
	bucketInvitations, bucketInviteeGroups, bucketInviteExpiry, bucketEpochs, bucketMembership,
	bucketEpochKeys, bucketUploads, bucketUploadKeys, bucketRotationDue, bucketOutbox, bucketState,
}

// boltSource streams group.db at path, read-only (boltdb.Dump). One pair is left out,
// checked: group_state's mark that the invitation_expiry index covers every
// invitation, which PostgreSQL's index always does (the file's index is compared with
// the copy's, entry by entry).
func boltSource(path string) storecopy.Source {
	return func(fn func(kind string, key, value []byte) error) error {
		return boltdb.Dump(path, schema, copyOrder, func(kind string, key, value []byte) error {
			if kind == string(bucketState) && bytes.Equal(key, inviteExpiryKey) {
				if !bytes.Equal(value, []byte{1}) {
					return fmt.Errorf("group_state %s is %x, not 01", inviteExpiryKey, value)
				}
				return nil
			}
			return fn(kind, key, value)
		})
	}
}
