package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// OneOff is a process run once in a container of a release, on one host: `gilliam-sync
// run`, or a release phase. Whoever wants it written writes this request; the host daemon
// of Host runs it, and writes how it goes (OneOffStatus) and, for an attached one, its
// output in chunks, for the requester to read (docs/oneoff.md). The request exists as long
// as the one-off should: deleting it stops the container and removes what it left.
type OneOff struct {
	// ID is unique and a DNS label (NewOneOffID): it names the container with the host.
	ID        string `json:"id"`
	Host      string `json:"host"`
	Formation string `json:"formation"`
	Service   string `json:"service"`
	Release   string `json:"release"`
	// Command replaces the release's; empty runs the release's own.
	Command []string `json:"command,omitempty"`
	// Attached says a requester reads the output: it is written to Consul in chunks.
	// Detached, it stays in the container's log, and the host removes everything once the
	// process exits.
	Attached bool `json:"attached,omitempty"`
	// Stdin is given from chunks the requester writes (an empty one ends it); TTY gives the
	// process a terminal of Cols x Rows.
	Stdin bool `json:"stdin,omitempty"`
	TTY   bool `json:"tty,omitempty"`
	Cols  uint `json:"cols,omitempty"`
	Rows  uint `json:"rows,omitempty"`
	// Timeout kills the process when it runs longer; zero: no limit.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Cause is who asked: "run" (a person) or "release" (a release phase).
	Cause   string    `json:"cause,omitempty"`
	Created time.Time `json:"created"`
}

// The states of a one-off, in order.
const (
	OneOffStarting = "starting" // the image is pulled, the container made
	OneOffRunning  = "running"
	OneOffExited   = "exited" // ExitCode says how
	OneOffFailed   = "failed" // it could not run, or was killed (Error says why)
)

