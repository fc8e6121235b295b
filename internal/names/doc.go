// Package names is the naming contract between the control plane, the host daemons, the
// build cache and Consul: Consul service names, registration and check IDs, container and
// cache volume names, instance IDs. Every name one component makes and another finds is
// made here, once. It imports only the standard library, so every package may use it
// (state re-exports it for the packages that speak state).
package names
