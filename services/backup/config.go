package backup

// Defaults of Config.
const (
	// DefaultMaxAttempts is each slot's budget of password guesses.
	DefaultMaxAttempts = 10
	// DefaultEvaluateRate and DefaultEvaluateBurst limit Evaluate per identity.
	DefaultEvaluateRate  = 1.0
	DefaultEvaluateBurst = 20
	// MinSecretBytes is the shortest server secret accepted.
	MinSecretBytes = 32
)

// Config tunes the backup service. The zero value of each field but Secret means its
// default.
type Config struct {
	// Secret is the server secret every OPRF key is derived from. It is never stored
	// in backup.db: a copy of the database without it cannot be attacked offline. At
	// least MinSecretBytes; required.
	Secret []byte
	// MaxAttempts is each slot's budget of failed restores before it is erased.
	MaxAttempts int
	// EvaluateRate (per second) and EvaluateBurst limit Evaluate per identity.
	EvaluateRate  float64
	EvaluateBurst int
}
