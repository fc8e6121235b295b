// Package seal encrypts config vars so that Consul only ever holds ciphertext.
//
// Every sealed value is a NaCl anonymous box (X25519, XSalsa20-Poly1305; the sender's
// key is thrown away) to one recipient's public key, written as "sealed:v1:<base64>". The
// installation's root key belongs to the sync daemons (a file or the GILLIAM_SYNC_KEY
// environment variable, never Consul): people seal config vars to its public key
// (`gilliam-sync env set`), and the leader opens them and seals each release's config
// again to the key of every host that runs it. A host's private key stays on the host
// (a 0600 file); its public key is published in Consul. Digest is the keyed hash release
// IDs are made with, so that an ID says nothing about a secret's value.
//
// It imports only the standard library and golang.org/x/crypto: no Consul, no Docker.
package seal
