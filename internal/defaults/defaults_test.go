package defaults

import (
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v, d, want time.Duration
	}{
		{"zero takes the default", 0, time.Second, time.Second},
		{"a value stays", time.Minute, time.Second, time.Minute},
		{"a negative value stays", -time.Minute, time.Second, -time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.v
			Set(&v, tc.d)
			if v != tc.want {
				t.Errorf("Set(%v, %v) = %v, want %v", tc.v, tc.d, v, tc.want)
			}
		})
	}
}

func TestPositive(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v, d, want int
	}{
		{"zero takes the default", 0, 7, 7},
		{"a negative value takes the default", -1, 7, 7},
		{"a positive value stays", 3, 7, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.v
			Positive(&v, tc.d)
			if v != tc.want {
				t.Errorf("Positive(%d, %d) = %d, want %d", tc.v, tc.d, v, tc.want)
			}
		})
	}
}
