//go:build race

package testenv

// raceEnabled says this test binary was built with -race: the programs tests run
// (gilliam-sync, built by Binary) are built with it too.
const raceEnabled = true