// OneOffStatus is what the host daemon running a one-off says of it.
type OneOffStatus struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Container string `json:"container,omitempty"`
	ExitCode  int    `json:"exit_code"`
	Error     string `json:"error,omitempty"`
	// LastChunk is the number of the last output chunk written (0: none): once the state
	// is exited or failed, every chunk up to it is there. Chunks are numbered by the time
	// they were written (Unix nanoseconds, each above the one before), so a daemon that
	// takes a one-off over from another carries on after it.
	LastChunk uint64 `json:"last_chunk,omitempty"`
	// Tail are the last lines of the output (of an attached one-off), for status.
	Tail     []string  `json:"tail,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Updated  time.Time `json:"updated"`
}

// The first byte of an output chunk says which stream the rest is from; a one-off with a
// terminal has one stream, OneOffStdout.
const (
	OneOffStdout byte = '1'
	OneOffStderr byte = '2'
)

// Done says whether the one-off has ended, for good or not.
func (s *OneOffStatus) Done() bool {
	return s != nil && (s.State == OneOffExited || s.State == OneOffFailed)
}

// NewOneOffID is a fresh one-off ID: "run-" and 10 hex digits from the clock and a random
// source (the caller's, so this stays pure).
func NewOneOffID(random uint64) string {
	return fmt.Sprintf("run-%010x", random&0xffffffffff)
}

// One-offs live under their own prefix, beside the state's (gilliam-run/ for gilliam/):
// the sync leader follows everything under the state's prefix with a blocking query, and
// output chunks written there would wake it for nothing.
//
//	requests/<host>/<id>        OneOff (the requester writes, deletes to stop)
//	io/<host>/<id>/status       OneOffStatus (the host writes)
//	io/<host>/<id>/out/<n>      output chunk n (the host writes, the requester reads in order and deletes)
//	io/<host>/<id>/in/<n>       stdin chunk n (the requester writes, the host reads and deletes)
func (s *Store) runPrefix() string { return strings.TrimSuffix(s.prefix, "/") + "-run/" }

// RunPrefix is the KV prefix of one-offs, for ACL policies.
func (s *Store) RunPrefix() string { return s.runPrefix() }

func (s *Store) oneOffRequests(host string) string { return s.runPrefix() + "requests/" + host + "/" }
func (s *Store) oneOffIO(host, id string) string {
	return s.runPrefix() + "io/" + host + "/" + id + "/"
}

// chunkKey numbers chunks so that keys sort in their order.
func chunkKey(n uint64) string { return fmt.Sprintf("%020d", n) }

// PutOneOff writes a one-off's request; it must not exist yet.
func (s *Store) PutOneOff(ctx context.Context, o *OneOff) error {
	if o.ID == "" || o.Host == "" {
		return errors.New("state: a one-off needs an id and a host")
	}
	zero := uint64(0)
	return s.put(ctx, s.oneOffRequests(o.Host)+o.ID, o, &zero)
}

// OneOff reads a one-off's request; nil when there is none (never made, or stopped).
func (s *Store) OneOff(ctx context.Context, host, id string) (*OneOff, error) {
	var o OneOff
	found, _, err := s.get(ctx, s.oneOffRequests(host)+id, &o)
	if err != nil || !found {
		return nil, err
	}
	return &o, nil
}

// DeleteOneOff removes a one-off: its request (the host stops the container) and its
// status and chunks.
func (s *Store) DeleteOneOff(ctx context.Context, host, id string) error {
	w := (&api.WriteOptions{}).WithContext(ctx)
	s.writes.add(2)
	if _, err := s.client.KV().Delete(s.oneOffRequests(host)+id, w); err != nil {
		return fmt.Errorf("delete one-off %s: %w", id, err)
	}
	if _, err := s.client.KV().DeleteTree(s.oneOffIO(host, id), w); err != nil {
		return fmt.Errorf("delete one-off %s: %w", id, err)
	}
	return nil
}

// WaitOneOffs is a blocking query on a host's one-off requests: it returns them when they
// change after index, or after wait.
func (s *Store) WaitOneOffs(ctx context.Context, host string, index uint64, wait time.Duration) ([]*OneOff, uint64, error) {
	pairs, meta, err := s.client.KV().List(s.oneOffRequests(host), (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("watch one-offs of %s: %w", host, err)
	}
	out, err := decodeOneOffs(pairs)
	return out, meta.LastIndex, err
}

// OneOffs lists every host's one-off requests, by ID.
func (s *Store) OneOffs(ctx context.Context) ([]*OneOff, error) {
	pairs, _, err := s.client.KV().List(s.runPrefix()+"requests/", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list one-offs: %w", err)
	}
	return decodeOneOffs(pairs)
}

func decodeOneOffs(pairs api.KVPairs) ([]*OneOff, error) {
	out := make([]*OneOff, 0, len(pairs))
	for _, p := range pairs {
		var o OneOff
		if err := json.Unmarshal(p.Value, &o); err != nil {
			return nil, fmt.Errorf("decode %s: %w", p.Key, err)
		}
		out = append(out, &o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// PutOneOffStatus records how a one-off goes.
func (s *Store) PutOneOffStatus(ctx context.Context, host string, st *OneOffStatus) error {
	return s.put(ctx, s.oneOffIO(host, st.ID)+"status", st, nil)
}

// OneOffStatus reads how a one-off goes; nil when its host has said nothing yet.
func (s *Store) OneOffStatus(ctx context.Context, host, id string) (*OneOffStatus, error) {
	var st OneOffStatus
	found, _, err := s.get(ctx, s.oneOffIO(host, id)+"status", &st)
	if err != nil || !found {
		return nil, err
	}
	return &st, nil
}

// PutOneOffOutput writes output chunk n of a one-off.
func (s *Store) PutOneOffOutput(ctx context.Context, host, id string, n uint64, data []byte) error {
	return s.putRaw(ctx, s.oneOffIO(host, id)+"out/"+chunkKey(n), data)
}

// PutOneOffInput writes stdin chunk n of a one-off; an empty chunk closes stdin.
func (s *Store) PutOneOffInput(ctx context.Context, host, id string, n uint64, data []byte) error {
	return s.putRaw(ctx, s.oneOffIO(host, id)+"in/"+chunkKey(n), data)
}

func (s *Store) putRaw(ctx context.Context, key string, data []byte) error {
	s.writes.add(1)
	if _, err := s.client.KV().Put(&api.KVPair{Key: key, Value: data}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

// OneOffIO is what a blocking read of a one-off's keys found: its status (nil before the
// host said anything) and the output chunks there, in order.
type OneOffIO struct {
	Status *OneOffStatus
	Out    []Chunk
}

// Chunk is a piece of a one-off's output or input, numbered.
type Chunk struct {
	N    uint64
	Data []byte
}

// WaitOneOffIO is a blocking query on a one-off's status and chunks: it returns them when
// they change after index, or after wait.
func (s *Store) WaitOneOffIO(ctx context.Context, host, id string, index uint64, wait time.Duration) (*OneOffIO, uint64, error) {
	prefix := s.oneOffIO(host, id)
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("watch one-off %s: %w", id, err)
	}
	io := &OneOffIO{}
	for _, p := range pairs { // in key order: chunks in their order
		rest := strings.TrimPrefix(p.Key, prefix)
		switch {
		case rest == "status":
			var st OneOffStatus
			if err := json.Unmarshal(p.Value, &st); err != nil {
				return nil, meta.LastIndex, fmt.Errorf("decode %s: %w", p.Key, err)
			}
			io.Status = &st
		case strings.HasPrefix(rest, "out/"):
			if n, err := strconv.ParseUint(strings.TrimPrefix(rest, "out/"), 10, 64); err == nil {
				io.Out = append(io.Out, Chunk{N: n, Data: p.Value})
			}
		}
	}
	return io, meta.LastIndex, nil
}

// DeleteOneOffChunks deletes chunks already read ("out" or "in"), in transactions of at
// most 64 deletes.
func (s *Store) DeleteOneOffChunks(ctx context.Context, host, id, kind string, ns []uint64) error {
	prefix := s.oneOffIO(host, id) + kind + "/"
	for len(ns) > 0 {
		n := min(len(ns), maxTxnOps)
		ops := make(api.TxnOps, 0, n)
		for _, c := range ns[:n] {
			ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: prefix + chunkKey(c)}})
		}
		s.writes.add(n)
		ok, resp, _, err := s.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("delete chunks of one-off %s: %w", id, err)
		}
		if !ok {
			return fmt.Errorf("delete chunks of one-off %s: %v", id, resp.Errors)
		}
		ns = ns[n:]
	}
	return nil
}

// WaitOneOffInput is a blocking query on a one-off's stdin chunks alone (the host reads
// them; a query on the whole one-off would wake on every output chunk it writes itself).
func (s *Store) WaitOneOffInput(ctx context.Context, host, id string, index uint64, wait time.Duration) ([]Chunk, uint64, error) {
	prefix := s.oneOffIO(host, id) + "in/"
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("watch stdin of one-off %s: %w", id, err)
	}
	var out []Chunk
	for _, p := range pairs {
		if n, err := strconv.ParseUint(strings.TrimPrefix(p.Key, prefix), 10, 64); err == nil {
			out = append(out, Chunk{N: n, Data: p.Value})
		}
	}
	return out, meta.LastIndex, nil
}
