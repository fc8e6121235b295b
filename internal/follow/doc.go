// Package follow runs a Consul blocking query in a loop with the discipline of
// consul-template's watch/view.go: the index of each answer goes into the next query, an
// index that goes backwards starts over from 0, an answer with the same index is dropped,
// calls are at least a minimum delay apart, errors back off with jitter, and a call that
// runs past its wait (Consul or the network stopped answering) is cancelled and made
// again. The router follows its routes with it and the host daemon its siblings' health.
//
// It imports the standard library and state (for NextIndex); never the daemons (router,
// hostd, sync), Docker, go-git or pack (make check enforces this).
package follow
