package node

import (
	"maps"

	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// Request limits, from what each method can legitimately carry:
//
//   - methods whose requests hold only ids, names and numbers: 64 KiB
//     (grpcserver.DefaultSmallRecvBytes), where a few hundred bytes is usual;
//   - methods with batches or byte fields: BulkRecvBytes, above the largest legitimate
//     batch (an epoch commit of 500 wrapped hybrid keys is about 650 KiB; 10,000
//     recipient identities about 400 KiB);
//   - Send and SendStream: the envelope limit (--max-envelope-bytes) and room for the
//     rest of the request;
//   - PutBackup: the largest backup ciphertext and room for the rest.
//
// The server's overall limit (gRPC's MaxRecvMsgSize) is the largest of these.
const (
	BulkRecvBytes = 1 << 20
	// requestRoom is what a Send or PutBackup request holds besides its envelope or
	// ciphertext: ids, a header, KDF parameters (well under 1 KiB), with a margin.
	requestRoom = 16 << 10
)

// requestLimits returns c with the limits of the methods that carry more than the
// bulk limit set, unless c sets them already.
func requestLimits(c grpcserver.Config, mcfg messaging.Config) grpcserver.Config {
	envelope := mcfg.MaxEnvelopeBytes
	if envelope == 0 {
		envelope = messaging.DefaultMaxEnvelopeBytes
	}
	named := map[string]int{
		messagingv1.MessagingService_Send_FullMethodName:       envelope + requestRoom,
		messagingv1.MessagingService_SendStream_FullMethodName: envelope + requestRoom,
		backupv1.BackupService_PutBackup_FullMethodName:        backup.MaxCiphertext + requestRoom,
	}
	maps.Copy(named, c.MethodRecvBytes)
	c.MethodRecvBytes = named
	if c.BulkRecvBytes == 0 {
		c.BulkRecvBytes = BulkRecvBytes
	}
	if c.MaxRecvBytes == 0 {
		c.MaxRecvBytes = c.BulkRecvBytes
		for _, n := range named {
			c.MaxRecvBytes = max(c.MaxRecvBytes, n)
		}
	}
	return c
}
