package messaging

import (
	"github.com/umbra-e2ee/umbra/pkg/auth"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// Policies is the service's access table. A method missing here is refused.
func Policies() auth.Table {
	return auth.Table{
		messagingv1.MessagingService_Send_FullMethodName:              auth.AccessToken,
		messagingv1.MessagingService_SendStream_FullMethodName:        auth.AccessToken,
		messagingv1.MessagingService_Subscribe_FullMethodName:         auth.AccessToken,
		messagingv1.MessagingService_History_FullMethodName:           auth.AccessToken,
		messagingv1.MessagingService_ListConversations_FullMethodName: auth.AccessToken,
		messagingv1.MessagingService_GetCursors_FullMethodName:        auth.AccessToken,
		messagingv1.MessagingService_UpdateCursors_FullMethodName:     auth.AccessToken,
		messagingv1.MessagingService_PublishEvent_FullMethodName:      auth.Internal,
		messagingv1.MessagingService_GetAppSettings_FullMethodName:    auth.Admin,
		messagingv1.MessagingService_UpdateAppSettings_FullMethodName: auth.Admin,
	}
}
