// The PostgreSQL engine's groups, members, bans, join requests and invitations.

package group

import (
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

func (t *pgTx) Group(app, group string) (*storagev1.GroupRecord, error) {
	var b []byte
	if t.w != nil {
		if err := t.lock(app, group); err != nil {
			return nil, err
		}
		g := t.w.groups[groupRef{app, group}]
		if g.absent {
			return nil, errs.NotFoundf("group %s not found", group)
		}
		b = g.record
	} else {
		rec, found, err := pgdb.GetBytes(t.ctx, t.tx, "SELECT record FROM groups WHERE app_id = $1 AND group_id = $2", app, group)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, errs.NotFoundf("group %s not found", group)
		}
		b = rec
	}
	g := &storagev1.GroupRecord{}
	if err := pgDecode("groups", app+"/"+group, b, g); err != nil {
		return nil, err
	}
	return g, nil
}

func (t *pgTx) PutGroup(g *storagev1.GroupRecord) error {
	app, group := g.GetAppId(), g.GetGroupId()
	if err := t.writeGroup(app, group); err != nil {
		return err
	}
	rec, err := records.Encode(g)
	if err != nil {
		return err
	}
	t.w.groups[groupRef{app, group}] = &lockedGroup{record: rec, dirty: true} // written by flush
	return nil
}

func (t *pgTx) Member(app, group, identity string) (*storagev1.GroupMemberRecord, error) {
	return groupRow(t, "members", "identity", app, group, identity, &storagev1.GroupMemberRecord{})
}

func (t *pgTx) PutMember(app, group string, m *storagev1.GroupMemberRecord) error {
	return t.putGroupRow("members", "identity", app, group, m.GetIdentity(), m)
}

func (t *pgTx) DeleteMember(app, group, identity string) error {
	if err := t.exec(app, group, "DELETE FROM members WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity); err != nil {
		return err
	}
	return t.exec(app, group, "DELETE FROM epoch_keys WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity)
}

func newMemberRecord() *storagev1.GroupMemberRecord { return &storagev1.GroupMemberRecord{} }

func (t *pgTx) Members(app, group, after string, fn func(*storagev1.GroupMemberRecord) (bool, error)) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	return scanPages(t, "members", `SELECT identity, record FROM members WHERE app_id = $1 AND group_id = $2 AND identity > $3
		ORDER BY identity LIMIT $4`, []any{app, group}, after, newMemberRecord, fn)
}

func (t *pgTx) AllMembers(app, group string) ([]*storagev1.GroupMemberRecord, error) {
	return groupRows(t, "members", "identity", app, group, newMemberRecord)
}

// MemberGroups takes no lock: the groups it lists are locked as the caller touches them.
func (t *pgTx) MemberGroups(app, identity, after string, fn func(group string) (bool, error)) error {
	for {
		rows, err := t.tx.Query(t.ctx, `SELECT group_id FROM members WHERE app_id = $1 AND identity = $2 AND group_id > $3
			ORDER BY group_id LIMIT $4`, app, identity, after, pageRows)
		if err != nil {
			return err
		}
		groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, g := range groups {
			if more, err := fn(g); err != nil || !more {
				return err
			}
		}
		if len(groups) < pageRows {
			return nil
		}
		after = groups[len(groups)-1]
	}
}

func (t *pgTx) Ban(app, group, identity string) (*storagev1.GroupBanRecord, error) {
	return groupRow(t, "bans", "identity", app, group, identity, &storagev1.GroupBanRecord{})
}

func (t *pgTx) PutBan(app, group string, b *storagev1.GroupBanRecord) error {
	return t.putGroupRow("bans", "identity", app, group, b.GetIdentity(), b)
}

