package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

// DefaultPrefix is where everything lives in Consul KV unless configured otherwise.
const DefaultPrefix = "gilliam/"

// ErrConflict is returned by a check-and-set write whose index no longer matches: someone
// else wrote first. Re-read, re-plan, retry.
var ErrConflict = errors.New("state: check-and-set conflict")

// maxTxnOps is Consul's limit of operations in one transaction.
const maxTxnOps = 64

// Store reads and writes the desired-state documents in Consul KV, as JSON, under a prefix:
//
//	releases/<formation>/<release id>   Release (immutable)
//	formations/<formation>/desired      Desired
//	formations/<formation>/status       FormationStatus
//	hosts/<host>/assignment             Assignment
//	hosts/<host>/status                 HostStatus
//	claims/<formation>                  Claim: which repository and file own the name
//	leader                              the sync daemons' lock
type Store struct {
	client *api.Client
	prefix string
	writes writeCounter
}

// Writes counts what a Store wrote to Consul: requests (a put, a check-and-set, a delete,
// a transaction) and the keys they wrote.
type Writes struct {
	Requests int64 `json:"requests"`
	Keys     int64 `json:"keys"`
}

type writeCounter struct{ requests, keys atomic.Int64 }

func (w *writeCounter) add(keys int) {
	w.requests.Add(1)
	w.keys.Add(int64(keys))
}

// Writes returns how much this store has written so far.
func (s *Store) Writes() Writes {
	return Writes{Requests: s.writes.requests.Load(), Keys: s.writes.keys.Load()}
}

// NewStore returns a store under prefix (DefaultPrefix when empty; a trailing slash is
// added).
func NewStore(client *api.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Store{client: client, prefix: prefix}
}

// Client is the Consul client the store uses.
func (s *Store) Client() *api.Client { return s.client }

// Key layout.
func (s *Store) releasesKey(formation string) string { return s.prefix + "releases/" + formation + "/" }
func (s *Store) releaseKey(formation, id string) string {
	return s.releasesKey(formation) + id
}
func (s *Store) formationsKey() string { return s.prefix + "formations/" }
func (s *Store) desiredKey(formation string) string {
	return s.formationsKey() + formation + "/desired"
}
func (s *Store) formationStatusKey(formation string) string {
	return s.formationsKey() + formation + "/status"
}
func (s *Store) configKey(formation string) string { return s.formationsKey() + formation + "/config" }
func (s *Store) historyKey(formation string) string {
	return s.formationsKey() + formation + "/history"
}
func (s *Store) hostsKey() string                 { return s.prefix + "hosts/" }
func (s *Store) assignmentKey(host string) string { return s.hostsKey() + host + "/assignment" }
func (s *Store) hostStatusKey(host string) string { return s.hostsKey() + host + "/status" }

func (s *Store) placementKey() string             { return s.prefix + "placement" }
func (s *Store) claimKey(formation string) string { return s.prefix + "claims/" + formation }

// Claim reads who owns a formation name; nil when nobody has claimed it.
func (s *Store) Claim(ctx context.Context, formation string) (*Claim, error) {
	var c Claim
	found, _, err := s.get(ctx, s.claimKey(formation), &c)
	if err != nil || !found {
		return nil, err
	}
	return &c, nil
}

// PutClaim gives a formation name to a source, whoever had it.
func (s *Store) PutClaim(ctx context.Context, c *Claim) error {
	return s.put(ctx, s.claimKey(c.Formation), c, nil)
}
func (s *Store) observedKey(repo string) string {
	return s.prefix + "repos/" + repo + "/observed"
}

// Observed reads what was done with a repository's refs (repo names its key: a folder-safe
// form of its URL); an empty record when absent.
func (s *Store) Observed(ctx context.Context, repo string) (*Observed, error) {
	o := Observed{Repo: repo}
	_, _, err := s.get(ctx, s.observedKey(repo), &o)
	if o.Targets == nil {
		o.Targets = map[string]ObservedTarget{}
	}
	return &o, err
}

