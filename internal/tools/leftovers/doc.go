// Command leftovers is the first and last step of `make test`: -snapshot FILE notes what
// the Docker engine holds as the run starts; -before FILE lists what the run left in the
// engine and on the machine, and exits 1 when there is any. Left behind means not there at
// the start and still there:
//   - a container carrying any io.gilliam.* label (a host daemon's, a build's, a test's),
//     or one pack ran a build in (author=pack);
//   - a volume carrying one, or named gilliam-cache-* (build caches) or pack-app-*,
//     pack-layers-* (pack's, for one build), except the build package's test caches
//     (cache scope and formation buildtest), which its tests keep on purpose so that only the first
//     run on a machine compiles Go's standard library;
//   - a process of the project's (gilliam-sync built by a test, Consul, Gitea or sshd from
//     .cache), started after the snapshot, whose parent is gone: no test is left to stop
//     it.
//
// What was there before the run is not looked at. Another `make test` on the same engine
// at the same time would be mistaken for this one's.
package main
