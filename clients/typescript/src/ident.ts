// The shapes of Umbra identities (pkg/ident): "u_" (users) or "g_" (groups) and 32
// characters of lower-case base32; app ids are "app_" and 26.

const base32 = /^[a-z2-7]*$/;

function problem(kind: "user" | "group", prefix: string, s: string): string | undefined {
  if (s === "") return `is empty: want a ${kind} identity ("${prefix}" followed by 32 base32 characters)`;
  if (s.length !== 34) return `is ${s.length} characters: a ${kind} identity is 34`;
  if (!s.startsWith(prefix)) return `does not start with "${prefix}": not a ${kind} identity`;
  if (!base32.test(s.slice(prefix.length))) return "is not lower-case base32 after its prefix";
  return undefined;
}

/** userIdentityProblem says why s is not a user identity, or undefined if it is one. */
export function userIdentityProblem(s: string): string | undefined {
  return problem("user", "u_", s);
}

/** groupIdentityProblem says why s is not a group identity, or undefined if it is one. */
export function groupIdentityProblem(s: string): string | undefined {
  return problem("group", "g_", s);
}

/** isUserIdentity reports whether s is a user identity. */
export function isUserIdentity(s: string): boolean {
  return userIdentityProblem(s) === undefined;
}

/** isGroupIdentity reports whether s is a group identity. */
export function isGroupIdentity(s: string): boolean {
  return groupIdentityProblem(s) === undefined;
}

/** isAppId reports whether s is an app id: "app_" and 26 lower-case base32 characters. */
export function isAppId(s: string): boolean {
  return s.length === 30 && s.startsWith("app_") && base32.test(s.slice(4));
}
