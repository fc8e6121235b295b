package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// runOneOff runs `gilliam-sync run ARGS` against the cluster's Consul, with stdin, and
// returns its stdout, stderr and exit code.
func (c *cluster) runOneOff(ctx context.Context, stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"run"}, args...)...)
	cmd.Env = append(cmd.Environ(), c.consul.Env()...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		c.t.Fatalf("gilliam-sync run: %v", err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// oneOffContainers lists the one-off containers on the engine of the given hosts.
func (c *cluster) oneOffContainers(hosts ...string) []container.Summary {
	c.t.Helper()
	var out []container.Summary
	for _, h := range hosts {
		cs, err := c.docker.Client.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", hostd.LabelHost+"="+h), filters.Arg("label", hostd.LabelOneOff))})
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, cs...)
	}
	return out
}

// `gilliam-sync run`: a one-off process of a service's current release runs on a host
// placement chooses, with the release's env and config vars, not registered nor routed;
// its output streams back (stdout and stderr apart), its exit code is run's; stdin goes
// in; --detach lists it in status while it runs, and everything goes after; Ctrl-C stops it.
func TestRunOneOff(t *testing.T) {
	parallel(t, 19*time.Second)
	began := time.Now()
	c := newCluster(t)
	hosts := []string{c.host("r1"), c.host("r2")}
	image := c.testImage()
	yml := strings.Replace(imageFormation("once", image, "GREETING: from-the-file"), "scale: 3", "scale: 1", 1)
	c.repo.Commit(map[string]string{"gilliam.yml": yml}, "once")
	c.sync("a", nil)
	testenv.Eventually(t, 90*time.Second, "the service serving", func() bool { return len(c.passing("once-web")) == 1 })
	first := c.desired("once", "web").Latest
	c.cli("env", "set", "once", "SECRET=s3cret")
	testenv.Eventually(t, 90*time.Second, "the config var's release settled", func() bool {
		ds := c.desired("once", "web")
		return ds.Latest != first && ds.Rollout == nil && len(ds.Deployments) == 1 && ds.Deployments[0].Release == ds.Latest
	})
	ctx := t.Context()

	// Attached: the release's env and config var, 300 lines in order, stderr apart, and the
	// process's exit code.
	start := time.Now()
	stdout, stderr, code := c.runOneOff(ctx, "", "once", "web", "--", "printenv", "GREETING", "printenv", "SECRET", "lines", "300", "stderr", "oops", "exit", "3")
	took := time.Since(start)
	var want strings.Builder
	want.WriteString("from-the-file\ns3cret\n")
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if code != 3 || stdout != want.String() || stderr != "oops\n" {
		t.Fatalf("run: exit %d, stdout %d bytes (want %d), stderr %q; stdout:\n%.300s", code, len(stdout), want.Len(), stderr, stdout)
	}
	stdout, _, code = c.runOneOff(ctx, "", "once", "web", "printenv", "GILLIAM_SERVICE")
	if code != 0 || stdout != "web\n" {
		t.Fatalf("run: exit %d, stdout %q; want 0 and web", code, stdout)
	}
	// Stdin, through Consul.
	stdout, _, code = c.runOneOff(ctx, "typed in\n", "-it", "once", "web", "--", "cat")
	if code != 0 || stdout != "typed in\n" {
		t.Fatalf("run -it cat: exit %d, stdout %q", code, stdout)
	}
	// -it on a terminal: the process gets one (whose echo comes back), and Ctrl-D ends its
	// input there.
	tty := exec.Command(c.bin, "run", "-it", "once", "web", "--", "cat")
	tty.Env = append(tty.Environ(), c.consul.Env()...)
	ptmx, err := pty.StartWithSize(tty, &pty.Winsize{Rows: 40, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	echoed := make(chan string)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, ptmx) // until the process exits (EIO)
		echoed <- b.String()
	}()
	ptmx.Write([]byte("over a terminal\n"))
	time.Sleep(2 * time.Second)
	ptmx.Write([]byte{4})
	tty.Wait()
	screen := <-echoed
	if code := tty.ProcessState.ExitCode(); code != 0 || strings.Count(screen, "over a terminal") < 2 || !strings.Contains(screen, "\r\n") {
		t.Fatalf("run -it on a terminal: exit %d, screen %q", code, screen)
	}
	if n := len(c.passing("once-web")); n != 1 {
		t.Fatalf("%d registrations of once-web after one-offs; want the 1 instance's", n)
	}

	// Detached: its ID, listed in status while it runs, gone after.
	stdout, stderr, code = c.runOneOff(ctx, "", "--detach", "once", "web", "--", "sleep", "4s", "exit", "0")
	id := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(id, "run-") {
		t.Fatalf("run --detach: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if st := c.cli("status", "once"); !strings.Contains(st, id) || !strings.Contains(st, "running, detached") {
		t.Fatalf("status does not list the detached one-off %s as running:\n%s", id, st)
	}
	if st := c.cli("status", "once", "--output", "json"); !strings.Contains(st, `"one_offs"`) || !strings.Contains(st, `"id": "`+id+`"`) {
		t.Fatalf("status --output json does not list the detached one-off %s:\n%s", id, st)
	}
	testenv.Eventually(t, 60*time.Second, "the detached one-off gone", func() bool {
		keys, _, _ := c.consul.Client.KV().Keys("gilliam-run/", "", nil)
		return !strings.Contains(c.cli("status", "once"), id) && len(c.oneOffContainers(hosts...)) == 0 && len(keys) == 0
	})

	// Ctrl-C stops it.
	cmd := exec.Command(c.bin, "run", "once", "web", "--", "lines", "1", "sleep", "5m")
	cmd.Env = append(cmd.Environ(), c.consul.Env()...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(pipe).ReadString('\n')
	if line != "line 1\n" {
		t.Fatalf("the interrupted one-off's first line: %q, %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("run interrupted: exit %d, want 130", code)
	}
	testenv.Eventually(t, 60*time.Second, "the interrupted one-off's container and keys gone", func() bool {
		keys, _, _ := c.consul.Client.KV().Keys("gilliam-run/", "", nil)
		return len(c.oneOffContainers(hosts...)) == 0 && len(keys) == 0
	})
	testenv.Report(t, "e2e-run-oneoff", fmt.Sprintf("gilliam-sync run, attached, 302 lines and an exit code: %s from the command to its exit (pull done); the whole test %s",
		took.Round(time.Millisecond), time.Since(began).Round(time.Second)))
}
