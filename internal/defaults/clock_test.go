package defaults

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	var c func() time.Time
	Clock(&c)
	if c == nil {
		t.Fatal("Clock(nil) left it nil, want time.Now")
	}
	if d := time.Since(c()); d < 0 || d > time.Minute {
		t.Errorf("Clock(nil)() is %s from now, want time.Now", d)
	}
	fixed := time.Unix(1700000000, 0)
	c = func() time.Time { return fixed }
	Clock(&c)
	if got := c(); !got.Equal(fixed) {
		t.Errorf("Clock(set)() = %s, want the clock set (%s)", got, fixed)
	}
}
