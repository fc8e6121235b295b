// Package e2e holds the end-to-end tests: the gilliam-sync binary, built from this
// repository, run against a real Consul agent, OCI registry, git server and Docker engine,
// driven the way a person would drive it (git push, the CLI). It has no code of its own.
//
// Tests run in parallel (parallel(t, expect)) unless what they measure would then measure the
// machine's load: each has its own Consul, registry and git server, and makes its own
// names in the shared Docker engine (host IDs from uniqueID, built formations named for the
// test with helloAs, build caches removed by registry with removeBuildCaches). Serial, and
// why:
//   - TestHostLossReplacesItsInstances, until the lost host's instance serves again: it
//     checks a 30-second target; then it goes on in parallel.
//   - TestRolloutTime and TestZeroFailedRequestsThroughTheRouter: their figures (a
//     roll-out's duration, failed requests at 200 req/s) are the point of the test.
//   - TestRouterURLAcrossCommit: no request may fail across a roll-out at 200 req/s, and
//     2 of 8748 did once even so, on a machine busy with other packages' tests.
//
// Go runs the serial tests first, one at a time, then the parallel ones. A parallel test
// calls parallel(t, expect) with how long it takes in make test: make test runs
// GILLIAM_E2E_PARALLEL (TEST_PARALLEL, 6) of them at once, the longest waiting first
// (order_test.go). docs/testing.md says how to write a test that stays cheap.
package e2e
