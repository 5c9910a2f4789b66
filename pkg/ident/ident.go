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
	for _, c := range s[len(prefix):] {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return errs.Invalidf("%s has %q: an identity is lower-case base32 after its prefix", field, c)
		}
	}
	return nil
}
