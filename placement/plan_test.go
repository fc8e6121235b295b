package placement

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const gib = 1 << 30

// scale makes n instances of one release of a service, with IDs f/s/r/0..n-1, each changed
// by the options given.
func scale(f, s, r string, n int, res Resources, opts ...func(*Instance)) []Instance {
	out := make([]Instance, n)
	for i := range out {
		out[i] = Instance{ID: fmt.Sprintf("%s/%s/%s/%d", f, s, r, i), Formation: f, Service: s, Release: r, Resources: res}
		for _, o := range opts {
			o(&out[i])
		}
	}
	return out
}

func constrained(cs ...Constraint) func(*Instance) {
	return func(in *Instance) { in.Constraints = cs }
}

func distinct(in *Instance) { in.DistinctHosts = true }

func spreadOver(label string) func(*Instance) {
	return func(in *Instance) { in.SpreadLabel = label }
}

func host(id string, cpu, mem int64, labels ...string) Host {
	h := Host{ID: id, Capacity: Resources{CPU: cpu, Memory: mem}, Labels: map[string]string{}}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		h.Labels[k] = v
	}
	return h
}

func criticalFor(h Host, d time.Duration) Host {
	h.CriticalSince = now.Add(-d)
	return h
}

func join(lists ...[]Instance) []Instance { return slices.Concat(lists...) }

// ids is a Result's assignments as host -> instance IDs.
func ids(r Result) map[string][]string {
	out := make(map[string][]string)
	for h, list := range r.Assignments {
		for _, in := range list {
			out[h] = append(out[h], in.ID)
		}
	}
	return out
}

func moves(ms []Move) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Instance.ID+"@"+m.Host)
	}
	return out
}

func reasons(r Result) map[string]string {
	out := make(map[string]string)
	for _, u := range r.Unplaced {
		out[u.Instance.ID] = u.Reason
	}
	return out
}

// perHost counts the instances of each host.
func perHost(r Result) map[string]int {
	out := make(map[string]int)
	for h, list := range r.Assignments {
		out[h] = len(list)
	}
	return out
}

type planCase struct {
	name    string
	desired []Instance
	hosts   []Host
	current map[string][]string
	opts    Options

	// Compared when set.
	assign   map[string][]string
	unplaced map[string]string
	start    []string
	stop     []string
	changed  []string
	check    func(t *testing.T, r Result)
}

