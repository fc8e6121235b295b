// Package router is the HTTP router: it gives every service of every formation, previews
// included, a stable host name (`<service>.<formation>.<domain>`, and `<formation>.<domain>`
// for the formation's web service) and proxies requests to the service's passing instances,
// which it learns from Consul health with blocking queries. docs/router.md is the guide.
//
// Where to read: table.go builds the routing table from instances and formation routes, a
// pure function; watch.go follows Consul (one blocking query per service, one on the routes
// documents in KV) and swaps the table atomically; proxy.go is the request path
// (httputil.ReverseProxy, retries only before a byte was written, timeouts, headers, error
// pages, access log); tls.go serves certificates per name (SNI); router.go ties them together.
//
// It may import the Consul API, state and the standard library. It must not import sync,
// build, gitwatch or hostd: a router knows what Consul says runs, not how it got there.
// The registration conventions it reads (the meta keys formation and service, the tags
// gilliam and internal) are hostd's, documented in docs/hostd.md.
package router
