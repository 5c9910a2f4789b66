package group

import (
	"github.com/umbra-e2ee/umbra/pkg/auth"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// Policies is the service's access table. A method missing here is refused.
func Policies() auth.Table {
	return auth.Table{
		groupv1.GroupService_CreateGroup_FullMethodName:          auth.AccessToken,
		groupv1.GroupService_GetGroup_FullMethodName:             auth.AccessToken,
		groupv1.GroupService_ListMyGroups_FullMethodName:         auth.AccessToken,
		groupv1.GroupService_DeleteGroup_FullMethodName:          auth.AccessToken,
		groupv1.GroupService_AddMembers_FullMethodName:           auth.AccessToken,
		groupv1.GroupService_RemoveMember_FullMethodName:         auth.AccessToken,
		groupv1.GroupService_BanMember_FullMethodName:            auth.AccessToken,
		groupv1.GroupService_UnbanMember_FullMethodName:          auth.AccessToken,
		groupv1.GroupService_LeaveGroup_FullMethodName:           auth.AccessToken,
		groupv1.GroupService_SetRole_FullMethodName:              auth.AccessToken,
		groupv1.GroupService_TransferOwnership_FullMethodName:    auth.AccessToken,
		groupv1.GroupService_RequestJoin_FullMethodName:          auth.AccessToken,
		groupv1.GroupService_ApproveJoinRequest_FullMethodName:   auth.AccessToken,
		groupv1.GroupService_DeclineJoinRequest_FullMethodName:   auth.AccessToken,
		groupv1.GroupService_ListJoinRequests_FullMethodName:     auth.AccessToken,
		groupv1.GroupService_InviteMember_FullMethodName:         auth.AccessToken,
		groupv1.GroupService_AcceptInvitation_FullMethodName:     auth.AccessToken,
		groupv1.GroupService_DeclineInvitation_FullMethodName:    auth.AccessToken,
		groupv1.GroupService_ListMyInvitations_FullMethodName:    auth.AccessToken,
		groupv1.GroupService_SetEncryptionMode_FullMethodName:    auth.AccessToken,
		groupv1.GroupService_SetRotationPolicy_FullMethodName:    auth.AccessToken,
		groupv1.GroupService_SetHistoryVisibility_FullMethodName: auth.AccessToken,
		groupv1.GroupService_StageEpochKeys_FullMethodName:       auth.AccessToken,
		groupv1.GroupService_CommitEpoch_FullMethodName:          auth.AccessToken,
		groupv1.GroupService_GetEpochKeys_FullMethodName:         auth.AccessToken,
		groupv1.GroupService_ShareEpochKeys_FullMethodName:       auth.AccessToken,
		groupv1.GroupService_GetEpochState_FullMethodName:        auth.AccessToken,
		groupv1.GroupService_GetMembershipChain_FullMethodName:   auth.AccessToken,
		groupv1.GroupService_CheckMembership_FullMethodName:      auth.Internal,
		groupv1.GroupService_AuthorizeSend_FullMethodName:        auth.Internal,
		groupv1.GroupService_ListMemberIdentities_FullMethodName: auth.Internal,
	}
}
