// Package page holds what every service's list calls share: the page size a request
// may ask for, and the refusal of a page token the service did not write. Each service
// keeps its own token format.
package page

import "github.com/umbra-e2ee/umbra/pkg/errs"

// Size returns the page size asked for (n), or def when n is 0; over max is refused.
func Size(n uint32, def, max int) (int, error) {
	switch {
	case n == 0:
		return def, nil
	case n > uint32(max):
		return 0, errs.Invalidf("page_size %d is over the maximum %d", n, max)
	}
	return int(n), nil
}

// ErrMalformedToken answers a page token that the service did not write.
var ErrMalformedToken = errs.Invalidf("page_token is malformed: pass the next_page_token of the previous page unchanged")
