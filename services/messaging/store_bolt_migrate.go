package messaging

import (
	"github.com/umbra-e2ee/umbra/internal/storecopy"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

// boltSource streams messaging.db at path, read-only, as the record kinds of
// msgstore.CopyKinds.
func boltSource(path string) storecopy.Source { return msgstore.CopySource(path) }

// boltExpiries is the range of the expiries of messaging.db's entries.
func boltExpiries(path string) (lo, hi int64, ok bool, err error) { return msgstore.ExpiryRange(path) }