func runCases(t *testing.T, cases []planCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.opts.DeadAfter == 0 {
				c.opts.DeadAfter = time.Minute
			}
			r := Plan(c.desired, c.hosts, c.current, now, c.opts)
			if c.assign != nil && !reflect.DeepEqual(ids(r), c.assign) {
				t.Errorf("assignments:\n got %v\nwant %v", ids(r), c.assign)
			}
			if c.unplaced != nil && !reflect.DeepEqual(reasons(r), c.unplaced) {
				t.Errorf("unplaced:\n got %q\nwant %q", reasons(r), c.unplaced)
			}
			if c.start != nil && !slices.Equal(moves(r.Start), c.start) {
				t.Errorf("start: got %v, want %v", moves(r.Start), c.start)
			}
			if c.stop != nil && !slices.Equal(moves(r.Stop), c.stop) {
				t.Errorf("stop: got %v, want %v", moves(r.Stop), c.stop)
			}
			if c.changed != nil && !slices.Equal(r.Changed, c.changed) {
				t.Errorf("changed: got %v, want %v", r.Changed, c.changed)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
}

var none = []string{}

func TestSpread(t *testing.T) {
	runCases(t, []planCase{{
		name:    "one instance per host",
		desired: scale("f", "web", "r1", 3, Resources{CPU: 100, Memory: gib}),
		hosts:   []Host{host("a", 1000, 4*gib), host("b", 1000, 4*gib), host("c", 1000, 4*gib)},
		check: func(t *testing.T, r Result) {
			if got := perHost(r); !reflect.DeepEqual(got, map[string]int{"a": 1, "b": 1, "c": 1}) {
				t.Errorf("per host: %v", got)
			}
		},
	}, {
		name:    "two rounds before a third on any host",
		desired: scale("f", "web", "r1", 6, Resources{CPU: 10}),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0), host("c", 1000, 0)},
		check: func(t *testing.T, r Result) {
			if got := perHost(r); !reflect.DeepEqual(got, map[string]int{"a": 2, "b": 2, "c": 2}) {
				t.Errorf("per host: %v", got)
			}
		},
	}, {
		name: "the least used hosts first",
		desired: join(
			scale("f", "db", "r1", 1, Resources{CPU: 800}),
			scale("f", "web", "r1", 2, Resources{CPU: 100}),
		),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0), host("c", 1000, 0)},
		current: map[string][]string{"a": {"f/db/r1/0"}},
		assign:  map[string][]string{"a": {"f/db/r1/0"}, "b": {"f/web/r1/0"}, "c": {"f/web/r1/1"}},
	}, {
		name: "releases of a service spread together",
		desired: join(
			scale("f", "web", "r1", 2, Resources{CPU: 100}),
			scale("f", "web", "r2", 2, Resources{CPU: 100}),
		),
		hosts: []Host{host("a", 1000, 0), host("b", 1000, 0), host("c", 1000, 0), host("d", 1000, 0)},
		check: func(t *testing.T, r Result) {
			if got := perHost(r); !reflect.DeepEqual(got, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}) {
				t.Errorf("per host: %v", got)
			}
		},
	}, {
		name:    "instances without reservations still spread, by count",
		desired: join(scale("f", "a", "r1", 1, Resources{}), scale("f", "b", "r1", 1, Resources{}), scale("f", "c", "r1", 1, Resources{})),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0), host("c", 1000, 0)},
		check: func(t *testing.T, r Result) {
			if got := perHost(r); !reflect.DeepEqual(got, map[string]int{"a": 1, "b": 1, "c": 1}) {
				t.Errorf("per host: %v", got)
			}
		},
	}, {
		name:    "across a label first",
		desired: scale("f", "web", "r1", 2, Resources{CPU: 100}, spreadOver("zone")),
		hosts:   []Host{host("a1", 1000, 0, "zone=a"), host("a2", 1000, 0, "zone=a"), host("a3", 1000, 0, "zone=a"), host("b1", 1000, 0, "zone=b")},
		check: func(t *testing.T, r Result) {
			if len(r.Assignments["b1"]) != 1 {
				t.Errorf("zone b got %d instances, want 1: %v", len(r.Assignments["b1"]), ids(r))
			}
		},
	}, {
		name:    "evenly across label values, then hosts",
		desired: scale("f", "web", "r1", 4, Resources{CPU: 100}, spreadOver("zone")),
		hosts:   []Host{host("a1", 1000, 0, "zone=a"), host("a2", 1000, 0, "zone=a"), host("a3", 1000, 0, "zone=a"), host("b1", 1000, 0, "zone=b")},
		check: func(t *testing.T, r Result) {
			if len(r.Assignments["b1"]) != 2 {
				t.Errorf("zone b got %d instances, want 2: %v", len(r.Assignments["b1"]), ids(r))
			}
		},
	}, {
		name:    "hosts without the label are one more value",
		desired: scale("f", "web", "r1", 3, Resources{CPU: 100}, spreadOver("zone")),
		hosts:   []Host{host("a1", 1000, 0, "zone=a"), host("a2", 1000, 0, "zone=a"), host("b1", 1000, 0, "zone=b"), host("x", 1000, 0)},
		check: func(t *testing.T, r Result) {
			if len(r.Assignments["b1"]) != 1 || len(r.Assignments["x"]) != 1 {
				t.Errorf("want one on b1 and one on x: %v", ids(r))
			}
		},
	}, {
		name:    "label spread counts instances already running",
		desired: scale("f", "web", "r1", 3, Resources{CPU: 100}, spreadOver("zone")),
		hosts:   []Host{host("a1", 1000, 0, "zone=a"), host("a2", 1000, 0, "zone=a"), host("b1", 1000, 0, "zone=b"), host("b2", 1000, 0, "zone=b")},
		current: map[string][]string{"a1": {"f/web/r1/0"}, "a2": {"f/web/r1/1"}},
		start:   []string{"f/web/r1/2@" + "b1"},
		opts:    Options{Seed: seedPreferring("b1", "b2")},
	}})
}

// seedPreferring finds a seed whose tie-break puts host a before host b, so that a test can
// name the host a tie goes to.
func seedPreferring(a, b string) int64 {
	for s := int64(0); ; s++ {
		if tieBreak(s, a) < tieBreak(s, b) {
			return s
		}
	}
}

