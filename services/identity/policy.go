package identity

import (
	"github.com/umbra-e2ee/umbra/pkg/auth"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// Policies is the service's access table. A method missing here is refused.
func Policies() auth.Table {
	return auth.Table{
		identityv1.IdentityService_CreateApp_FullMethodName:         auth.Admin,
		identityv1.IdentityService_GetApp_FullMethodName:            auth.Admin,
		identityv1.IdentityService_CreateAppKey_FullMethodName:      auth.Admin,
		identityv1.IdentityService_RevokeAppKey_FullMethodName:      auth.Admin,
		identityv1.IdentityService_RotateSigningKey_FullMethodName:  auth.Admin,
		identityv1.IdentityService_IssueToken_FullMethodName:        auth.AppKey,
		identityv1.IdentityService_ResolveIdentities_FullMethodName: auth.AppKey,
		identityv1.IdentityService_RevokeTokens_FullMethodName:      auth.AppKey,
		identityv1.IdentityService_IssueResetGrant_FullMethodName:   auth.AppKey,
		identityv1.IdentityService_GetSigningKeys_FullMethodName:    auth.Public,
		identityv1.IdentityService_WhoAmI_FullMethodName:            auth.AccessToken,
		identityv1.IdentityService_ListRevocations_FullMethodName:   auth.Internal,
	}
}
