package schema

import (
	"slices"
	"strings"
)

// The rules that relate values to one another. The decoder has already checked each value
// on its own (its type, its syntax, its range); a rule whose inputs failed there stays
// silent rather than report a consequence of that failure.

func validate(f *Formation, r *report) {
	if len(f.Services) == 0 && r.has("services") && !r.failed("services") {
		r.on("services", "a formation needs at least one service")
	}
	names := f.ServiceNames()
	isService := make(map[string]bool, len(names))
	for _, name := range names {
		isService[name] = true
	}
	for _, name := range names {
		validateService(f.Services[name], names, isService, r)
	}
	validateDependencyCycles(f, r)
	validateWeb(f, names, r)
	for _, name := range sortedKeys(f.Previews.Services) {
		op := path("previews.services").key(name)
		// With no services decoded, every name would be unknown: that is not news.
		if f.Services[name] == nil && len(f.Services) > 0 {
			r.on(op, "unknown service%s", didYouMean(name, names))
		}
	}
}

// validateWeb: one service at most is the web service, and not an internal one.
func validateWeb(f *Formation, names []string, r *report) {
	var marked []string
	for _, name := range names {
		s := f.Services[name]
		if !s.Web {
			continue
		}
		marked = append(marked, name)
		at := path("services").key(name).key("web")
		if s.Internal {
			r.on(at, "an internal service is never exposed: it cannot be the web service")
		}
		if len(marked) == 2 {
			r.on(at, "%s is the web service already: mark one service `web: true`", code(marked[0]))
		}
	}
}

func validateService(s *Service, names []string, isService map[string]bool, r *report) {
	sp := path("services").key(s.Name)
	validateType(s, sp, r)
	if r.has(sp.key("process")) && r.has(sp.key("command")) {
		r.on(sp.key("process"), "set `process` or `command`, not both")
	}
	validatePorts(s, sp, r)
	validateCheck(s, sp, r)
	validateVolumes(s, sp, r)

	deps := sp.key("depends_on")
	listed := make(map[string]bool, len(s.DependsOn))
	for i, dep := range s.DependsOn {
		switch {
		case r.failed(deps.index(i)):
		case dep == s.Name:
			r.on(deps.index(i), "a service cannot depend on itself")
		case !isService[dep]:
			r.on(deps.index(i), "unknown service %s%s", code(dep), didYouMean(dep, names))
		case listed[dep]:
			r.on(deps.index(i), "%s is listed twice", code(dep))
		}
		listed[dep] = true
	}

	rollout := sp.key("rollout")
	if s.Rollout.Deadline <= s.Rollout.MinHealthy && !r.failed(rollout) {
		at := rollout.key("deadline")
		if !r.has(at) {
			at = rollout.key("min_healthy")
		}
		r.on(at, "the deadline (%s) must be longer than min_healthy (%s)",
			formatDuration(s.Rollout.Deadline), formatDuration(s.Rollout.MinHealthy))
	}
	restart := sp.key("restart")
	if s.Restart.MaxBackoff < s.Restart.MinBackoff && !r.failed(restart) {
		at := restart.key("max_backoff")
		if !r.has(at) {
			at = restart.key("min_backoff")
		}
		r.on(at, "max_backoff (%s) must be at least min_backoff (%s)",
			formatDuration(s.Restart.MaxBackoff), formatDuration(s.Restart.MinBackoff))
	}
}

// validateType checks that the service has what its type needs, and nothing it ignores.
func validateType(s *Service, sp path, r *report) {
	if r.failed(sp.key("type")) || r.wrongType[sp] {
		return
	}
	has := func(key string) bool { return r.has(sp.key(key)) }
	if s.Type == TypeImage {
		if !has("image") {
			r.on(sp, "an image service needs `image`, the image to run")
		}
		if has("path") {
			r.on(sp.key("path"), "an image service is not built: leave `path` out, or set `type: buildpack` or `type: dockerfile`")
		}
		if has("process") {
			r.on(sp.key("process"), "`process` picks a buildpack launch process; an image service sets `command` instead")
		}
		return
	}
	if !has("path") {
		r.on(sp, "a %s service needs `path`, the folder to build (`.` for the repository root)", s.Type)
	}
	if has("image") {
		r.on(sp.key("image"), "a %s service is built from `path` and runs no `image`; set `type: image` to run an image", s.Type)
	}
	if s.Type == TypeDockerfile && has("process") {
		r.on(sp.key("process"), "`process` picks a buildpack launch process; a dockerfile service sets `command` instead")
	}
}

