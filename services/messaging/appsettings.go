package messaging

import (
	"context"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// App settings are the messaging service's own, in messaging.db: the send path reads
// them without asking another service, and the identity service, which knows the
// apps, stays out of every message. They are the operator's to change (admin
// credential), as creating the app is; the messaging service verifies no app keys.

// GetAppSettings implements MessagingService.
func (s *Server) GetAppSettings(_ context.Context, req *messagingv1.GetAppSettingsRequest) (*messagingv1.GetAppSettingsResponse, error) {
	if err := ident.ValidApp("app_id", req.GetAppId()); err != nil {
		return nil, err
	}
	rec, err := s.appSettings(req.GetAppId())
	if err != nil {
		return nil, err
	}
	return &messagingv1.GetAppSettingsResponse{AppId: req.GetAppId(), Settings: settingsView(rec)}, nil
}

// UpdateAppSettings implements MessagingService.
func (s *Server) UpdateAppSettings(_ context.Context, req *messagingv1.UpdateAppSettingsRequest) (*messagingv1.UpdateAppSettingsResponse, error) {
	if err := ident.ValidApp("app_id", req.GetAppId()); err != nil {
		return nil, err
	}
	if req.GetSettings() == nil {
		return nil, errs.Invalidf("settings is missing: send the app's settings, which replace the stored ones")
	}
	rec := &messagingstoragev1.MessagingAppSettingsRecord{
		AppId:                req.GetAppId(),
		AllowPlaintextDirect: req.GetSettings().GetAllowPlaintextDirect(),
		UpdatedAt:            timestamppb.New(s.now()),
	}
	if err := s.store.PutAppSettings(rec); err != nil {
		return nil, err
	}
	s.log.Info("app settings changed", zap.String("app", rec.GetAppId()), zap.Bool("allow_plaintext_direct", rec.GetAllowPlaintextDirect()))
	return &messagingv1.UpdateAppSettingsResponse{AppId: rec.GetAppId(), Settings: settingsView(rec)}, nil
}

// appSettings returns an app's stored settings, or the defaults (an empty record).
func (s *Server) appSettings(app string) (*messagingstoragev1.MessagingAppSettingsRecord, error) {
	rec, err := s.store.AppSettings(app)
	if notFound(err) {
		return &messagingstoragev1.MessagingAppSettingsRecord{AppId: app}, nil
	}
	return rec, err
}

// checkPlaintextDirect refuses a PLAINTEXT direct message unless the app's settings
// allow them. Only PLAINTEXT direct messages read the settings.
func (s *Server) checkPlaintextDirect(app string) error {
	rec, err := s.appSettings(app)
	if err != nil {
		return err
	}
	if !rec.GetAllowPlaintextDirect() {
		return errs.Preconditionf("direct messages must be encrypted in this app: PLAINTEXT is refused (an operator may allow it for the app with UpdateAppSettings, allow_plaintext_direct)")
	}
	return nil
}

func settingsView(rec *messagingstoragev1.MessagingAppSettingsRecord) *messagingv1.AppSettings {
	return &messagingv1.AppSettings{AllowPlaintextDirect: rec.GetAllowPlaintextDirect(), UpdatedAt: rec.GetUpdatedAt()}
}
