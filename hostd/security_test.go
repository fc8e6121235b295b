package hostd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// procStatus reads fields of /proc/PID/status of a container's first process, as the
// kernel sees it: what the engine was asked for, in effect.
func procStatus(t *testing.T, pid int, keys ...string) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		if slices.Contains(keys, k) {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

// An instance runs with least privilege: every capability dropped (NET_BIND_SERVICE kept
// for a port below 1024 only), no-new-privileges, a pids limit, nobody when its image names
// no user, CPU capped, memory limited, and a read-only root filesystem when its release
// says so. Checked through the engine's inspection and the kernel's view of the process.
func TestInstanceRunsWithLeastPrivilege(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config(t)
	cfg.PidsLimit = 100
	e.run(t, cfg, nil)
	ctx := context.Background()

	web := e.release(t, "least", func(r *state.Release) {
		r.Resources = state.Resources{CPU: 500, Memory: 64 << 20}
		r.ReadOnly = true
	})
	low := e.release(t, "low", func(r *state.Release) {
		r.Service = "low"
		r.Ports = []state.Port{{Port: 80}}
	})
	insts := append(instances(web, 1), instances(low, 1)...)
	e.assign(t, insts)
	testenv.Eventually(t, 60*time.Second, "both instances passing", func() bool {
		return len(e.passing("demo-web")) == 1 && len(e.passing("demo-low")) == 1
	})

	var report strings.Builder
	for _, inst := range insts {
		c := e.containers(t)[inst.ID]
		info, err := e.docker.Client.ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		hc := info.HostConfig
		wantAdd := []string(nil)
		if inst.Service == "low" {
			wantAdd = []string{"CAP_NET_BIND_SERVICE"}
		}
		if !slices.Equal(hc.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: CapDrop %v", inst.ID, hc.CapDrop)
		}
		if !equalCaps(hc.CapAdd, wantAdd) {
			t.Errorf("%s: CapAdd %v, want %v", inst.ID, hc.CapAdd, wantAdd)
		}
		if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: SecurityOpt %v", inst.ID, hc.SecurityOpt)
		}
		if hc.PidsLimit == nil || *hc.PidsLimit != 100 {
			t.Errorf("%s: PidsLimit %v", inst.ID, hc.PidsLimit)
		}
		if info.Config.User != hostd.NobodyUser {
			t.Errorf("%s: user %q (the test image names none)", inst.ID, info.Config.User)
		}
		if inst.Service == "web" {
			if hc.NanoCPUs != 500_000_000 || hc.CPUShares != 512 || hc.Memory != 64<<20 {
				t.Errorf("%s: NanoCPUs %d shares %d memory %d", inst.ID, hc.NanoCPUs, hc.CPUShares, hc.Memory)
			}
			if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] == "" {
				t.Errorf("%s: ReadonlyRootfs %v tmpfs %v", inst.ID, hc.ReadonlyRootfs, hc.Tmpfs)
			}
		} else if hc.ReadonlyRootfs || hc.NanoCPUs != 0 {
			t.Errorf("%s: ReadonlyRootfs %v NanoCPUs %d without asking", inst.ID, hc.ReadonlyRootfs, hc.NanoCPUs)
		}

		// The kernel's view: no effective or bounding capability beyond the list, no way to
		// gain privileges, not root.
		ps := procStatus(t, info.State.Pid, "Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs")
		wantBnd := "0000000000000000"
		if inst.Service == "low" {
			wantBnd = "0000000000000400" // CAP_NET_BIND_SERVICE is bit 10
		}
		if ps["NoNewPrivs"] != "1" || ps["CapBnd"] != wantBnd || ps["CapEff"] != "0000000000000000" || !strings.HasPrefix(ps["Uid"], "65534 ") {
			t.Errorf("%s: /proc status %v", inst.ID, ps)
		}

		shown, _ := json.MarshalIndent(map[string]any{
			"Config.User": info.Config.User, "CapDrop": hc.CapDrop, "CapAdd": hc.CapAdd,
			"SecurityOpt": hc.SecurityOpt, "PidsLimit": hc.PidsLimit, "NanoCPUs": hc.NanoCPUs,
			"CpuShares": hc.CPUShares, "Memory": hc.Memory, "ReadonlyRootfs": hc.ReadonlyRootfs,
			"Tmpfs": hc.Tmpfs, "Privileged": hc.Privileged,
		}, "", "  ")
		fmt.Fprintf(&report, "instance %s (ports %v), docker inspect:\n%s\n/proc/<pid>/status: %v\n\n", inst.ID, portsOf(inst, web, low), shown, ps)
	}
	testenv.Report(t, "hostd-container-security", strings.TrimSpace(report.String()))
}

func portsOf(inst state.Instance, rels ...*state.Release) []state.Port {
	for _, r := range rels {
		if r.ID == inst.Release {
			return r.Ports
		}
	}
	return nil
}

// equalCaps compares capability lists, with or without their CAP_ prefix (the engine
// normalises them).
func equalCaps(got, want []string) bool {
	norm := func(l []string) []string {
		var out []string
		for _, c := range l {
			out = append(out, strings.TrimPrefix(strings.ToUpper(c), "CAP_"))
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(norm(got), norm(want))
}

// An instance whose HTTP check answers a redirect does not get the agent to follow it:
// the check fails with the 3xx, the target is never asked, and nothing of the target's
// answer shows in the check's output (before, an instance could point its check at
// Consul's own KV API and read the output).
func TestCheckDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run(t, e.config(t), nil)

	const secret = "the-target-answer-7f3a9c"
	var asked atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		fmt.Fprintln(w, secret)
	}))
	defer target.Close()

	r := e.release(t, "redirect", func(r *state.Release) { r.Env["HEALTH_REDIRECT"] = target.URL + "/secret" })
	insts := instances(r, 1)
	e.assign(t, insts)
	// The agent's own view: the catalog syncs a check's output only when its status changes.
	agentCheck := func() *api.AgentCheck {
		checks, err := e.consul.Client.Agent().Checks()
		if err != nil {
			return nil
		}
		return checks[state.CheckID(e.hostID, insts[0].ID)]
	}
	testenv.Eventually(t, 30*time.Second, "the instance's check to have run", func() bool {
		c := agentCheck()
		return c != nil && strings.Contains(c.Output, "302")
	})
	time.Sleep(2 * time.Second) // a few more checks, at one a second
	check := agentCheck()
	if check == nil {
		t.Fatal("the check went")
	}
	if check.Status != api.HealthCritical {
		t.Errorf("check status %s, want critical", check.Status)
	}
	if strings.Contains(check.Output, secret) || asked.Load() != 0 {
		t.Errorf("the check followed the redirect: target asked %d times, output %q", asked.Load(), check.Output)
	}
	t.Logf("check output: %s", check.Output)
	if st, ok := instanceStatus(e.status(t), insts[0].ID); ok && st.Health == api.HealthPassing {
		t.Errorf("status says passing: %+v", st)
	}
}
