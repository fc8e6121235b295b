package hostd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// disk keeps, under the data dir, what a host daemon needs to run its instances when it
// starts and Consul does not answer: the last assignment, and the releases it names
// (releases are immutable, so a copy never goes stale). With no dir it keeps nothing.
type disk struct {
	dir string
}

func (k disk) assignmentPath() string { return filepath.Join(k.dir, "assignment.json") }
func (k disk) releasePath(id string) string {
	return filepath.Join(k.dir, "releases", id+".json")
}

// sealedPath keeps a release's config vars as sealed to this host: opened only when a
// container is made, never written in clear.
func (k disk) sealedPath(id string) string {
	return filepath.Join(k.dir, "releases", id+".sealed.json")
}

func (k disk) saveSealed(e *state.SealedEnv) error { return k.write(k.sealedPath(e.Release), e) }

// loadSealed returns a persisted sealed copy; nil when there is none.
func (k disk) loadSealed(id string) (*state.SealedEnv, error) {
	var e state.SealedEnv
	if ok, err := k.read(k.sealedPath(id), &e); !ok || err != nil {
		return nil, err
	}
	return &e, nil
}

func (k disk) pulledPath() string { return filepath.Join(k.dir, "images.json") }

// savePulled records the images the daemon pulled, which it alone may remove.
func (k disk) savePulled(images map[string]*pulledImage) error {
	return k.write(k.pulledPath(), images)
}

// loadPulled returns the recorded pulls; empty when there are none.
func (k disk) loadPulled() (map[string]*pulledImage, error) {
	images := map[string]*pulledImage{}
	if _, err := k.read(k.pulledPath(), &images); err != nil {
		return map[string]*pulledImage{}, err
	}
	return images, nil
}

func (k disk) saveAssignment(a *state.Assignment) error {
	return k.write(k.assignmentPath(), a)
}

// loadAssignment returns the persisted assignment; nil when there is none.
func (k disk) loadAssignment() (*state.Assignment, error) {
	var a state.Assignment
	if ok, err := k.read(k.assignmentPath(), &a); !ok || err != nil {
		return nil, err
	}
	return &a, nil
}

func (k disk) saveRelease(r *state.Release) error {
	return k.write(k.releasePath(r.ID), r)
}

// loadRelease returns a persisted release; nil when there is none.
func (k disk) loadRelease(id string) (*state.Release, error) {
	var r state.Release
	if ok, err := k.read(k.releasePath(id), &r); !ok || err != nil {
		return nil, err
	}
	return &r, nil
}

// pruneReleases removes the persisted releases no instance of keep uses.
func (k disk) pruneReleases(keep []state.Instance) error {
	if k.dir == "" {
		return nil
	}
	used := map[string]bool{}
	for _, inst := range keep {
		used[inst.Release] = true
	}
	entries, err := os.ReadDir(filepath.Join(k.dir, "releases"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		id = strings.TrimSuffix(id, ".sealed")
		if ok && !used[id] {
			errs = append(errs, os.Remove(filepath.Join(k.dir, "releases", e.Name())))
		}
	}
	return errors.Join(errs...)
}

// write replaces path atomically: a daemon killed mid-write leaves the old file whole.
func (k disk) write(path string, v any) error {
	if k.dir == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync() // the machine may go down too, not only the daemon
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (k disk) read(path string, v any) (bool, error) {
	if k.dir == "" {
		return false, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}
