package backup

import "github.com/umbra-e2ee/umbra/internal/outbox"

// Events is the messaging service's internal PublishEvent, which takes the events of
// the outbox into their owners' streams. messagingv1.MessagingServiceClient has it.
type Events = outbox.Publisher