func TestBinpack(t *testing.T) {
	runCases(t, []planCase{{
		name:    "fills one host before the next",
		desired: scale("f", "web", "r1", 4, Resources{CPU: 300}),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		opts:    Options{Binpack: true},
		check: func(t *testing.T, r Result) {
			got := []int{len(r.Assignments["a"]), len(r.Assignments["b"])}
			slices.Sort(got)
			if !slices.Equal(got, []int{1, 3}) {
				t.Errorf("per host %v, want 3 on one and 1 on the other", ids(r))
			}
		},
	}, {
		name:    "the fullest host that fits",
		desired: join(scale("f", "db", "r1", 1, Resources{CPU: 500}), scale("f", "big", "r1", 1, Resources{CPU: 800}), scale("f", "web", "r1", 1, Resources{CPU: 200})),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0), host("c", 1000, 0)},
		current: map[string][]string{"a": {"f/db/r1/0"}, "b": {"f/big/r1/0"}},
		opts:    Options{Binpack: true},
		start:   []string{"f/web/r1/0@b"},
	}, {
		name:    "distinct hosts still holds",
		desired: scale("f", "web", "r1", 2, Resources{CPU: 100}, distinct),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		opts:    Options{Binpack: true},
		check: func(t *testing.T, r Result) {
			if got := perHost(r); !reflect.DeepEqual(got, map[string]int{"a": 1, "b": 1}) {
				t.Errorf("per host: %v", got)
			}
		},
	}, {
		name:    "spread label still holds",
		desired: scale("f", "web", "r1", 2, Resources{CPU: 100}, spreadOver("zone")),
		hosts:   []Host{host("a1", 1000, 0, "zone=a"), host("a2", 1000, 0, "zone=a"), host("b1", 1000, 0, "zone=b")},
		opts:    Options{Binpack: true},
		check: func(t *testing.T, r Result) {
			if len(r.Assignments["b1"]) != 1 {
				t.Errorf("want one on b1: %v", ids(r))
			}
		},
	}})
}

func TestResources(t *testing.T) {
	runCases(t, []planCase{{
		name:     "cpu",
		desired:  scale("f", "web", "r1", 1, Resources{CPU: 600}),
		hosts:    []Host{host("a", 500, 0), host("b", 500, 0)},
		unplaced: map[string]string{"f/web/r1/0": "cpu exhausted on 2 hosts"},
	}, {
		name:     "memory",
		desired:  scale("f", "web", "r1", 1, Resources{Memory: 2 * gib}),
		hosts:    []Host{host("a", 0, gib)},
		unplaced: map[string]string{"f/web/r1/0": "memory exhausted on 1 host"},
	}, {
		name:     "both must fit on the same host",
		desired:  scale("f", "web", "r1", 1, Resources{CPU: 600, Memory: 2 * gib}),
		hosts:    []Host{host("a", 1000, gib), host("b", 500, 4*gib)},
		unplaced: map[string]string{"f/web/r1/0": "cpu exhausted on 1 host, memory exhausted on 1 host"},
	}, {
		name:    "exactly full fits",
		desired: scale("f", "web", "r1", 2, Resources{CPU: 500, Memory: gib}),
		hosts:   []Host{host("a", 1000, 2*gib)},
		assign:  map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1"}},
	}, {
		name:     "kept instances use capacity",
		desired:  join(scale("f", "db", "r1", 1, Resources{CPU: 800}), scale("f", "web", "r1", 2, Resources{CPU: 300})),
		hosts:    []Host{host("a", 1000, 0), host("b", 1000, 0)},
		current:  map[string][]string{"a": {"f/db/r1/0"}},
		assign:   map[string][]string{"a": {"f/db/r1/0"}, "b": {"f/web/r1/0", "f/web/r1/1"}},
		unplaced: map[string]string{},
	}, {
		name:     "so do instances placed earlier in the same plan",
		desired:  scale("f", "web", "r1", 4, Resources{CPU: 300}),
		hosts:    []Host{host("a", 1000, 0)},
		unplaced: map[string]string{"f/web/r1/3": "cpu exhausted on 1 host"},
	}, {
		name:    "zero capacity is unknown, so unlimited",
		desired: scale("f", "web", "r1", 10, Resources{CPU: 4000, Memory: 64 * gib}),
		hosts:   []Host{host("a", 0, 0)},
		check: func(t *testing.T, r Result) {
			if len(r.Assignments["a"]) != 10 || len(r.Unplaced) != 0 {
				t.Errorf("want all 10 on a: %v, unplaced %v", ids(r), reasons(r))
			}
		},
	}, {
		name:    "zero reservation fits a full host",
		desired: join(scale("f", "db", "r1", 1, Resources{CPU: 1000, Memory: gib}), scale("f", "web", "r1", 1, Resources{})),
		hosts:   []Host{host("a", 1000, gib)},
		current: map[string][]string{"a": {"f/db/r1/0"}},
		assign:  map[string][]string{"a": {"f/db/r1/0", "f/web/r1/0"}},
	}, {
		name:    "larger instances are placed first",
		desired: join(scale("f", "small", "r1", 2, Resources{CPU: 400}), scale("f", "big", "r1", 1, Resources{CPU: 1000})),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		check: func(t *testing.T, r Result) {
			if len(r.Unplaced) != 0 {
				t.Errorf("unplaced %v: small ones placed first would leave no room for big", reasons(r))
			}
		},
	}})
}

