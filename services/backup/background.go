package backup

import "context"

// Run delivers the outbox's events until ctx ends (internal/outbox): at once when an
// erasure writes one, and after a failed delivery again with a wait that doubles from
// Config.OutboxRetry up to a minute.
func (s *Server) Run(ctx context.Context) {
	if s.events == nil {
		if pending, err := s.store.Outbox(1); err == nil && len(pending) > 0 {
			s.log.Warn("no messaging service: backup events stay in the outbox until one is configured")
		}
		return
	}
	s.outbox().Run(ctx)
}
