// Package fault is the one vocabulary of errors that gitwatch, build and sync share: what
// the caller must do with an error. Retryable (the default: a registry or Consul away, a
// corrupt cache that will be fetched again) is tried again later with a capped, jittered
// backoff; Stalled needs a person (an invalid gilliam.yml, a build that fails) and is not
// retried for the same input; Superseded means newer work replaced this one.
//
// It imports only the standard library, so every package may use it.
package fault
