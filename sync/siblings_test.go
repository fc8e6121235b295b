package sync

import (
	"reflect"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Every service but self with a port is a sibling; a port two services share keeps its
// number for the one first by name, the other gets one from SiblingPortBase; every service
// of the formation sees the same numbering.
func TestSiblingsOf(t *testing.T) {
	svc := func(name string, ports ...int) *schema.Service {
		s := &schema.Service{Name: name}
		for _, p := range ports {
			s.Ports = append(s.Ports, schema.Port{Port: p})
		}
		return s
	}
	f := &schema.Formation{Services: map[string]*schema.Service{
		"web": svc("web", 8080), "api": svc("api", 8080, 9090), "store": svc("store", 6379), "worker": svc("worker"),
	}}
	got := siblingsOf(f, "web")
	want := []state.Sibling{
		{Service: "api", Ports: []state.SiblingPort{{Port: 8080, Listen: 8080}, {Port: 9090, Listen: 9090}}},
		{Service: "store", Ports: []state.SiblingPort{{Port: 6379, Listen: 6379}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("siblings of web: got %+v, want %+v", got, want)
	}
	got = siblingsOf(f, "api")
	want = []state.Sibling{
		{Service: "store", Ports: []state.SiblingPort{{Port: 6379, Listen: 6379}}},
		{Service: "web", Ports: []state.SiblingPort{{Port: 8080, Listen: state.SiblingPortBase}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("siblings of api: got %+v, want %+v", got, want)
	}
	if got := siblingsOf(&schema.Formation{Services: map[string]*schema.Service{"web": svc("web", 8080)}}, "web"); got != nil {
		t.Errorf("a formation of one service: siblings %+v", got)
	}
}
