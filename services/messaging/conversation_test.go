package messaging

import "testing"

// TestDirectID: one id per pair and app, whichever side asks, in the shape of an id.
func TestDirectID(t *testing.T) {
	a, b, c := testIdentity(1), testIdentity(2), testIdentity(3)
	other := "app_bbbbbbbbbbbbbbbbbbbbbbbbbb"
	id := directID(testApp, a, b)
	switch {
	case id != directID(testApp, b, a):
		t.Error("the id depends on who asks")
	case id == directID(testApp, a, c) || id == directID(other, a, b):
		t.Error("two conversations share an id")
	case validConversationShape(id) != nil || len(id) != directLen:
		t.Errorf("id %q is malformed: %v", id, validConversationShape(id))
	}
}
