// Package sync is the control plane, built in three parts that read as one sentence:
// observe, decide, apply.
//
//   - Observe (observe.go): an observer follows Consul with blocking queries (the whole
//     KV prefix as one state.Snapshot, the hosts, the instances' health) and reads each
//     watched target's gilliam.yml once per commit. World assembles the latest of each
//     into one immutable value.
//   - Decide (reconcile.go, decide.go, derive.go, rollout.go): Reconcile is a pure
//     function of the world, the executor's memory and the operator's policy. It returns
//     actions (actions.go) and when to decide again: images to resolve, releases and
//     desired states to write, roll-out steps, teardowns, release collection, placement,
//     dead hosts to clean from the catalog, and for every failure a retry at a time it
//     names (internal/fault's backoff, as data) or a stall that waits for a person.
//   - Apply (apply.go): an executor performs the actions, Consul writes in check-and-set
//     transactions, image builds in the background, and remembers what the next decision
//     must know (Memory). plan.go runs the same Reconcile with an executor that looks
//     images up instead of building them and applies each decision to a copy of the world:
//     `gilliam-sync plan` prints what the leader would do.
//
// One sync daemon leads through a Consul lock (syncer.go); the others poll their
// repositories and stand by hot.
//
// It may import every other package of this module except cmd. Inside this package the
// standard library's sync is imported as stdsync.
package sync
