package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

func TestHostFlags(t *testing.T) {
	authFile := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(authFile, []byte(`{"auths":{"127.0.0.1:5000":{"auth":"cHVsbDpzM2NyZXQ="}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	machine := hostd.MachineCapacity()
	hostname, _ := os.Hostname()
	tests := []struct {
		args   []string
		check  func(hostd.Config) error
		errOut string // the start of stderr when the flags are refused
	}{
		{args: nil, check: func(c hostd.Config) error {
			if c.ID != hostname || c.Capacity != machine || c.Advertise == "" || c.DataDir == "" || c.StopTimeout != 10*time.Second {
				return fmt.Errorf("defaults: %+v", c)
			}
			return nil
		}},
		{args: []string{"--id", "web-1", "--advertise", "10.1.2.3", "--labels", "zone=a,disk=ssd", "--cpu", "1.5", "--memory", "2Gi", "--data", "/tmp/x", "--stop-timeout", "3s", "--orphan-grace", "5m"},
			check: func(c hostd.Config) error {
				if c.ID != "web-1" || c.Advertise != "10.1.2.3" || c.Labels["zone"] != "a" || c.Labels["disk"] != "ssd" ||
					c.Capacity != (state.Resources{CPU: 1500, Memory: 2 << 30}) || c.DataDir != "/tmp/x" ||
					c.StopTimeout != 3*time.Second || c.OrphanGrace != 5*time.Minute {
					return fmt.Errorf("%+v", c)
				}
				return nil
			}},
		{args: []string{"--cpu", "500m", "--memory", "512M"}, check: func(c hostd.Config) error {
			if c.Capacity != (state.Resources{CPU: 500, Memory: 512e6}) {
				return fmt.Errorf("%+v", c.Capacity)
			}
			return nil
		}},
		{args: []string{"--cpu", "lots"}, errOut: `gilliam-sync host: --cpu "lots"`},
		{args: []string{"--cpu", "0"}, errOut: `gilliam-sync host: --cpu "0"`},
		{args: []string{"--memory", "2GB"}, errOut: `gilliam-sync host: --memory "2GB"`},
		{args: []string{"--advertise", "host.example"}, errOut: `gilliam-sync host: --advertise "host.example"`},
		{args: []string{"extra"}, errOut: `gilliam-sync host: unexpected arguments`},
		{args: nil, check: func(c hostd.Config) error {
			if c.PidsLimit != hostd.DefaultPidsLimit || c.ImageGCGrace != time.Hour || c.UnhealthyAfter != 30*time.Second || c.RegistryAuth != nil {
				return fmt.Errorf("defaults: %+v", c)
			}
			return nil
		}},
		{args: []string{"--pids-limit", "64", "--image-gc-grace", "10m", "--unhealthy-after", "1m", "--registry-auth", authFile},
			check: func(c hostd.Config) error {
				if c.PidsLimit != 64 || c.ImageGCGrace != 10*time.Minute || c.UnhealthyAfter != time.Minute ||
					c.RegistryAuth["127.0.0.1:5000"] != (hostd.RegistryCredential{Username: "pull", Password: "s3cret"}) {
					return fmt.Errorf("%+v", c)
				}
				return nil
			}},
		{args: []string{"--pids-limit", "0"}, errOut: `gilliam-sync host: --pids-limit 0`},
		{args: []string{"--registry-auth", "/nonexistent/config.json"}, errOut: `gilliam-sync host: --registry-auth: registry credentials: open /nonexistent/config.json`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var cfg hostd.Config
			var stderr bytes.Buffer
			code := parseHost(tt.args, &stderr, &cfg)
			if tt.errOut != "" {
				if code != 2 || !strings.HasPrefix(stderr.String(), tt.errOut) {
					t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tt.errOut)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if err := tt.check(cfg); err != nil {
				t.Error(err)
			}
		})
	}
}

// parseHost parses the host command's flags as the command does.
func parseHost(args []string, stderr *bytes.Buffer, cfg *hostd.Config) int {
	fs := newFlagSet(hostCmd, stderr)
	c, code, ok := defineHostFlags(fs, stderr).parse(fs, args, stderr)
	if ok {
		*cfg = c
	}
	return code
}

// The command runs a host daemon against a real Consul and Docker: the host appears in
// the catalog with its labels and capacity, and the command ends cleanly with its context.
func TestHostCommandRuns(t *testing.T) {
	consul := testenv.NewConsul(t)
	testenv.NewDocker(t)
	id := fmt.Sprintf("cmd-host-%d", time.Now().UnixNano()%1e9)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"host", "--id", id, "--consul", consul.Addr, "--advertise", "127.0.0.1",
			"--labels", "zone=b", "--cpu", "2", "--memory", "1Gi", "--data", t.TempDir(), "--log-format", "json"}, &bytes.Buffer{}, &stderr)
	}()
	store := state.NewStore(consul.Client, "")
	testenv.Eventually(t, 20*time.Second, "the host passing in the catalog", func() bool {
		hosts, err := store.Hosts(context.Background())
		return err == nil && len(hosts) == 1 && hosts[0].ID == id && hosts[0].Passing && hosts[0].Labels["zone"] == "b" &&
			hosts[0].Capacity == state.Resources{CPU: 2000, Memory: 1 << 30} && hosts[0].Address == "127.0.0.1"
	})
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the host command did not stop with its context")
	}
}
