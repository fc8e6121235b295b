package state

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Snapshot is everything under the store's prefix at one Consul index, decoded: what the
// control plane decides from. It is a value: nothing in it changes after it is read, and
// a newer one is read whole.
type Snapshot struct {
	// Index is the Consul index the snapshot was read at: a blocking read with it returns
	// when anything under the prefix changes.
	Index uint64

	Desired     map[string]*Desired            // formation ->
	Status      map[string]*FormationStatus    // formation ->
	Config      map[string]map[string]string   // formation -> config vars
	History     map[string][]Event             // formation -> events, oldest first
	Timeline    map[string][]Timeline          // formation -> releases' deploy timelines, oldest first
	Releases    map[string]map[string]*Release // formation -> release ID ->
	Assignments map[string]*Assignment         // host ->
	HostStatus  map[string]*HostStatus         // host ->
	Observed    map[string]*Observed           // repository key ->
	Claims      map[string]*Claim
	Routes      map[string]*Routes // formation ->
	Placement   *PlacementReport
	Volumes     map[string]*FormationVolumes // formation ->

	// Sealed config vars (see secrets.go): values here are ciphertext; Config's values too.
	RootKey      *RootKey
	ReleaseIDKey string                           // sealed to the root key
	Secrets      map[string]map[string]string     // formation -> release -> sealed config vars
	HostKeys     map[string]*HostKey              // host ->
	Sealed       map[string]map[string]*SealedEnv // host -> release ->

	// Problems are keys whose value could not be decoded: they are left out, and said.
	Problems []string

	indexes map[string]uint64 // key -> ModifyIndex, for check-and-set
	store   *Store
}

