package build

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The engine's classic builder, which runs Dockerfile builds, takes no pids limit for its
// RUN steps, but it takes a cgroup parent. pidsCgroup makes a cgroup with pids.max set for
// one build and names it as the parent: every RUN container of the build is created inside
// it, so together they can have at most that many processes. It works where the engine
// uses the cgroupfs driver and shares this process's view of /sys/fs/cgroup (the engine on
// this machine, gilliam-sync not in a container of its own); elsewhere Dockerfile builds
// run without a pids cap and the Builder says so once in its log (docs/security.md).

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// pidsCgroup is a cgroup made for one build.
type pidsCgroup struct {
	// Parent is what the engine takes as CgroupParent: "/" and the cgroup's name.
	Parent string
	// pidsDir is the folder whose pids.max holds the cap.
	pidsDir string
	v2      bool
}

// newPidsCgroup makes a cgroup named for the build with pids.max = limit.
func newPidsCgroup(formation, service string, limit int64) (*pidsCgroup, error) {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := "gilliam-build-" + formation + "." + service + "-" + hex.EncodeToString(suffix)
	c := &pidsCgroup{Parent: "/" + name}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		c.v2 = true
		c.pidsDir = filepath.Join(cgroupRoot, name)
	} else {
		c.pidsDir = filepath.Join(cgroupRoot, "pids", name)
	}
	if err := os.Mkdir(c.pidsDir, 0o755); err != nil {
		return nil, fmt.Errorf("pids cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.pidsDir, "pids.max"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		os.Remove(c.pidsDir)
		return nil, fmt.Errorf("pids cgroup: set pids.max: %w", err)
	}
	return c, nil
}

// remove removes the cgroup, in every hierarchy the engine made it in (cgroup v1 has one
// per controller). The build's containers are gone by then; their cgroups may take a
// moment to go.
func (c *pidsCgroup) remove() error {
	dirs := []string{c.pidsDir}
	if !c.v2 {
		controllers, _ := os.ReadDir(cgroupRoot)
		for _, ctl := range controllers {
			if d := filepath.Join(cgroupRoot, ctl.Name(), filepath.Base(c.Parent)); d != c.pidsDir {
				dirs = append(dirs, d)
			}
		}
	}
	var errs []error
	for _, d := range dirs {
		var err error
		for i := 0; i < 20; i++ {
			if err = os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
