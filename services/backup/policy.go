package backup

import (
	"github.com/umbra-e2ee/umbra/pkg/auth"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
)

// Policies is the service's access table. A method missing here is refused.
func Policies() auth.Table {
	return auth.Table{
		backupv1.BackupService_Evaluate_FullMethodName:      auth.AccessToken,
		backupv1.BackupService_PutBackup_FullMethodName:     auth.AccessToken,
		backupv1.BackupService_Restore_FullMethodName:       auth.AccessToken,
		backupv1.BackupService_GetBackupInfo_FullMethodName: auth.AccessToken,
		backupv1.BackupService_DeleteBackup_FullMethodName:  auth.AccessToken,
	}
}