// Formations lists the formations with a desired state or a status, sorted.
func (s *Snapshot) Formations() []string {
	seen := map[string]bool{}
	var out []string
	for f := range s.Desired {
		seen[f] = true
		out = append(out, f)
	}
	for f := range s.Status {
		if !seen[f] {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// The ModifyIndex of a document, 0 when it does not exist: what a check-and-set write of
// it passes.
func (s *Snapshot) DesiredIndex(formation string) uint64 {
	return s.indexes[s.store.desiredKey(formation)]
}
func (s *Snapshot) ConfigIndex(formation string) uint64 {
	return s.indexes[s.store.configKey(formation)]
}
func (s *Snapshot) HistoryIndex(formation string) uint64 {
	return s.indexes[s.store.historyKey(formation)]
}
func (s *Snapshot) AssignmentIndex(host string) uint64 {
	return s.indexes[s.store.assignmentKey(host)]
}
func (s *Snapshot) ClaimIndex(formation string) uint64 {
	return s.indexes[s.store.claimKey(formation)]
}
func (s *Snapshot) ObservedIndex(repo string) uint64 {
	return s.indexes[s.store.observedKey(repo)]
}

// Snapshot reads everything under the prefix in one request. With index above 0 it is a
// blocking query: it returns when something changed after index, or after wait.
func (s *Store) Snapshot(ctx context.Context, index uint64, wait time.Duration) (*Snapshot, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	pairs, meta, err := s.client.KV().List(s.prefix, q)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.prefix, err)
	}
	return s.decode(pairs, meta.LastIndex), nil
}

// EmptySnapshot is the snapshot of a store with nothing in it, for planners and tests.
func (s *Store) EmptySnapshot() *Snapshot { return s.decode(nil, 0) }

func (s *Store) decode(pairs api.KVPairs, index uint64) *Snapshot {
	snap := &Snapshot{
		Index: index, store: s, indexes: map[string]uint64{},
		Desired: map[string]*Desired{}, Status: map[string]*FormationStatus{},
		Config: map[string]map[string]string{}, History: map[string][]Event{}, Timeline: map[string][]Timeline{},
		Releases: map[string]map[string]*Release{}, Assignments: map[string]*Assignment{},
		HostStatus: map[string]*HostStatus{}, Observed: map[string]*Observed{}, Claims: map[string]*Claim{}, Routes: map[string]*Routes{},
		Placement: &PlacementReport{}, Volumes: map[string]*FormationVolumes{},
		Secrets: map[string]map[string]string{}, HostKeys: map[string]*HostKey{}, Sealed: map[string]map[string]*SealedEnv{},
	}
	for _, p := range pairs {
		if err := snap.add(strings.TrimPrefix(p.Key, s.prefix), p.Value); err != nil {
			snap.Problems = append(snap.Problems, fmt.Sprintf("%s: %v", p.Key, err))
			continue
		}
		snap.indexes[p.Key] = p.ModifyIndex
	}
	return snap
}

// add decodes one key, by its place in the layout (see Store).
func (snap *Snapshot) add(key string, value []byte) error {
	parts := strings.Split(key, "/")
	into := func(v any) error { return json.Unmarshal(value, v) }
	if handled, err := snap.addSecret(parts, value, into); handled {
		return err
	}
	switch {
	case len(parts) == 3 && parts[0] == "formations":
		f := parts[1]
		switch parts[2] {
		case "desired":
			var d Desired
			if err := into(&d); err != nil {
				return err
			}
			if d.Services == nil {
				d.Services = map[string]DesiredService{}
			}
			snap.Desired[f] = &d
		case "status":
			var st FormationStatus
			if err := into(&st); err != nil {
				return err
			}
			snap.Status[f] = &st
		case "config":
			var c map[string]string
			if err := into(&c); err != nil {
				return err
			}
			snap.Config[f] = c
		case "history":
			var h []Event
			if err := into(&h); err != nil {
				return err
			}
			snap.History[f] = h
		case "timeline":
			var tl []Timeline
			if err := into(&tl); err != nil {
				return err
			}
			snap.Timeline[f] = tl
		}
	case len(parts) == 3 && parts[0] == "releases":
		var r Release
		if err := into(&r); err != nil {
			return err
		}
		if snap.Releases[parts[1]] == nil {
			snap.Releases[parts[1]] = map[string]*Release{}
		}
		snap.Releases[parts[1]][parts[2]] = &r
	case len(parts) == 3 && parts[0] == "hosts" && parts[2] == "assignment":
		a := Assignment{Host: parts[1]}
		if err := into(&a); err != nil {
			return err
		}
		snap.Assignments[parts[1]] = &a
	case len(parts) == 3 && parts[0] == "hosts" && parts[2] == "status":
		var st HostStatus
		if err := into(&st); err != nil {
			return err
		}
		snap.HostStatus[parts[1]] = &st
	case len(parts) == 3 && parts[0] == "repos" && parts[2] == "observed":
		o := Observed{Repo: parts[1]}
		if err := into(&o); err != nil {
			return err
		}
		if o.Targets == nil {
			o.Targets = map[string]ObservedTarget{}
		}
		snap.Observed[parts[1]] = &o
	case len(parts) == 2 && parts[0] == "routes":
		var r Routes
		if err := into(&r); err != nil {
			return err
		}
		snap.Routes[parts[1]] = &r
	case len(parts) == 2 && parts[0] == "claims":
		var c Claim
		if err := into(&c); err != nil {
			return err
		}
		snap.Claims[parts[1]] = &c
	case len(parts) == 2 && parts[0] == "volumes":
		v := FormationVolumes{Formation: parts[1]}
		if err := into(&v); err != nil {
			return err
		}
		if v.Slots == nil {
			v.Slots = map[string]VolumeSlot{}
		}
		snap.Volumes[parts[1]] = &v
	case key == "placement":
		return into(snap.Placement)
	}
	return nil
}

// Batch is a set of writes that must agree, made in one Consul transaction (or, past 64
// operations, in several, the first holding every check-and-set). Build it with the Put
// and Delete methods, then Store.Apply it.
type Batch struct {
	store *Store
	ops   api.TxnOps
	err   error
}

// NewBatch starts an empty batch.
func (s *Store) NewBatch() *Batch { return &Batch{store: s} }

// Len is the number of operations in the batch.
func (b *Batch) Len() int { return len(b.ops) }

func (b *Batch) put(key string, v any, cas *uint64) {
	value, err := json.Marshal(v)
	if err != nil {
		b.err = fmt.Errorf("encode %s: %w", key, err)
		return
	}
	op := &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: value}
	if cas != nil {
		op.Verb, op.Index = api.KVCAS, *cas
	}
	b.ops = append(b.ops, &api.TxnOp{KV: op})
}

func ptr(i uint64) *uint64 { return &i }

// PutRelease writes a release. Releases are content-addressed, so the caller writes only
// those the snapshot does not hold; one written meanwhile by another is the same content.
func (b *Batch) PutRelease(r *Release) {
	if r.ID == "" || r.ID != r.ComputeID() {
		b.err = fmt.Errorf("release %s/%s: id %q does not match its content", r.Formation, r.Service, r.ID)
		return
	}
	b.put(b.store.releaseKey(r.Formation, r.ID), r, nil)
}

// PutDesired writes a desired state if its ModifyIndex is still index.
func (b *Batch) PutDesired(d *Desired, index uint64) {
	b.put(b.store.desiredKey(d.Formation), d, ptr(index))
}

// PutStatus writes a formation's status.
func (b *Batch) PutStatus(st *FormationStatus) {
	b.put(b.store.formationStatusKey(st.Formation), st, nil)
}

