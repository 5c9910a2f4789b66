// The domain-separation labels of docs/wire-format.md, section 4. Each is used for
// exactly one purpose, always as LABEL(label) = label ‖ 0x00 at the start of what is
// signed, hashed or used as HPKE or HKDF info.
export const LabelCardSelfSignature = "umbra/v1/card-self-signature";
export const LabelCardRotationEndorsement = "umbra/v1/card-rotation-endorsement";
export const LabelCardServiceSignature = "umbra/v1/card-service-signature";
export const LabelCardServiceKeyRotation = "umbra/v1/card-service-key-rotation";
export const LabelSafetyNumber = "umbra/v1/safety-number";
export const LabelEnvelopeKeyWrap = "umbra/v1/envelope-key-wrap";
export const LabelEnvelopeSignature = "umbra/v1/envelope-signature";
export const LabelGroupMessageKey = "umbra/v1/group-message-key";
export const LabelGroupMessageSignature = "umbra/v1/group-message-signature";
export const LabelEpochKeyWrap = "umbra/v1/epoch-key-wrap";
export const LabelEpochKeyCommitment = "umbra/v1/epoch-key-commitment";
export const LabelEpochRecipients = "umbra/v1/epoch-recipients";
export const LabelEpochCommitSignature = "umbra/v1/epoch-commit-signature";
export const LabelMembershipStatementSignature = "umbra/v1/membership-statement-signature";
export const LabelKeystoreEncryptionKey = "umbra/v1/keystore-encryption-key";
export const LabelKeystoreKeyCheck = "umbra/v1/keystore-key-check";
export const LabelBackupOPRFInput = "umbra/v1/backup-oprf-input";
export const LabelBackupEncryptionKey = "umbra/v1/backup-encryption-key";
export const LabelBackupAuthKey = "umbra/v1/backup-auth-key";
export const LabelBackupRecord = "umbra/v1/backup-record";
export const LabelRecoveryKeyCheck = "umbra/v1/recovery-key-check";
