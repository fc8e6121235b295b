package build_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// BenchmarkBuild measures a Go service's build with the offline builder, publishing to a
// registry: cold (a cache volume never used), no change (found in the registry, no
// container started: it fails otherwise), a one-line change (warm cache), and four services
// changed at once. It reports the ratio of a one-line change to a cold build.
//
//	go test -run '^$' -bench BenchmarkBuild ./build/
func BenchmarkBuild(b *testing.B) {
	var cold, oneLine time.Duration
	src := readSource(b, "goapp")
	changed := func(s source) source {
		return s.with("main.go", strings.Replace(s["main.go"], `"hello from goapp"`,
			fmt.Sprintf(`"hello %d"`, time.Now().UnixNano()), 1))
	}

	b.Run("Cold", func(b *testing.B) {
		d := testenv.NewDocker(b)
		reg := testenv.NewRegistry(b)
		bld := newBuilder(b, reg.Addr, "")
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			service := fmt.Sprintf("bench-cold-%d", time.Now().UnixNano())
			b.Cleanup(func() {
				removeVolume(b, d, build.CacheVolume(testScope, formation, service))
				removeVolume(b, d, build.LaunchCacheVolume(testScope, formation, service))
			})
			b.StartTimer()
			start := time.Now()
			if _, err := bld.Build(context.Background(), src.request(service, "cold")); err != nil {
				b.Fatal(err)
			}
			cold += time.Since(start)
		}
		cold /= time.Duration(b.N)
	})

	b.Run("NoChange", func(b *testing.B) {
		d := testenv.NewDocker(b)
		reg := testenv.NewRegistry(b)
		bld := newBuilder(b, reg.Addr, "")
		req := src.request("bench-go", "first")
		if _, err := bld.Build(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		containers := countBuildContainers(b, d, "bench-go")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			res, err := bld.Build(context.Background(), req)
			if err != nil || res.Built {
				b.Fatalf("no change: %+v, %v", res, err)
			}
		}
		b.StopTimer()
		if n := containers.count(); n != 0 {
			b.Fatalf("%d build containers started with no change", n)
		}
	})

	b.Run("OneLineChange", func(b *testing.B) {
		reg := testenv.NewRegistry(b)
		bld := newBuilder(b, reg.Addr, "")
		if _, err := bld.Build(context.Background(), changed(src).request("bench-go", "warm-up")); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			req := changed(src).request("bench-go", "change")
			b.StartTimer()
			start := time.Now()
			res, err := bld.Build(context.Background(), req)
			if err != nil || !res.Built {
				b.Fatalf("one-line change: %+v, %v", res, err)
			}
			oneLine += time.Since(start)
		}
		oneLine /= time.Duration(b.N)
	})

	b.Run("FourServices", func(b *testing.B) {
		reg := testenv.NewRegistry(b)
		bld := newBuilder(b, reg.Addr, "", func(c *build.Config) { c.Concurrency = 4 })
		services := []string{"bench-4a", "bench-4b", "bench-4c", "bench-4d"}
		all := func() {
			var wg sync.WaitGroup
			for _, s := range services {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if res, err := bld.Build(context.Background(), changed(src).request(s, "change")); err != nil || !res.Built {
						b.Errorf("%s: %+v, %v", s, res, err)
					}
				}()
			}
			wg.Wait()
		}
		all() // warm-up: the caches of the four
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			all()
		}
	})

	if cold > 0 && oneLine > 0 {
		testenv.Report(b, "build-bench", fmt.Sprintf(
			"build (Go service, offline builder): cold %s, one-line change %s, ratio %.2f (target < 0.3)",
			cold.Round(10*time.Millisecond), oneLine.Round(10*time.Millisecond), oneLine.Seconds()/cold.Seconds()))
	}
}