// PutObserved writes what was done with a repository's refs.
func (b *Batch) PutObserved(o *Observed) { b.put(b.store.observedKey(o.Repo), o, nil) }

// PutHistory writes a formation's whole history (the caller appends and trims to
// maxHistory with AppendEvents) if its ModifyIndex is still index.
func (b *Batch) PutHistory(formation string, h []Event, index uint64) {
	b.put(b.store.historyKey(formation), h, ptr(index))
}

// PutClaim writes a formation's claim if its ModifyIndex is still index (0: it must not
// exist: the first source to claim a name wins).
func (b *Batch) PutClaim(c *Claim, index uint64) { b.put(b.store.claimKey(c.Formation), c, ptr(index)) }

// PutRoutes writes what the router needs of a formation (the caller checked its domains
// against the other formations').
func (b *Batch) PutRoutes(r *Routes) { b.put(b.store.routeKey(r.Formation), r, nil) }

// PutAssignment writes a host's assignment if its ModifyIndex is still index.
func (b *Batch) PutAssignment(a *Assignment, index uint64) {
	b.put(b.store.assignmentKey(a.Host), a, ptr(index))
}

// PutPlacementReport writes the scheduler's report.
func (b *Batch) PutPlacementReport(r *PlacementReport) { b.put(b.store.placementKey(), r, nil) }

// DeleteRelease removes a release.
func (b *Batch) DeleteRelease(formation, id string) {
	b.ops = append(b.ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: b.store.releaseKey(formation, id)}})
}

// DeleteFormation removes a formation's documents, releases and their sealed config vars.
func (b *Batch) DeleteFormation(formation string) {
	for _, prefix := range []string{b.store.formationsKey() + formation + "/", b.store.releasesKey(formation), b.store.secretsKey(formation)} {
		b.ops = append(b.ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDeleteTree, Key: prefix}})
	}
	b.ops = append(b.ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: b.store.routeKey(formation)}})
}

// AppendEvents is history with events added, keeping the newest maxHistory.
func AppendEvents(history []Event, events ...Event) []Event {
	h := append(append([]Event{}, history...), events...)
	if len(h) > maxHistory {
		h = h[len(h)-maxHistory:]
	}
	return h
}

// Apply makes a batch's writes. Check-and-set operations go first, so that when a batch
// is longer than one transaction a conflict stops it before anything else is written; a
// conflict returns ErrConflict and the caller re-reads and re-plans.
func (s *Store) Apply(ctx context.Context, b *Batch) error {
	if b.err != nil {
		return b.err
	}
	ops := make(api.TxnOps, 0, len(b.ops))
	for _, op := range b.ops {
		if op.KV.Verb == api.KVCAS {
			ops = append(ops, op)
		}
	}
	for _, op := range b.ops {
		if op.KV.Verb != api.KVCAS {
			ops = append(ops, op)
		}
	}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		s.writes.add(n)
		ok, resp, _, err := s.client.Txn().Txn(ops[:n], (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("write %d keys: %w", n, err)
		}
		if !ok {
			var why []string
			for _, e := range resp.Errors {
				why = append(why, e.What)
			}
			return fmt.Errorf("write %d keys (%s): %w", n, strings.Join(why, "; "), ErrConflict)
		}
		ops = ops[n:]
	}
	return nil
}

// Clone is a copy whose maps may be changed without changing s: what a dry run applies
// its writes to. The documents themselves are shared; replace them, never change them.
func (s *Snapshot) Clone() *Snapshot {
	c := *s
	c.Desired = maps.Clone(s.Desired)
	c.Status = maps.Clone(s.Status)
	c.Config = maps.Clone(s.Config)
	c.History = maps.Clone(s.History)
	c.Timeline = maps.Clone(s.Timeline)
	c.Releases = map[string]map[string]*Release{}
	for f, rs := range s.Releases {
		c.Releases[f] = maps.Clone(rs)
	}
	c.Assignments = maps.Clone(s.Assignments)
	c.HostStatus = maps.Clone(s.HostStatus)
	c.Observed = maps.Clone(s.Observed)
	c.Claims = maps.Clone(s.Claims)
	c.Routes = maps.Clone(s.Routes)
	c.Secrets = map[string]map[string]string{}
	for f, rs := range s.Secrets {
		c.Secrets[f] = maps.Clone(rs)
	}
	c.HostKeys = maps.Clone(s.HostKeys)
	c.Sealed = map[string]map[string]*SealedEnv{}
	for h, es := range s.Sealed {
		c.Sealed[h] = maps.Clone(es)
	}
	c.indexes = maps.Clone(s.indexes)
	return &c
}
