// Package check checks Parley's delivery guarantees end to end: N
// publishers and M subscribers, each its own user with a
// [parley.ResilientSession], in fresh rooms and direct messages on a
// running parleyd, reconnecting and resuming through whatever happens to
// the server meanwhile. [Check] records every acknowledgement and every
// delivery (live, and what restores and Resume replay), then reads history
// and returns a [Report] whose failure counts must all be 0.
//
// It owns the users, rooms and sessions of one run (all named after
// Config.Run) and nothing else: it talks to the server only through the
// Go SDK, at the addresses its Config names. cmd/parley-check is a thin
// command over it; fault scripts (scripts/faults) and tests drive it.
//
// Concurrency: Check may run concurrently with other Checks (each run has
// its own names). Within a run, each member's events are recorded by one
// goroutine of its own and publishers send from one goroutine each;
// Config.Published is called once, from its own goroutine, and may block
// (a fault may strike from it) without stopping the run.
package check
