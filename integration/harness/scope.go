package harness

// Scope is what the harness's error-returning functions (the ones whose
// names end in In) need from their caller: somewhere to register the stops
// and unmounts of what they start, somewhere to report what a stop could
// not do, and whether the run failed, in which case the stops print the
// processes' log tails and keep directories for inspection.
//
// A test gets its Scope from ScopeOf(t); the test helpers without In
// (NewEnv, StartDaemon, ...) do that and turn an error into t.Fatalf. The
// demo program builds one from its own cleanup list.
type Scope struct {
	// Defer registers f to run when the scope ends; functions run last
	// registered first, as t.Cleanup runs them.
	Defer func(f func())
	// Logf reports a problem met while stopping, or a log tail.
	Logf func(format string, args ...any)
	// Failed reports whether the run has failed.
	Failed func() bool
}

// ScopeOf returns the scope of a test: t.Cleanup, t.Logf and t.Failed.
func ScopeOf(t T) Scope {
	return Scope{Defer: t.Cleanup, Logf: t.Logf, Failed: t.Failed}
}
