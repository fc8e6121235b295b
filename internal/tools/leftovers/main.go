package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
)

// labelPrefix starts every label gilliam-sync and its tests put on what they create.
const labelPrefix = "io.gilliam."

// keptVolume is the name prefix of the cache volumes build's tests keep on purpose (see
// build/helpers_test.go).
var keptVolume = strings.TrimSuffix(names.CacheVolume("buildtest", "buildtest", "", ""), ".") // the build tests' scope and formation

func main() {
	snapshot := flag.String("snapshot", "", "write what is there now to this file (the run's start)")
	before := flag.String("before", "", "the file -snapshot wrote: list what is here now and was not then")
	flag.Parse()
	ctx := context.Background()
	switch {
	case *snapshot != "":
		if err := writeSnapshot(ctx, *snapshot); err != nil {
			fmt.Fprintln(os.Stderr, "leftovers:", err)
			os.Exit(2)
		}
	case *before != "":
		snap, err := readSnapshot(*before)
		if err != nil {
			fmt.Fprintln(os.Stderr, "leftovers:", err)
			os.Exit(2)
		}
		found, err := leftovers(ctx, snap)
		if err != nil {
			fmt.Fprintln(os.Stderr, "leftovers:", err)
			os.Exit(2)
		}
		if len(found) > 0 {
			fmt.Printf("left behind by this run (started %s):\n", snap.Start.Format(time.TimeOnly))
			for _, f := range found {
				fmt.Println("  " + f)
			}
			os.Exit(1)
		}
		fmt.Println("leftovers: no container, volume, network or process left behind")
	default:
		fmt.Fprintln(os.Stderr, "leftovers: -snapshot FILE or -before FILE")
		os.Exit(2)
	}
}

// snapshot is what the engine held when the run started. A volume's CreatedAt cannot stand
// in for it: the local driver reports its folder's modification time, which a build that
// uses an old cache volume moves.
type snapshot struct {
	Start      time.Time
	Containers map[string]bool // IDs
	Volumes    map[string]bool // names
	Networks   map[string]bool // IDs
}

func writeSnapshot(ctx context.Context, path string) error {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	snap := snapshot{Start: time.Now(), Containers: map[string]bool{}, Volumes: map[string]bool{}, Networks: map[string]bool{}}
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		snap.Containers[c.ID] = true
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{})
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs.Volumes {
		snap.Volumes[v.Name] = true
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns {
		snap.Networks[n.ID] = true
	}
	b, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readSnapshot(path string) (snapshot, error) {
	var snap snapshot
	b, err := os.ReadFile(path)
	if err != nil {
		return snap, fmt.Errorf("snapshot: %w", err)
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return snap, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return snap, nil
}

func leftovers(ctx context.Context, snap snapshot) ([]string, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	var found []string
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for _, c := range cs {
		if snap.Containers[c.ID] || !ours(c.Labels) && !packs(c.Labels) {
			continue
		}
		found = append(found, fmt.Sprintf("container %s %s (%s) %s", c.ID[:12], strings.Join(c.Names, ","), c.State, gilliamLabels(c.Labels)))
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vs.Volumes {
		// A build cache volume pack made itself (the launch cache's) may have no labels
		// of ours; and pack's own, for one build, it removes when the build ends.
		cache := strings.HasPrefix(v.Name, "gilliam-cache-") || strings.HasPrefix(v.Name, "pack-app-") || strings.HasPrefix(v.Name, "pack-layers-")
		if snap.Volumes[v.Name] || !ours(v.Labels) && !cache || strings.HasPrefix(v.Name, keptVolume) {
			continue
		}
		found = append(found, fmt.Sprintf("volume %s %s", v.Name, gilliamLabels(v.Labels)))
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	for _, n := range ns {
		if snap.Networks[n.ID] || !ours(n.Labels) {
			continue
		}
		found = append(found, fmt.Sprintf("network %s %s", n.Name, gilliamLabels(n.Labels)))
	}
	procs, err := orphans(snap.Start)
	if err != nil {
		return nil, err
	}
	return append(found, procs...), nil
}

func ours(labels map[string]string) bool {
	for k := range labels {
		if strings.HasPrefix(k, labelPrefix) {
			return true
		}
	}
	return false
}

// packs says whether a container is one pack runs a build in (labelled author=pack): pack
// removes it when the build ends, so one that is left was abandoned.
func packs(labels map[string]string) bool { return labels["author"] == "pack" }

func gilliamLabels(labels map[string]string) string {
	var out []string
	for k, v := range labels {
		if strings.HasPrefix(k, labelPrefix) {
			out = append(out, k+"="+v)
		}
	}
	return strings.Join(out, " ")
}

// orphans lists the processes of the project's programs started after start whose parent
// is init: a test started them and is gone.
func orphans(start time.Time) ([]string, error) {
	boot, err := bootTime()
	if err != nil {
		return nil, err
	}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	var found []string
	for _, dir := range dirs {
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		// pid (comm) state ppid ... starttime is the 22nd field; comm may hold spaces.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat)[i+1:])
		if len(fields) < 20 || fields[1] != "1" {
			continue
		}
		ticks, err := strconv.ParseInt(fields[19], 10, 64)
		if err != nil || boot.Add(time.Duration(ticks)*time.Second/100).Before(start) {
			continue
		}
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil || !project(exe) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		found = append(found, fmt.Sprintf("process %s %s", filepath.Base(dir), strings.ReplaceAll(strings.TrimSpace(string(cmdline)), "\x00", " ")))
	}
	return found, nil
}

// project says whether exe is one of the programs tests run: gilliam-sync as testenv
// builds it, or a tool make tools put in .cache (Consul, Gitea, sshd).
func project(exe string) bool {
	return strings.Contains(exe, "/gilliam-sync-bin-") ||
		strings.HasSuffix(exe, "/.cache/bin/consul") ||
		strings.HasSuffix(exe, "/.cache/bin/gitea") ||
		strings.HasSuffix(exe, "/.cache/openssh/root/usr/sbin/sshd")
}

// bootTime is when the machine started, from /proc/stat (process start times count clock
// ticks, 100 a second on Linux, from it).
func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("boot time %q: %w", v, err)
			}
			return time.Unix(s, 0), nil
		}
	}
	return time.Time{}, fmt.Errorf("boot time: no btime in /proc/stat")
}