func (t *pgTx) DeleteBan(app, group, identity string) error {
	return t.exec(app, group, "DELETE FROM bans WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity)
}

func (t *pgTx) Bans(app, group string) ([]string, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	rows, err := t.tx.Query(t.ctx, "SELECT identity FROM bans WHERE app_id = $1 AND group_id = $2 ORDER BY identity", app, group)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if len(out) == 0 {
		out = nil // as the bbolt engine's
	}
	return out, err
}

func (t *pgTx) JoinRequest(app, group, identity string) (*storagev1.GroupJoinRequestRecord, error) {
	return groupRow(t, "join_requests", "identity", app, group, identity, &storagev1.GroupJoinRequestRecord{})
}

func (t *pgTx) PutJoinRequest(app, group string, r *storagev1.GroupJoinRequestRecord) error {
	return t.putGroupRow("join_requests", "identity", app, group, r.GetIdentity(), r)
}

func (t *pgTx) DeleteJoinRequest(app, group, identity string) error {
	return t.exec(app, group, "DELETE FROM join_requests WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity)
}

func (t *pgTx) JoinRequests(app, group string) ([]*storagev1.GroupJoinRequestRecord, error) {
	return groupRows(t, "join_requests", "identity", app, group, func() *storagev1.GroupJoinRequestRecord { return &storagev1.GroupJoinRequestRecord{} })
}

func newInvitationRecord() *storagev1.GroupInvitationRecord {
	return &storagev1.GroupInvitationRecord{}
}

func (t *pgTx) Invitation(app, group, invitee string) (*storagev1.GroupInvitationRecord, error) {
	return groupRow(t, "invitations", "invitee", app, group, invitee, newInvitationRecord())
}

func (t *pgTx) PutInvitation(app string, inv *storagev1.GroupInvitationRecord) error {
	return t.put(app, inv.GetGroupId(), inv, `INSERT INTO invitations (app_id, group_id, invitee, expires_ns, record) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (app_id, group_id, invitee) DO UPDATE SET expires_ns = EXCLUDED.expires_ns, record = EXCLUDED.record`,
		inv.GetInvitee(), nanos(inv.GetExpiresAt().AsTime()))
}

func (t *pgTx) DeleteInvitation(app, group, invitee string) error {
	return t.exec(app, group, "DELETE FROM invitations WHERE app_id = $1 AND group_id = $2 AND invitee = $3", invitee)
}

func (t *pgTx) Invitations(app, group string) ([]*storagev1.GroupInvitationRecord, error) {
	return groupRows(t, "invitations", "invitee", app, group, newInvitationRecord)
}

func (t *pgTx) InviteeInvitations(app, invitee string) ([]*storagev1.GroupInvitationRecord, error) {
	return getAll(t, "invitations", app+"/"+invitee, newInvitationRecord,
		"SELECT record FROM invitations WHERE app_id = $1 AND invitee = $2 ORDER BY group_id", app, invitee)
}

func (t *pgTx) StaleInvitations(before time.Time, limit int) ([]*storagev1.GroupInvitationRecord, []string, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT app_id, record FROM invitations WHERE expires_ns < $1
		ORDER BY expires_ns, app_id, group_id, invitee LIMIT $2`, nanos(before), limit)
	if err != nil {
		return nil, nil, err
	}
	var apps []string
	out, err := pgdb.ScanWith(rows, newInvitationRecord, func(app string, b []byte, inv *storagev1.GroupInvitationRecord) error {
		apps = append(apps, app)
		return pgDecode("invitations", app, b, inv)
	})
	if err != nil {
		return nil, nil, err
	}
	return out, apps, nil
}

// deleteGroupQueries remove everything kept for a group but its row; the first
// argument is the app, the second the group.
var deleteGroupQueries = []string{
	`WITH gone AS (DELETE FROM uploads WHERE app_id = $1 AND group_id = $2 RETURNING upload_id)
		DELETE FROM upload_keys WHERE upload_id IN (SELECT upload_id FROM gone)`,
	"DELETE FROM members WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM epoch_keys WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM invitations WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM bans WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM join_requests WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM epochs WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM statements WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM rotation_due WHERE app_id = $1 AND group_id = $2",
}

func (t *pgTx) DeleteGroupData(g *storagev1.GroupRecord) error {
	app, group := g.GetAppId(), g.GetGroupId()
	for _, q := range deleteGroupQueries {
		if err := t.exec(app, group, q); err != nil {
			return err
		}
	}
	if err := t.exec(app, group, "DELETE FROM groups WHERE app_id = $1 AND group_id = $2"); err != nil {
		return err
	}
	t.w.groups[groupRef{app, group}] = &lockedGroup{absent: true}
	return nil
}