// PutObserved records what was done with a repository's refs.
func (s *Store) PutObserved(ctx context.Context, o *Observed) error {
	return s.put(ctx, s.observedKey(o.Repo), o, nil)
}

// PlacementReport reads the scheduler's last report; an empty one when absent.
func (s *Store) PlacementReport(ctx context.Context) (*PlacementReport, error) {
	var r PlacementReport
	_, _, err := s.get(ctx, s.placementKey(), &r)
	return &r, err
}

// PutPlacementReport records what the scheduler could not place.
func (s *Store) PutPlacementReport(ctx context.Context, r *PlacementReport) error {
	return s.put(ctx, s.placementKey(), r, nil)
}

// LeaderKey is the key of the lock the sync daemons contend for.
func (s *Store) LeaderKey() string { return s.prefix + "leader" }

// get reads key into v. found is false when the key does not exist; index is the key's
// ModifyIndex (0 when absent), for a later check-and-set.
func (s *Store) get(ctx context.Context, key string, v any) (found bool, index uint64, err error) {
	pair, _, err := s.client.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return false, 0, fmt.Errorf("read %s: %w", key, err)
	}
	if pair == nil {
		return false, 0, nil
	}
	if err := json.Unmarshal(pair.Value, v); err != nil {
		return false, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, pair.ModifyIndex, nil
}

// put writes v at key. With cas nil the write is unconditional; with cas set it succeeds
// only if the key's ModifyIndex is *cas (0: the key must not exist), else ErrConflict.
func (s *Store) put(ctx context.Context, key string, v any, cas *uint64) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	pair := &api.KVPair{Key: key, Value: b}
	w := (&api.WriteOptions{}).WithContext(ctx)
	if cas == nil {
		s.writes.add(1)
		if _, err := s.client.KV().Put(pair, w); err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		return nil
	}
	pair.ModifyIndex = *cas
	s.writes.add(1)
	ok, _, err := s.client.KV().CAS(pair, w)
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if !ok {
		return fmt.Errorf("write %s: %w", key, ErrConflict)
	}
	return nil
}

// PutRelease stores a release once. Releases are immutable: writing an ID that exists is a
// no-op, whoever wrote it, and an ID that does not match the content is refused.
func (s *Store) PutRelease(ctx context.Context, r *Release) error {
	if r.ID == "" || r.ID != r.ComputeID() {
		return fmt.Errorf("release %s/%s: id %q does not match its content", r.Formation, r.Service, r.ID)
	}
	zero := uint64(0)
	err := s.put(ctx, s.releaseKey(r.Formation, r.ID), r, &zero)
	if errors.Is(err, ErrConflict) {
		return nil // already there: same ID, same content
	}
	return err
}

// Release reads one release; nil when it does not exist.
func (s *Store) Release(ctx context.Context, formation, id string) (*Release, error) {
	var r Release
	found, _, err := s.get(ctx, s.releaseKey(formation, id), &r)
	if err != nil || !found {
		return nil, err
	}
	return &r, nil
}