// validatePorts checks that no port, and no port name, is listed twice.
func validatePorts(s *Service, sp path, r *report) {
	pp := sp.key("ports")
	byNumber := make(map[int]int, len(s.Ports))
	byName := make(map[string]int, len(s.Ports))
	for i, port := range s.Ports {
		if r.failed(pp.index(i)) {
			continue
		}
		if j, ok := byNumber[port.Port]; ok {
			r.on(pp.index(i), "port %d is already listed as ports[%d]", port.Port, j)
		} else {
			byNumber[port.Port] = i
		}
		if port.Name == "" {
			continue
		}
		if j, ok := byName[port.Name]; ok {
			r.on(pp.index(i).key("name"), "the name %s is already given to ports[%d]", code(port.Name), j)
		} else {
			byName[port.Name] = i
		}
	}
}

// validateCheck checks that a check has a port to check and timings that make sense.
func validateCheck(s *Service, sp path, r *report) {
	cp := sp.key("check")
	if r.has(cp.key("http")) && r.has(cp.key("tcp")) {
		r.on(cp.key("tcp"), "a check is either `http` or `tcp`, not both")
	}
	if s.Check.Type != CheckNone && len(s.Ports) == 0 && !r.wrongType[sp.key("ports")] && !r.failed(cp) {
		kind := map[string]string{CheckHTTP: "an HTTP", CheckTCP: "a TCP"}[s.Check.Type]
		r.on(cp, "%s check needs a port to check: add `ports`, or write `check: none`", kind)
	}
	if s.Check.Timeout > s.Check.Interval && !r.failed(cp) {
		at := cp.key("timeout")
		if !r.has(at) {
			at = cp.key("interval")
		}
		r.on(at, "the timeout (%s) must not be longer than the interval (%s)",
			formatDuration(s.Check.Timeout), formatDuration(s.Check.Interval))
	}
}

// validateDependencyCycles reports each loop in depends_on once, at the dependency that
// closes it, naming the services around it: "web -> api -> web".
func validateDependencyCycles(f *Formation, r *report) {
	done := make(map[string]bool, len(f.Services))
	onStack := make(map[string]int) // name -> its index in stack
	var stack []string
	var visit func(name string)
	visit = func(name string) {
		onStack[name] = len(stack)
		stack = append(stack, name)
		s := f.Services[name]
		listed := make(map[string]bool, len(s.DependsOn))
		for i, dep := range s.DependsOn {
			if dep == name || f.Services[dep] == nil || listed[dep] { // includes placeholders
				continue // reported by validateService
			}
			listed[dep] = true
			if at, ok := onStack[dep]; ok {
				// Written from this service, which depends on dep, around to itself.
				loop := append([]string{name}, stack[at:len(stack)-1]...)
				r.on(path("services").key(name).key("depends_on").index(i), "dependency cycle: %s", cycleText(loop))
			} else if !done[dep] {
				visit(dep)
			}
		}
		stack = stack[:len(stack)-1]
		delete(onStack, name)
		done[name] = true
	}
	for _, name := range f.ServiceNames() {
		if !done[name] {
			visit(name)
		}
	}
}

// cycleText writes a dependency loop from its first service around to it again, eliding
// the middle of a long one.
func cycleText(loop []string) string {
	first := loop[0]
	if len(loop) > 7 {
		loop = slices.Concat(loop[:4], []string{"..."}, loop[len(loop)-2:])
	}
	var b strings.Builder
	for _, name := range loop {
		b.WriteString(truncate(name) + " -> ")
	}
	b.WriteString(truncate(first))
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
