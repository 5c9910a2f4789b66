package msgstore

import "context"

// Watch implements messaging.Store. A bbolt file has one writer, the service's
// committer, which wakes the streams of the inboxes it made grow itself: there is no
// other writer to tell of. It returns when ctx ends.
func (s *BoltStore) Watch(ctx context.Context, watching func() []InboxHead, changed func([]InboxHead)) {
	<-ctx.Done()
}