func TestConstraints(t *testing.T) {
	hosts := []Host{host("eu", 1000, 0, "zone=eu", "disk=ssd"), host("us", 1000, 0, "zone=us"), host("bare", 1000, 0)}
	on := func(cs ...Constraint) []Instance {
		return scale("f", "web", "r1", 1, Resources{CPU: 100}, constrained(cs...))
	}
	runCases(t, []planCase{{
		name:    "equal",
		desired: on(Constraint{"zone", OpEqual, "eu"}),
		hosts:   hosts,
		assign:  map[string][]string{"eu": {"f/web/r1/0"}},
	}, {
		name:     "equal fails on a missing label",
		desired:  on(Constraint{"rack", OpEqual, ""}),
		hosts:    hosts,
		unplaced: map[string]string{"f/web/r1/0": "constraint rack= filtered 3"},
	}, {
		name:    "not equal passes on a missing label",
		desired: scale("f", "web", "r1", 2, Resources{CPU: 100}, constrained(Constraint{"zone", OpNotEqual, "eu"})),
		hosts:   hosts,
		check: func(t *testing.T, r Result) {
			if got := perHost(r); !reflect.DeepEqual(got, map[string]int{"us": 1, "bare": 1}) {
				t.Errorf("per host: %v", got)
			}
		},
	}, {
		name:    "regexp, unanchored",
		desired: on(Constraint{"zone", OpRegexp, "u$"}),
		hosts:   hosts,
		assign:  map[string][]string{"eu": {"f/web/r1/0"}},
	}, {
		name:     "regexp fails on a missing label, even one that matches empty",
		desired:  on(Constraint{"disk", OpRegexp, ".*"}, Constraint{"zone", OpRegexp, "^us$"}),
		hosts:    hosts,
		unplaced: map[string]string{"f/web/r1/0": "constraint disk~=.* filtered 2, constraint zone~=^us$ filtered 1"},
	}, {
		name:    "all must hold",
		desired: on(Constraint{"zone", OpNotEqual, "us"}, Constraint{"disk", OpEqual, "ssd"}),
		hosts:   hosts,
		assign:  map[string][]string{"eu": {"f/web/r1/0"}},
	}, {
		name:     "invalid regexp",
		desired:  on(Constraint{"zone", OpRegexp, "(eu"}),
		hosts:    hosts,
		unplaced: map[string]string{"f/web/r1/0": "invalid constraint zone~=(eu: error parsing regexp: missing closing ): `(eu`"},
	}, {
		name:     "unknown operator",
		desired:  on(Constraint{"zone", "<", "eu"}),
		hosts:    hosts,
		unplaced: map[string]string{"f/web/r1/0": `invalid constraint zone<eu: unknown operator "<"`},
	}, {
		name:    "a running instance whose host no longer satisfies moves",
		desired: on(Constraint{"zone", OpEqual, "eu"}),
		hosts:   hosts,
		current: map[string][]string{"us": {"f/web/r1/0"}},
		stop:    []string{"f/web/r1/0@us"},
		start:   []string{"f/web/r1/0@eu"},
		changed: []string{"eu", "us"},
	}})
}

