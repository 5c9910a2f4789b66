// Package ident defines the shape of Umbra identities: the opaque strings the identity
// service derives from an app's own user and group ids, and that every other service
// stores in place of them.
//
// A user identity is "u_" and a group identity "g_", followed by 32 characters of
// lower-case base32 (160 bits of an HMAC). Nothing about the app's own id can be read
// back from it.
package ident

import (
	"strings"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

const (
	// UserPrefix starts every user identity.
	UserPrefix = "u_"
	// GroupPrefix starts every group identity.
	GroupPrefix = "g_"
	// bodyLen is the length of the base32 part: 20 bytes of HMAC, unpadded.
	bodyLen = 32
	// Len is the length of every identity.
	Len = len(UserPrefix) + bodyLen
)

// App ids are "app_" and 26 characters of lower-case base32 (16 random bytes); the
// identity service makes them, and services that are told an app id by an internal
// caller check their shape with ValidApp.
const (
	AppPrefix = "app_"
	appLen    = 26
)

// ValidApp reports, as an errs.ErrInvalid, why s is not an app id.
func ValidApp(field, s string) error {
	body, ok := strings.CutPrefix(s, AppPrefix)
	switch {
	case s == "":
		return errs.Invalidf("%s is empty", field)
	case !ok || len(body) != appLen || !IsBase32(body):
		if len(s) > 64 {
			s = s[:64] + "..."
		}
		return errs.Invalidf("%s %q is malformed: want %q and %d base32 characters", field, s, AppPrefix, appLen)
	}
	return nil
}

// IsBase32 reports whether s is lower-case base32 (a-z, 2-7), the alphabet of every
// Umbra id.
func IsBase32(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// ValidUser reports, as an errs.ErrInvalid, why s is not a user identity. field names the
// request field in the message.
func ValidUser(field, s string) error { return valid(field, UserPrefix, "user", s) }

// ValidGroup reports, as an errs.ErrInvalid, why s is not a group identity.
func ValidGroup(field, s string) error { return valid(field, GroupPrefix, "group", s) }

func valid(field, prefix, kind, s string) error {
	switch {
	case s == "":
		return errs.Invalidf("%s is empty: want a %s identity (%q followed by %d base32 characters)", field, kind, prefix, bodyLen)
	case len(s) != Len:
		return errs.Invalidf("%s is %d characters: a %s identity is %d", field, len(s), kind, Len)
	case !strings.HasPrefix(s, prefix):
		return errs.Invalidf("%s does not start with %q: not a %s identity", field, prefix, kind)
	}
	if !IsBase32(s[len(prefix):]) {
		return errs.Invalidf("%s is not lower-case base32 after its prefix", field)
	}
	return nil
}
