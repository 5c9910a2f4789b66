// The REST routes of proto/gateway.yaml, by RPC: the HTTP verb and the path with its
// parameters named by proto field. Every POST route takes the whole request as its body
// ("body: \"*\""); GET and DELETE routes take the fields that are not in the path as
// query parameters. A test holds this table to proto/gateway.yaml.

export type Verb = "GET" | "POST" | "DELETE";

export const routes: { readonly [method: string]: readonly [Verb, string] } = {
  "umbra.identity.v1.IdentityService.CreateApp": ["POST", "/v1/apps"],
  "umbra.identity.v1.IdentityService.GetApp": ["GET", "/v1/apps/{app_id}"],
  "umbra.identity.v1.IdentityService.CreateAppKey": ["POST", "/v1/apps/{app_id}/keys"],
  "umbra.identity.v1.IdentityService.RevokeAppKey": ["POST", "/v1/apps/{app_id}/keys/{key_id}:revoke"],
  "umbra.identity.v1.IdentityService.RotateSigningKey": ["POST", "/v1/signing-keys:rotate"],
  "umbra.identity.v1.IdentityService.IssueToken": ["POST", "/v1/tokens"],
  "umbra.identity.v1.IdentityService.ResolveIdentities": ["POST", "/v1/identities:resolve"],
  "umbra.identity.v1.IdentityService.RevokeTokens": ["POST", "/v1/tokens:revoke"],
  "umbra.identity.v1.IdentityService.IssueResetGrant": ["POST", "/v1/reset-grants"],
  "umbra.identity.v1.IdentityService.GetSigningKeys": ["GET", "/v1/signing-keys"],
  "umbra.identity.v1.IdentityService.WhoAmI": ["GET", "/v1/whoami"],
  "umbra.card.v1.CardService.PublishCard": ["POST", "/v1/cards"],
  "umbra.card.v1.CardService.GetServiceKey": ["GET", "/v1/service-keys"],
  "umbra.card.v1.CardService.RotateServiceKey": ["POST", "/v1/service-keys:rotate"],
  "umbra.card.v1.CardService.SearchCards": ["POST", "/v1/cards:search"],
  "umbra.card.v1.CardService.GetCard": ["GET", "/v1/cards/{card_id}"],
  "umbra.card.v1.CardService.ListCardHistory": ["GET", "/v1/identities/{identity}/cards"],
  "umbra.card.v1.CardService.RevokeCard": ["POST", "/v1/cards/{card_id}:revoke"],
  "umbra.card.v1.CardService.GetLogKey": ["GET", "/v1/kt/log-key"],
  "umbra.card.v1.CardService.RotateLogKey": ["POST", "/v1/kt/log-keys:rotate"],
  "umbra.card.v1.CardService.RetireLogKey": ["POST", "/v1/kt/log-keys:retire"],
  "umbra.card.v1.CardService.GetCheckpoint": ["GET", "/v1/kt/checkpoint"],
  "umbra.card.v1.CardService.GetConsistencyProof": ["GET", "/v1/kt/consistency"],
  "umbra.card.v1.CardService.GetInclusionProof": ["GET", "/v1/kt/inclusion"],
  "umbra.card.v1.CardService.GetLogEntries": ["GET", "/v1/kt/entries"],
  "umbra.card.v1.CardService.SearchCardsWithProofs": ["POST", "/v1/cards:search-with-proofs"],
  "umbra.backup.v1.BackupService.Evaluate": ["POST", "/v1/backups:evaluate"],
  "umbra.backup.v1.BackupService.PutBackup": ["POST", "/v1/backups"],
  "umbra.backup.v1.BackupService.Restore": ["POST", "/v1/backups:restore"],
  "umbra.backup.v1.BackupService.GetBackupInfo": ["GET", "/v1/backups"],
  "umbra.backup.v1.BackupService.DeleteBackup": ["DELETE", "/v1/backups"],
  "umbra.group.v1.GroupService.CreateGroup": ["POST", "/v1/groups"],
  "umbra.group.v1.GroupService.GetGroup": ["GET", "/v1/groups/{group_id}"],
  "umbra.group.v1.GroupService.ListMyGroups": ["GET", "/v1/groups"],
  "umbra.group.v1.GroupService.DeleteGroup": ["DELETE", "/v1/groups/{group_id}"],
  "umbra.group.v1.GroupService.AddMembers": ["POST", "/v1/groups/{group_id}/members"],
  "umbra.group.v1.GroupService.RemoveMember": ["POST", "/v1/groups/{group_id}/members/{identity}:remove"],
  "umbra.group.v1.GroupService.BanMember": ["POST", "/v1/groups/{group_id}/bans"],
  "umbra.group.v1.GroupService.UnbanMember": ["POST", "/v1/groups/{group_id}/bans/{identity}:lift"],
  "umbra.group.v1.GroupService.LeaveGroup": ["POST", "/v1/groups/{group_id}:leave"],
  "umbra.group.v1.GroupService.SetRole": ["POST", "/v1/groups/{group_id}/members/{identity}:setRole"],
  "umbra.group.v1.GroupService.TransferOwnership": ["POST", "/v1/groups/{group_id}:transferOwnership"],
  "umbra.group.v1.GroupService.RequestJoin": ["POST", "/v1/groups/{group_id}/join-requests"],
  "umbra.group.v1.GroupService.ApproveJoinRequest": ["POST", "/v1/groups/{group_id}/join-requests/{identity}:approve"],
  "umbra.group.v1.GroupService.DeclineJoinRequest": ["POST", "/v1/groups/{group_id}/join-requests/{identity}:decline"],
  "umbra.group.v1.GroupService.ListJoinRequests": ["GET", "/v1/groups/{group_id}/join-requests"],
  "umbra.group.v1.GroupService.InviteMember": ["POST", "/v1/groups/{group_id}/invitations"],
  "umbra.group.v1.GroupService.AcceptInvitation": ["POST", "/v1/invitations/{group_id}:accept"],
  "umbra.group.v1.GroupService.DeclineInvitation": ["POST", "/v1/invitations/{group_id}:decline"],
  "umbra.group.v1.GroupService.ListMyInvitations": ["GET", "/v1/invitations"],
  "umbra.group.v1.GroupService.SetEncryptionMode": ["POST", "/v1/groups/{group_id}:setEncryptionMode"],
  "umbra.group.v1.GroupService.SetRotationPolicy": ["POST", "/v1/groups/{group_id}:setRotationPolicy"],
  "umbra.group.v1.GroupService.SetHistoryVisibility": ["POST", "/v1/groups/{group_id}:setHistoryVisibility"],
  "umbra.group.v1.GroupService.StageEpochKeys": ["POST", "/v1/groups/{group_id}/epochs:stageKeys"],
  "umbra.group.v1.GroupService.CommitEpoch": ["POST", "/v1/groups/{group_id}/epochs"],
  "umbra.group.v1.GroupService.GetEpochKeys": ["GET", "/v1/groups/{group_id}/epoch-keys"],
  "umbra.group.v1.GroupService.ShareEpochKeys": ["POST", "/v1/groups/{group_id}/epoch-keys:share"],
  "umbra.group.v1.GroupService.GetEpochState": ["GET", "/v1/groups/{group_id}/epoch"],
  "umbra.group.v1.GroupService.GetMembershipChain": ["GET", "/v1/groups/{group_id}/membership"],
  "umbra.messaging.v1.MessagingService.Send": ["POST", "/v1/conversations/{conversation_id}/messages"],
  "umbra.messaging.v1.MessagingService.Subscribe": ["GET", "/v1/inbox:subscribe"],
  "umbra.messaging.v1.MessagingService.History": ["GET", "/v1/conversations/{conversation_id}/messages"],
  "umbra.messaging.v1.MessagingService.ListConversations": ["GET", "/v1/conversations"],
  "umbra.messaging.v1.MessagingService.GetCursors": ["GET", "/v1/conversations/{conversation_id}/cursors"],
  "umbra.messaging.v1.MessagingService.UpdateCursors": ["POST", "/v1/conversations/{conversation_id}/cursors"],
  "umbra.messaging.v1.MessagingService.GetAppSettings": ["GET", "/v1/apps/{app_id}/messaging-settings"],
  "umbra.messaging.v1.MessagingService.UpdateAppSettings": ["POST", "/v1/apps/{app_id}/messaging-settings"],
};

/**
 * Writes that may be sent again as they are when their answer was lost: the service
 * stores them once (Send is idempotent on client_message_id; a repeated CommitEpoch is
 * refused by its compare-and-swap with the commit's own hash, which the SDK recognises as
 * its own), or they change nothing that matters (searches, evaluations, tokens). Reads (GET) are always retried; other writes never
 * are, since a lost answer may hide a change the service made.
 */
export const idempotentWrites: ReadonlySet<string> = new Set([
  "umbra.identity.v1.IdentityService.IssueToken",
  "umbra.identity.v1.IdentityService.ResolveIdentities",
  "umbra.card.v1.CardService.SearchCards",
  "umbra.card.v1.CardService.SearchCardsWithProofs",
  "umbra.backup.v1.BackupService.Evaluate",
  "umbra.group.v1.GroupService.CommitEpoch",
  "umbra.group.v1.GroupService.ShareEpochKeys",
  "umbra.messaging.v1.MessagingService.Send",
  "umbra.messaging.v1.MessagingService.UpdateCursors",
]);
