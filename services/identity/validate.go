package identity

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
)

// Limits on requests.
const (
	// MaxExternalIDLen bounds an app's own user or group id in ResolveIdentities.
	MaxExternalIDLen = 256
	// MaxResolveIDs bounds the user and group ids of one ResolveIdentities call.
	MaxResolveIDs = 1000
	// MaxDisplayNameLen bounds an app's name, in characters.
	MaxDisplayNameLen = 128
	// DefaultRevocationPage and MaxRevocationPage bound ListRevocations pages.
	DefaultRevocationPage = 1000
	MaxRevocationPage     = 10000
)

func validDisplayName(s string) error {
	n := utf8.RuneCountInString(s)
	switch {
	case !utf8.ValidString(s):
		return errs.Invalidf("display_name is not valid UTF-8")
	case strings.TrimSpace(s) == "":
		return errs.Invalidf("display_name is empty")
	case n > MaxDisplayNameLen:
		return errs.Invalidf("display_name has %d characters; at most %d", n, MaxDisplayNameLen)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errs.Invalidf("display_name has a control character")
	}
	return nil
}

// validAppID checks the shape of an app id.
func validAppID(s string) error { return ident.ValidApp("app_id", s) }

func validKeyID(s string) error {
	return validToken("key_id", s, "", keyIDLen)
}

func validToken(field, s, prefix string, bodyLen int) error {
	if s == "" {
		return errs.Invalidf("%s is empty", field)
	}
	body, ok := strings.CutPrefix(s, prefix)
	if !ok || len(body) != bodyLen || !ident.IsBase32(body) {
		return errs.Invalidf("%s %q is malformed", field, refusal.Truncate(s))
	}
	return nil
}

func validExternalIDs(uids, guids []string) error {
	n := len(uids) + len(guids)
	switch {
	case n == 0:
		return errs.Invalidf("no ids given: send uids, guids or both")
	case n > MaxResolveIDs:
		return errs.Invalidf("%d ids in one call; at most %d", n, MaxResolveIDs)
	}
	for field, ids := range map[string][]string{"uids": uids, "guids": guids} {
		for i, id := range ids {
			switch {
			case id == "":
				return errs.Invalidf("%s[%d] is empty", field, i)
			case len(id) > MaxExternalIDLen:
				return errs.Invalidf("%s[%d] is %d bytes; at most %d", field, i, len(id), MaxExternalIDLen)
			case !utf8.ValidString(id):
				return errs.Invalidf("%s[%d] is not valid UTF-8", field, i)
			}
		}
	}
	return nil
}

// tokenTTL returns the lifetime of an access token asked for, or the default.
func tokenTTL(d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	return lifetime(d, def, auth.MinTokenTTL, auth.MaxTokenTTL)
}

// grantTTL returns the lifetime of a reset grant asked for, or the default.
func grantTTL(d *durationpb.Duration) (time.Duration, error) {
	return lifetime(d, auth.DefaultResetGrantTTL, auth.MinResetGrantTTL, auth.MaxResetGrantTTL)
}

// lifetime returns the duration d asks for, or def when it is unset or zero, if it is
// between lo and hi.
func lifetime(d *durationpb.Duration, def, lo, hi time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, errs.Invalidf("ttl: %v", err)
	}
	ttl := d.AsDuration()
	switch {
	case ttl == 0:
		return def, nil
	case ttl < lo || ttl > hi:
		return 0, errs.Invalidf("ttl %s is out of range: between %s and %s", ttl, lo, hi)
	}
	return ttl, nil
}

// revokeBefore returns the revocation time asked for (or now), moved to the start of the
// next whole second. Token times have one-second resolution, so a token issued within
// the same second as the revocation is revoked too, rather than a token issued just
// before it surviving.
func revokeBefore(ts *timestamppb.Timestamp, now time.Time) (time.Time, error) {
	before := now
	if ts != nil {
		if err := ts.CheckValid(); err != nil {
			return time.Time{}, errs.Invalidf("before: %v", err)
		}
		before = ts.AsTime()
		if before.After(now.Add(auth.Leeway)) {
			return time.Time{}, errs.Invalidf("before is in the future: a revocation covers tokens already issued")
		}
		if before.After(now) {
			before = now
		}
	}
	return before.Truncate(time.Second).Add(time.Second), nil
}