func TestDistinctHosts(t *testing.T) {
	runCases(t, []planCase{{
		name:     "one per host, the rest unplaced",
		desired:  scale("f", "web", "r1", 3, Resources{CPU: 100}, distinct),
		hosts:    []Host{host("a", 1000, 0), host("b", 1000, 0)},
		unplaced: map[string]string{"f/web/r1/2": "distinct hosts filtered 2"},
	}, {
		name:    "across releases",
		desired: join(scale("f", "web", "r1", 1, Resources{CPU: 100}, distinct), scale("f", "web", "r2", 1, Resources{CPU: 100}, distinct)),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0"}},
		assign:  map[string][]string{"a": {"f/web/r1/0"}, "b": {"f/web/r2/0"}},
	}, {
		name:    "an instance that does not ask stays off a host with one that does",
		desired: join(scale("f", "web", "r1", 1, Resources{CPU: 100}, distinct), scale("f", "web", "r2", 1, Resources{CPU: 100})),
		hosts:   []Host{host("a", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0"}},
		unplaced: map[string]string{
			"f/web/r2/0": "distinct hosts filtered 1",
		},
	}, {
		name:    "other services do not count",
		desired: join(scale("f", "web", "r1", 1, Resources{CPU: 100}, distinct), scale("f", "api", "r1", 1, Resources{CPU: 100}, distinct)),
		hosts:   []Host{host("a", 1000, 0)},
		assign:  map[string][]string{"a": {"f/api/r1/0", "f/web/r1/0"}},
	}, {
		name:    "two already together: the second in ID order moves",
		desired: scale("f", "web", "r1", 2, Resources{CPU: 100}, distinct),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1"}},
		stop:    []string{"f/web/r1/1@a"},
		start:   []string{"f/web/r1/1@b"},
	}})
}

func TestStability(t *testing.T) {
	web := scale("f", "web", "r1", 2, Resources{CPU: 100})
	runCases(t, []planCase{{
		name:    "a new empty host does not attract running instances",
		desired: web,
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0), host("new", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1"}},
		assign:  map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1"}},
		start:   none, stop: none, changed: none,
	}, {
		name:    "scaling another service leaves this one alone",
		desired: join(web, scale("f", "api", "r1", 3, Resources{CPU: 100})),
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0"}, "b": {"f/web/r1/1"}},
		check: func(t *testing.T, r Result) {
			if len(r.Stop) != 0 {
				t.Errorf("stopped %v", moves(r.Stop))
			}
			if len(r.Start) != 3 {
				t.Errorf("started %v, want the 3 api instances", moves(r.Start))
			}
		},
	}, {
		name:    "a critical host keeps its instances but gets nothing new",
		desired: join(web, scale("f", "api", "r1", 1, Resources{CPU: 100})),
		hosts:   []Host{criticalFor(host("a", 1000, 0), 30*time.Second), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1"}},
		assign:  map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1"}, "b": {"f/api/r1/0"}},
		stop:    none,
	}, {
		name:    "a scale-down stops only what is no longer desired",
		desired: web[:1],
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0"}, "b": {"f/web/r1/1"}},
		assign:  map[string][]string{"a": {"f/web/r1/0"}},
		stop:    []string{"f/web/r1/1@b"},
		start:   none,
		changed: []string{"b"},
	}, {
		name:    "a host that shrank sheds instances in ID order until it fits",
		desired: scale("f", "web", "r1", 3, Resources{CPU: 400}),
		hosts:   []Host{host("a", 900, 0), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0", "f/web/r1/1", "f/web/r1/2"}},
		stop:    []string{"f/web/r1/2@a"},
		start:   []string{"f/web/r1/2@b"},
	}, {
		name:    "listed twice on one host is one instance",
		desired: web[:1],
		hosts:   []Host{host("a", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0", "f/web/r1/0"}},
		start:   none, stop: none, changed: none,
	}, {
		name:    "listed on two hosts stays on the first",
		desired: web[:1],
		hosts:   []Host{host("a", 1000, 0), host("b", 1000, 0)},
		current: map[string][]string{"b": {"f/web/r1/0"}, "a": {"f/web/r1/0"}},
		assign:  map[string][]string{"a": {"f/web/r1/0"}},
		stop:    []string{"f/web/r1/0@b"},
		changed: []string{"b"},
	}})
}

func TestHostLoss(t *testing.T) {
	web := scale("f", "web", "r1", 2, Resources{CPU: 100})
	runCases(t, []planCase{{
		name:    "instances on a dead host are re-placed",
		desired: web,
		hosts:   []Host{criticalFor(host("a", 1000, 0), 2*time.Minute), host("b", 1000, 0), host("c", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0"}, "b": {"f/web/r1/1"}},
		assign:  map[string][]string{"b": {"f/web/r1/1"}, "c": {"f/web/r1/0"}},
		stop:    []string{"f/web/r1/0@a"},
		start:   []string{"f/web/r1/0@c"},
		changed: []string{"a", "c"},
	}, {
		name:    "critical exactly as long as the grace period is not dead yet",
		desired: web[:1],
		hosts:   []Host{criticalFor(host("a", 1000, 0), time.Minute), host("b", 1000, 0)},
		current: map[string][]string{"a": {"f/web/r1/0"}},
		changed: none,
	}, {
		name:    "instances on a vanished host are re-placed",
		desired: web[:1],
		hosts:   []Host{host("b", 1000, 0)},
		current: map[string][]string{"gone": {"f/web/r1/0"}},
		stop:    []string{"f/web/r1/0@gone"},
		start:   []string{"f/web/r1/0@b"},
		changed: []string{"b", "gone"},
	}, {
		name:     "nowhere to go",
		desired:  web[:1],
		hosts:    []Host{criticalFor(host("a", 1000, 0), time.Hour)},
		current:  map[string][]string{"a": {"f/web/r1/0"}},
		stop:     []string{"f/web/r1/0@a"},
		unplaced: map[string]string{"f/web/r1/0": "1 host dead"},
		changed:  []string{"a"},
	}, {
		name:    "undesired instances are stopped, on any host",
		desired: nil,
		hosts:   []Host{host("a", 1000, 0)},
		current: map[string][]string{"a": {"old"}, "gone": {"older"}},
		stop:    []string{"old@a", "older@gone"},
		changed: []string{"a", "gone"},
		check: func(t *testing.T, r Result) {
			if !reflect.DeepEqual(r.Stop[0].Instance, Instance{ID: "old"}) {
				t.Errorf("an undesired instance is known by ID only: %+v", r.Stop[0].Instance)
			}
		},
	}})
}

func TestReasons(t *testing.T) {
	big := Resources{CPU: 100, Memory: 2 * gib}
	runCases(t, []planCase{{
		name:    "each host counted once, under the first reason",
		desired: scale("f", "web", "r1", 1, big, constrained(Constraint{"zone", OpEqual, "eu"})),
		hosts: []Host{
			criticalFor(host("dead", 1000, 4*gib, "zone=us"), time.Hour),
			criticalFor(host("crit", 1000, 4*gib, "zone=eu"), time.Second),
			host("us1", 1000, 4*gib, "zone=us"), host("us2", 1000, 4*gib, "zone=us"),
			host("small", 1000, gib, "zone=eu"),
			host("busy", 50, gib, "zone=eu"),
		},
		unplaced: map[string]string{"f/web/r1/0": "cpu exhausted on 1 host, memory exhausted on 1 host, constraint zone=eu filtered 2, 1 host critical, 1 host dead"},
	}, {
		name:     "no hosts",
		desired:  scale("f", "web", "r1", 1, big),
		unplaced: map[string]string{"f/web/r1/0": "no hosts"},
	}, {
		name:     "duplicate instance id",
		desired:  join(scale("f", "web", "r1", 1, big), scale("f", "web", "r1", 1, big)),
		hosts:    []Host{host("a", 0, 0)},
		assign:   map[string][]string{"a": {"f/web/r1/0"}},
		unplaced: map[string]string{"f/web/r1/0": "duplicate instance id"},
	}})
}

func TestSeed(t *testing.T) {
	desired := scale("f", "web", "r1", 1, Resources{CPU: 100})
	var hosts []Host
	for i := range 20 {
		hosts = append(hosts, host(fmt.Sprintf("h%02d", i), 1000, 0))
	}
	chosen := make(map[string]bool)
	for seed := range int64(20) {
		r := Plan(desired, hosts, nil, now, Options{Seed: seed})
		again := Plan(desired, hosts, nil, now, Options{Seed: seed})
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("seed %d: two plans differ", seed)
		}
		chosen[r.Start[0].Host] = true
	}
	if len(chosen) < 5 {
		t.Errorf("20 seeds broke a 20-way tie the same way too often: %v", slices.Sorted(maps.Keys(chosen)))
	}
}

func TestShare(t *testing.T) {
	for _, c := range []struct{ used, capacity, want int64 }{
		{0, 1000, 0}, {500, 1000, 500_000}, {1000, 1000, 1_000_000},
		{1 << 62, 1 << 62, 1_000_000}, {1 << 61, 1 << 62, 500_000}, {5, 0, 0},
	} {
		if got := share(c.used, c.capacity); got != c.want {
			t.Errorf("share(%d, %d) = %d, want %d", c.used, c.capacity, got, c.want)
		}
	}
}
