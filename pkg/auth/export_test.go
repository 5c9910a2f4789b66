package auth

// FailureSources returns how many sources the failure limit remembers.
func FailureSources(a *Authenticator) int {
	if a.failures.l == nil {
		return 0
	}
	return a.failures.l.Len()
}
