package hostd

import (
	"testing"

	"github.com/gilliam-sync/gilliam-sync/state"
)

func TestDiff(t *testing.T) {
	inst := func(id string) state.Instance { return state.Instance{ID: id} }
	ctr := func(id, instance, st string) observed { return observed{ID: id, Instance: instance, State: st} }
	ids := func(os []observed) (out []string) {
		for _, o := range os {
			out = append(out, o.ID)
		}
		return out
	}
	tests := []struct {
		name                string
		assigned            []state.Instance
		containers          []observed
		create              []string
		start, remove, keep []string
	}{
		{name: "nothing"},
		{name: "new instance", assigned: []state.Instance{inst("a")}, create: []string{"a"}},
		{name: "running stays", assigned: []state.Instance{inst("a")}, containers: []observed{ctr("c1", "a", "running")}, keep: []string{"c1"}},
		{name: "exited restarts", assigned: []state.Instance{inst("a")}, containers: []observed{ctr("c1", "a", "exited")}, start: []string{"c1"}},
		{name: "unassigned goes", containers: []observed{ctr("c1", "a", "running")}, remove: []string{"c1"}},
		{name: "duplicate goes", assigned: []state.Instance{inst("a")},
			containers: []observed{ctr("c1", "a", "running"), ctr("c2", "a", "running")}, keep: []string{"c1"}, remove: []string{"c2"}},
		{name: "replace", assigned: []state.Instance{inst("b")}, containers: []observed{ctr("c1", "a", "running")},
			create: []string{"b"}, remove: []string{"c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := diff(tt.assigned, tt.containers)
			var create []string
			for _, i := range got.create {
				create = append(create, i.ID)
			}
			check := func(what string, got, want []string) {
				if len(got) != len(want) {
					t.Fatalf("%s: got %v, want %v", what, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s: got %v, want %v", what, got, want)
					}
				}
			}
			check("create", create, tt.create)
			check("start", ids(got.start), tt.start)
			check("remove", ids(got.remove), tt.remove)
			check("keep", ids(got.keep), tt.keep)
		})
	}
}
