package node

import (
	"github.com/umbra-e2ee/umbra/gateway"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	"github.com/umbra-e2ee/umbra/services/group"
)

// buildGroup starts the group service. It has its API and access policies but no
// behaviour yet: every RPC answers Unimplemented.
func buildGroup(d *deps) (*hosted, error) {
	srv := group.New(d.log.Named(gateway.Group))
	return unbuilt(gateway.Group, groupv1.GroupService_ServiceDesc.ServiceName, srv.Register, group.Policies()), nil
}