// DeleteRelease removes a release (garbage collection: never one that runs).
func (s *Store) DeleteRelease(ctx context.Context, formation, id string) error {
	s.writes.add(1)
	if _, err := s.client.KV().Delete(s.releaseKey(formation, id), (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete release %s of %s: %w", id, formation, err)
	}
	return nil
}

// Releases lists a formation's releases, newest first.
func (s *Store) Releases(ctx context.Context, formation string) ([]*Release, error) {
	pairs, _, err := s.client.KV().List(s.releasesKey(formation), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list releases of %s: %w", formation, err)
	}
	out := make([]*Release, 0, len(pairs))
	for _, p := range pairs {
		var r Release
		if err := json.Unmarshal(p.Value, &r); err != nil {
			return nil, fmt.Errorf("decode %s: %w", p.Key, err)
		}
		out = append(out, &r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Desired reads a formation's desired state and its ModifyIndex; nil, 0 when absent.
func (s *Store) Desired(ctx context.Context, formation string) (*Desired, uint64, error) {
	var d Desired
	found, index, err := s.get(ctx, s.desiredKey(formation), &d)
	if err != nil || !found {
		return nil, 0, err
	}
	return &d, index, nil
}

// PutDesired writes a formation's desired state if its ModifyIndex is still index (0: it
// must not exist yet); ErrConflict otherwise.
func (s *Store) PutDesired(ctx context.Context, d *Desired, index uint64) error {
	return s.put(ctx, s.desiredKey(d.Formation), d, &index)
}

// ErrNoChange, returned by an UpdateDesired function, means there is nothing to write.
var ErrNoChange = errors.New("state: no change")

// UpdateDesired reads a formation's desired state (an empty one when absent), lets update
// change it, and writes it back with check-and-set, re-reading and calling update again
// on a conflict. update returns ErrNoChange to write nothing; any other error aborts.
func (s *Store) UpdateDesired(ctx context.Context, formation string, update func(*Desired) error) (*Desired, error) {
	for attempt := 0; attempt < 10; attempt++ {
		d, index, err := s.Desired(ctx, formation)
		if err != nil {
			return nil, err
		}
		if d == nil {
			d = &Desired{Formation: formation}
		}
		if d.Services == nil {
			d.Services = map[string]DesiredService{}
		}
		if err := update(d); errors.Is(err, ErrNoChange) {
			return d, nil
		} else if err != nil {
			return nil, err
		}
		err = s.PutDesired(ctx, d, index)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("desired state of %s: too many conflicting writes", formation)
}

// DeleteFormation removes a formation's desired state, status, config and history, its
// releases and its routes: what a torn-down preview leaves behind.
func (s *Store) DeleteFormation(ctx context.Context, formation string) error {
	w := (&api.WriteOptions{}).WithContext(ctx)
	for _, prefix := range []string{s.formationsKey() + formation + "/", s.releasesKey(formation)} {
		s.writes.add(1)
		if _, err := s.client.KV().DeleteTree(prefix, w); err != nil {
			return fmt.Errorf("delete %s: %w", prefix, err)
		}
	}
	// Not a tree: routes/hello is a prefix of routes/hello-pr-1.
	return s.DeleteRoutes(ctx, formation)
}

// Config reads a formation's config vars and their ModifyIndex (nil, 0 when none).
func (s *Store) Config(ctx context.Context, formation string) (map[string]string, uint64, error) {
	var c map[string]string
	_, index, err := s.get(ctx, s.configKey(formation), &c)
	return c, index, err
}

// UpdateConfig changes a formation's config vars with check-and-set, retrying on conflict.
func (s *Store) UpdateConfig(ctx context.Context, formation string, update func(map[string]string)) error {
	for attempt := 0; attempt < 10; attempt++ {
		c, index, err := s.Config(ctx, formation)
		if err != nil {
			return err
		}
		if c == nil {
			c = map[string]string{}
		}
		update(c)
		err = s.put(ctx, s.configKey(formation), c, &index)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("config of %s: too many conflicting writes", formation)
}

// maxHistory is how many events a formation's history keeps.
const maxHistory = 100

// AddEvents appends to a formation's history, keeping the newest maxHistory.
func (s *Store) AddEvents(ctx context.Context, formation string, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	for attempt := 0; attempt < 10; attempt++ {
		var h []Event
		_, index, err := s.get(ctx, s.historyKey(formation), &h)
		if err != nil {
			return err
		}
		h = append(h, events...)
		if len(h) > maxHistory {
			h = h[len(h)-maxHistory:]
		}
		err = s.put(ctx, s.historyKey(formation), h, &index)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("history of %s: too many conflicting writes", formation)
}

// History reads a formation's events, oldest first.
func (s *Store) History(ctx context.Context, formation string) ([]Event, error) {
	var h []Event
	_, _, err := s.get(ctx, s.historyKey(formation), &h)
	return h, err
}

// Formations lists the formations that have a desired state or a status, sorted.
func (s *Store) Formations(ctx context.Context) ([]string, error) {
	keys, _, err := s.client.KV().Keys(s.formationsKey(), "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list formations: %w", err)
	}
	return uniqueSegments(keys, s.formationsKey()), nil
}

// FormationStatus reads what the control plane last did with a formation; nil when absent.
func (s *Store) FormationStatus(ctx context.Context, formation string) (*FormationStatus, error) {
	var st FormationStatus
	found, _, err := s.get(ctx, s.formationStatusKey(formation), &st)
	if err != nil || !found {
		return nil, err
	}
	return &st, nil
}

// PutFormationStatus records what the control plane did with a formation.
func (s *Store) PutFormationStatus(ctx context.Context, st *FormationStatus) error {
	return s.put(ctx, s.formationStatusKey(st.Formation), st, nil)
}

// Assignment reads a host's assignment and its ModifyIndex; an empty assignment and 0 when
// the host has none.
func (s *Store) Assignment(ctx context.Context, host string) (*Assignment, uint64, error) {
	a := Assignment{Host: host}
	_, index, err := s.get(ctx, s.assignmentKey(host), &a)
	return &a, index, err
}

// WaitAssignment is a blocking query on a host's assignment: it returns when the key's index
// differs from index, or after wait with the same index. It returns an empty assignment
// when the key does not exist.
func (s *Store) WaitAssignment(ctx context.Context, host string, index uint64, wait time.Duration) (*Assignment, uint64, error) {
	key := s.assignmentKey(host)
	pair, meta, err := s.client.KV().Get(key, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("watch %s: %w", key, err)
	}
	a := &Assignment{Host: host}
	if pair != nil {
		if err := json.Unmarshal(pair.Value, a); err != nil {
			return nil, meta.LastIndex, fmt.Errorf("decode %s: %w", key, err)
		}
	}
	return a, meta.LastIndex, nil
}

// Assignments reads every host's assignment, with the ModifyIndex of each for WriteAssignments.
func (s *Store) Assignments(ctx context.Context) (map[string]*Assignment, map[string]uint64, error) {
	pairs, _, err := s.client.KV().List(s.hostsKey(), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("list assignments: %w", err)
	}
	out, indexes := map[string]*Assignment{}, map[string]uint64{}
	for _, p := range pairs {
		if !strings.HasSuffix(p.Key, "/assignment") {
			continue
		}
		var a Assignment
		if err := json.Unmarshal(p.Value, &a); err != nil {
			return nil, nil, fmt.Errorf("decode %s: %w", p.Key, err)
		}
		out[a.Host], indexes[a.Host] = &a, p.ModifyIndex
	}
	return out, indexes, nil
}

// WriteAssignments writes host assignments with check-and-set on each document's
// ModifyIndex (indexes[host], 0 or absent for a new one), in Consul transactions of at most
// 64 operations. A conflict returns ErrConflict; transactions already committed stay, which
// is safe because each host document is complete on its own.
func (s *Store) WriteAssignments(ctx context.Context, as []*Assignment, indexes map[string]uint64) error {
	ops := make(api.TxnOps, 0, len(as))
	for _, a := range as {
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("encode assignment of %s: %w", a.Host, err)
		}
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{
			Verb: api.KVCAS, Key: s.assignmentKey(a.Host), Value: b, Index: indexes[a.Host],
		}})
	}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		s.writes.add(n)
		ok, resp, _, err := s.client.Txn().Txn(ops[:n], (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("write assignments: %w", err)
		}
		if !ok {
			var why []string
			for _, e := range resp.Errors {
				why = append(why, e.What)
			}
			return fmt.Errorf("write assignments (%s): %w", strings.Join(why, "; "), ErrConflict)
		}
		ops = ops[n:]
	}
	return nil
}

// HostStatus reads what a host daemon last reported; nil when absent.
func (s *Store) HostStatus(ctx context.Context, host string) (*HostStatus, error) {
	var st HostStatus
	found, _, err := s.get(ctx, s.hostStatusKey(host), &st)
	if err != nil || !found {
		return nil, err
	}
	return &st, nil
}

// PutHostStatus records a host daemon's report.
func (s *Store) PutHostStatus(ctx context.Context, st *HostStatus) error {
	return s.put(ctx, s.hostStatusKey(st.Host), st, nil)
}

// uniqueSegments returns the distinct first path segments of keys under prefix, sorted.
func uniqueSegments(keys []string, prefix string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		seg, _, _ := strings.Cut(strings.TrimPrefix(k, prefix), "/")
		if seg != "" && !seen[seg] {
			seen[seg] = true
			out = append(out, seg)
		}
	}
	sort.Strings(out)
	return out
}

// LeaderLock is the lock the sync daemons contend for: held through a session with ttl,
// and lockDelay before another may take it after a holder is lost. With checkID (see
// RegisterSyncDaemon) the session is also bound to that check: a daemon that dies lets its
// check go critical within the check's TTL, which ends the session at once, well before
// the session's own TTL (Consul's minimum is 10s, and it waits up to twice that).
func (s *Store) LeaderLock(id string, ttl, lockDelay time.Duration, checkID string) (*api.Lock, error) {
	se := &api.SessionEntry{Name: "gilliam-sync leader " + id, TTL: ttl.String(), LockDelay: lockDelay}
	if checkID != "" {
		se.NodeChecks = []string{"serfHealth"}
		se.ServiceChecks = []api.ServiceCheck{{ID: checkID}}
	}
	return s.client.LockOpts(&api.LockOptions{
		Key:         s.LeaderKey(),
		Value:       []byte(id),
		SessionOpts: se,
		SessionTTL:  ttl.String(),
	})
}

// SyncDaemonService is the Consul service each sync daemon registers on its local agent,
// with a TTL check it keeps passing: the leader's session is bound to it.
const SyncDaemonService = "gilliam-sync"

// RegisterSyncDaemon registers a sync daemon's liveness (a TTL check of ttl) on the local
// agent, passing; keep it passing with PassSyncDaemon. It returns the check's ID.
//
// logs, when set, is the URL where the daemon serves its build logs (meta "logs").
func (s *Store) RegisterSyncDaemon(id string, ttl time.Duration, logs string) (string, error) {
	inst := s.Installation()
	checkID := s.syncDaemonID(id) + "-alive"
	meta := map[string]string{"daemon": id, names.MetaInstallation: inst}
	if logs != "" {
		meta["logs"] = logs
	}
	reg := &api.AgentServiceRegistration{ID: s.syncDaemonID(id), Name: SyncDaemonService,
		Tags: []string{names.InstallationTag(inst)}, Meta: meta,
		Check: &api.AgentServiceCheck{CheckID: checkID, Name: "sync daemon " + id + " alive", TTL: ttl.String(),
			Status: api.HealthPassing, DeregisterCriticalServiceAfter: "1m"}}
	if err := s.client.Agent().ServiceRegister(reg); err != nil {
		return "", fmt.Errorf("register sync daemon %s: %w", id, err)
	}
	return checkID, nil
}

// syncDaemonID is a sync daemon's registration ID: qualified by the installation, so that
// daemons of two installations with one name never share one.
func (s *Store) syncDaemonID(id string) string {
	return SyncDaemonService + "-" + s.Installation() + "-" + id
}

// PassSyncDaemon keeps a sync daemon's liveness check passing.
func (s *Store) PassSyncDaemon(checkID string) error {
	return s.client.Agent().UpdateTTL(checkID, "alive", api.HealthPassing)
}

// DeregisterSyncDaemon removes a sync daemon's liveness registration (a clean stop).
func (s *Store) DeregisterSyncDaemon(id string) error {
	return s.client.Agent().ServiceDeregister(s.syncDaemonID(id))
}
