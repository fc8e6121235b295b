package cluster

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BaseDir holds every cluster's files, one folder per cluster prefix; `make clean-cluster`
// removes what a killed run left in it.
const BaseDir = "/tmp/gilliam-cluster"

// Prefix starts the name of every namespace, interface and cgroup a cluster makes.
const Prefix = "gcl"

// netnsDir is where ip(8) keeps the files that name network namespaces.
const netnsDir = "/var/run/netns"

// run runs a command and returns its error with its output.
func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// pickSubnet returns a third octet X such that no address or route of the root namespace
// is in 10.213.X.0/24 (another cluster, or anything else of the machine's).
func pickSubnet() (int, error) {
	out, err := exec.Command("ip", "-4", "-o", "addr").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ip addr: %v: %s", err, out)
	}
	routes, _ := exec.Command("ip", "-4", "route").CombinedOutput()
	used := string(out) + string(routes)
	for range 200 {
		x := 100 + rand.IntN(150)
		if !strings.Contains(used, fmt.Sprintf("10.213.%d.", x)) {
			return x, nil
		}
	}
	return 0, fmt.Errorf("no free 10.213.X.0/24 between X=100 and X=249")
}

// network is the cluster's switch and the root namespace's link to it.
type network struct {
	prefix string // gcl-xxxx
	subnet int    // X of 10.213.X.0/24
}

func (n *network) gateway() string  { return fmt.Sprintf("10.213.%d.1", n.subnet) }
func (n *network) switchNS() string { return n.prefix + "-sw" }

// hostAddr is host i's address (i from 1).
func (n *network) hostAddr(i int) string { return fmt.Sprintf("10.213.%d.%d", n.subnet, 10+i) }

// up makes the switch namespace and its bridge, and the root namespace's veth on it.
func (n *network) up() error {
	sw := n.switchNS()
	for _, args := range [][]string{
		{"ip", "netns", "add", sw},
		{"ip", "-n", sw, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", sw, "link", "set", "br0", "up"},
		{"ip", "link", "add", n.prefix, "type", "veth", "peer", "name", "root", "netns", sw},
		{"ip", "-n", sw, "link", "set", "root", "master", "br0"},
		{"ip", "-n", sw, "link", "set", "root", "up"},
		{"ip", "addr", "add", n.gateway() + "/24", "dev", n.prefix},
		{"ip", "link", "set", n.prefix, "up"},
	} {
		if err := run(args...); err != nil {
			return fmt.Errorf("cluster network: %w", err)
		}
	}
	return nil
}

// addHost makes host i's namespace, its veth to the switch and its address.
func (n *network) addHost(i int, ns string) error {
	sw := n.switchNS()
	port := "h" + strconv.Itoa(i)
	for _, args := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", sw, "link", "set", port, "master", "br0"},
		{"ip", "-n", sw, "link", "set", port, "up"},
		{"ip", "-n", ns, "addr", "add", n.hostAddr(i) + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		// No default route: a host reaches the cluster's /24 and nothing else.
	} {
		if err := run(args...); err != nil {
			return fmt.Errorf("host %d network: %w", i, err)
		}
	}
	return nil
}

// setLink sets host i's port on the switch up or down: its cable, plugged or pulled. The
// host's own interface keeps its address and routes, and sees no carrier.
func (n *network) setLink(i int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run("ip", "-n", n.switchNS(), "link", "set", "h"+strconv.Itoa(i), state)
}

// netnsPIDs lists the processes whose network namespace is ns.
func netnsPIDs(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupPIDs lists the processes in cgroup /name, or below it, in any hierarchy (the
// containers of a host's engine, started with --cgroup-parent /name).
func cgroupPIDs(name string) []int {
	seen := map[int]bool{}
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", name)); err == nil {
		roots = append(roots, filepath.Join("/sys/fs/cgroup", name)) // cgroup v2
	}
	for _, root := range roots {
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var pids []int
	for pid := range seen {
		pids = append(pids, pid)
	}
	return pids
}

// killAll SIGKILLs every process of network namespace ns and of cgroup cg, again until none
// is left (a process may fork while it dies), for at most 10 seconds.
func killAll(ns, cg string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := append(netnsPIDs(ns), cgroupPIDs(cg)...)
		self := os.Getpid()
		left := 0
		for _, pid := range pids {
			if pid == self || pid <= 1 {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes of %s still alive after 10s of SIGKILL", left, ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeCgroups removes the (empty, once killAll is done) cgroup /name and below, deepest
// first, in every hierarchy.
func removeCgroups(name string) {
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	roots = append(roots, filepath.Join("/sys/fs/cgroup", name))
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}

// unmountUnder detaches every mount at or below dir (an engine's overlay and shm mounts,
// the bind mounts of its containers' namespaces), deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		p := unescapeMount(f[1])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// deleteNetns removes a network namespace; its veths go with it.
func deleteNetns(ns string) {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
		run("ip", "netns", "delete", ns)
	}
}
