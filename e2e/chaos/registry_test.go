package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The registry is stopped for 60 seconds as a roll-out to a new image starts: the running
// instances are untouched (none stops, all keep answering), the new instances wait for
// their image, and the roll-out completes once the registry is back.
func TestChaosRegistryDown(t *testing.T) {
	const scale = 3
	c := newCluster(t, cluster.Options{})
	one := pushApp(t, c)
	two := relabel(t, one, "2")
	c.Repo.Commit(map[string]string{"gilliam.yml": formation("rg", one, scale, "MESSAGE: one")}, "one")
	c.StartSync("a", nil)
	waitSpread(t, c, "rg-web", "one", scale, 3*time.Minute)

	stops := startWatchStops(t, c)
	down := time.Now()
	c.StopRegistry()
	c.Repo.Commit(map[string]string{"gilliam.yml": formation("rg", two, scale, "MESSAGE: two")}, "two, a new image")
	fewest := scale
	for time.Since(down) < 60*time.Second {
		fewest = min(fewest, len(answering(c, "rg-web", "one")))
		time.Sleep(500 * time.Millisecond)
	}
	rolling := desired(c, "rg", "web")
	started := rolling != nil && rolling.Rollout != nil
	if err := c.StartRegistry(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	var done time.Duration
	testenv.Eventually(t, 3*time.Minute, "the roll-out done: 3 instances answering two, none one", func() bool {
		all, err := instances(c, "rg-web")
		if err != nil {
			return false
		}
		n2, other := 0, 0
		for _, i := range all {
			if i.Passing && i.Answer == "two" {
				n2++
			} else if i.Passing {
				other++
			}
		}
		ds := desired(c, "rg", "web")
		if n2 == scale && other == 0 && ds != nil && ds.Rollout == nil {
			done = time.Since(back)
			return true
		}
		return false
	})
	stopped := stops.end()
	pullFailures := 0
	for _, h := range c.Hosts {
		pullFailures += len(h.Daemon.Logs("image pull failing"))
	}
	testenv.Report(t, "chaos-registry-down", strings.Join([]string{
		fmt.Sprintf("registry stopped 60s as a roll-out to a new image (scale %d on 3 hosts) is pushed:", scale),
		fmt.Sprintf("  roll-out started while the registry was down  %v", started),
		fmt.Sprintf("  fewest old instances answering while down     %d of %d", fewest, scale),
		fmt.Sprintf("  instances stopped while assigned              %d", len(stopped)),
		fmt.Sprintf("  \"image pull failing\" warnings, all hosts      %d", pullFailures),
		fmt.Sprintf("  roll-out done after the registry came back    %s (host pull retries: 1s doubling to 1m)", since(done)),
	}, "\n"))
	if fewest < scale {
		t.Errorf("only %d instances of the running release answered while the registry was down", fewest)
	}
	if len(stopped) > 0 {
		t.Errorf("hosts stopped instances they were still assigned: %v", stopped)
	}
}

// relabel pushes a copy of image (pinned by digest) with one more label, a new digest with
// the same layers, and returns it pinned by digest.
func relabel(t *testing.T, image, version string) string {
	t.Helper()
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("read %s: %v", image, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Labels = map[string]string{"io.gilliam.test.version": version}
	img, err = mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	repo := ref.Context()
	tag, err := name.NewTag(repo.Name()+":v"+version, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push %s: %v", tag, err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return repo.Name() + "@" + digest.String()
}
