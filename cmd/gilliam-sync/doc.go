// Command gilliam-sync is the one binary of the project: the sync daemon, the host daemon,
// both on one machine (up), and the commands people use (validate, status, ...).
//
// Nothing imports it.
package main
