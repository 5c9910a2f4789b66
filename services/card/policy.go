package card

import (
	"github.com/umbra-e2ee/umbra/pkg/auth"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Policies is the service's access table. A method missing here is refused.
func Policies() auth.Table {
	return auth.Table{
		cardv1.CardService_PublishCard_FullMethodName:       auth.AccessToken,
		cardv1.CardService_GetServiceKey_FullMethodName:     auth.Public,
		cardv1.CardService_RotateServiceKey_FullMethodName:  auth.Admin,
		cardv1.CardService_SearchCards_FullMethodName:       auth.AccessToken,
		cardv1.CardService_GetCard_FullMethodName:           auth.AccessToken,
		cardv1.CardService_ListCardHistory_FullMethodName:   auth.AccessToken,
		cardv1.CardService_RevokeCard_FullMethodName:        auth.AccessToken,
		cardv1.CardService_LookupActiveCards_FullMethodName: auth.Internal,
		cardv1.CardService_ListCardEvents_FullMethodName:    auth.Internal,
		cardv1.CardService_LookupCardOwner_FullMethodName:   auth.Internal,
		// Key transparency: log entries name no app or identity (map keys only), so
		// witnesses and auditors read the log without an account.
		cardv1.CardService_GetLogKey_FullMethodName:             auth.Public,
		cardv1.CardService_GetCheckpoint_FullMethodName:         auth.Public,
		cardv1.CardService_GetConsistencyProof_FullMethodName:   auth.Public,
		cardv1.CardService_GetInclusionProof_FullMethodName:     auth.Public,
		cardv1.CardService_GetLogEntries_FullMethodName:         auth.Public,
		cardv1.CardService_SearchCardsWithProofs_FullMethodName: auth.AccessToken,
		// The operator rotates the log key (logkey.go).
		cardv1.CardService_RotateLogKey_FullMethodName: auth.Admin,
		cardv1.CardService_RetireLogKey_FullMethodName: auth.Admin,
	}
}
