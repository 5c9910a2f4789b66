// The default of a configuration's clock, a func that Set cannot compare.
package defaults

import "time"

// Clock sets a nil *c to time.Now: the clock of every service's configuration.
func Clock(c *func() time.Time) {
	if *c == nil {
		*c = time.Now
	}
}
