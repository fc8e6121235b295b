// Package metrics is every Prometheus family the daemons export, in one place: their
// names, help, labels and buckets. A daemon makes one Metrics with New, hands it to the
// packages that record (sync's executor and observer, gitwatch, hostd, the router), and
// serves Handler at /metrics. A nil *Metrics records nothing, so libraries and tests that
// do not care pass none.
//
// Labels never carry commit SHAs, release or instance IDs: only names people chose
// (formation, service, host) and small fixed sets (result, state, reason).
//
// It imports only the Prometheus client and the standard library.
package metrics
