// Package logstream is the wire format of instance and build logs between the daemons
// that keep them (host daemons, sync daemons) and `gilliam-sync logs`: a query, records
// as newline-delimited JSON, bearer-token authentication, the client that reads a stream,
// and how a line is shown (control characters escaped).
//
// It imports only the standard library.
package logstream
