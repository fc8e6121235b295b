package sync

import (
	"sort"

	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// siblingsOf lists the services of f that self's instances reach by name: every other
// service with a port. Each port keeps its number on the name unless a service earlier by
// name took it; then it gets the lowest free one from state.SiblingPortBase. The numbering
// depends on the whole formation only, so every service of one commit agrees on it.
func siblingsOf(f *schema.Formation, self string) []state.Sibling {
	names := make([]string, 0, len(f.Services))
	for name := range f.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	taken := map[int]bool{}
	listen := map[string][]state.SiblingPort{}
	for _, name := range names {
		for _, p := range f.Services[name].Ports {
			l := p.Port
			if taken[l] {
				for l = state.SiblingPortBase; taken[l]; l++ {
				}
			}
			taken[l] = true
			listen[name] = append(listen[name], state.SiblingPort{Port: p.Port, Listen: l})
		}
	}
	var out []state.Sibling
	for _, name := range names {
		if name == self || len(listen[name]) == 0 {
			continue
		}
		out = append(out, state.Sibling{Service: name, Ports: listen[name]})
	}
	return out
}
