package schema

import (
	"fmt"
	pathpkg "path"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Volumes and the release phase: what a stateful service keeps, and what runs once per
// release before it rolls out.

// A Volume is a folder of a service's containers that outlives them: one named volume
// per instance slot on its host, kept across releases, restarts and moves of nothing
// else.
type Volume struct {
	Path string // absolute and clean, in the container
	Size int64  // bytes; 0 when not given. Recorded and shown, not enforced.
}

// A ReleasePhase is a command run once per release, in a one-off container of the new
// release, before its roll-out starts: a failure stops the roll-out.
type ReleasePhase struct {
	// Command is the command to run: a list like the service's command, a string through
	// /bin/sh -c (Shell says which).
	Command []string
	Shell   bool
	Timeout time.Duration
}

// DefaultReleaseTimeout is how long a release command may run.
const DefaultReleaseTimeout = 10 * time.Minute

const volumePathPattern = `^/[^\x00]*$`

var volumeFields = []field[Volume]{
	{key: "path", required: true, doc: "The absolute path in the container the volume is mounted at.",
		schema: stringSchema(volumePathPattern),
		decode: func(d *decoder, n *yaml.Node, p path, v *Volume) {
			if s, ok := d.str(n, p); ok {
				if c, err := cleanVolumePath(s); err != nil {
					d.at(n, p, "%v", err)
				} else {
					v.Path = c
				}
			}
		}},
	optionalSize("size", func(v *Volume) *int64 { return &v.Size }, 1<<20,
		"The space the volume is expected to need, shown by `gilliam-sync volumes` beside what it uses; not enforced."),
}

var releasePhaseFields = []field[ReleasePhase]{
	{key: "command", required: true,
		doc:    "The command run once per release before its roll-out: a string runs through /bin/sh -c, a list like command (after the image's entrypoint).",
		schema: anyOf(stringSchema(""), listSchema(stringSchema(""), 1)),
		decode: func(d *decoder, n *yaml.Node, p path, r *ReleasePhase) { r.Command, r.Shell = d.releaseCommand(n, p) }},
	duration("timeout", func(r *ReleasePhase) *time.Duration { return &r.Timeout }, time.Second, DefaultReleaseTimeout,
		"How long the release command may run; past it, it is killed and the roll-out does not start."),
}

func (d *decoder) volumes(n *yaml.Node, p path) []Volume {
	items, _ := d.sequence(n, p)
	volumes := make([]Volume, 0, len(items))
	for i, item := range items {
		ip := p.index(i)
		var v Volume
		switch r := resolve(item); {
		case r.Kind == yaml.MappingNode:
			decodeObject(d, item, ip, volumeFields, &v)
		case r.Kind == yaml.ScalarNode && r.ShortTag() == "!!str":
			if c, err := cleanVolumePath(r.Value); err != nil {
				d.at(item, ip, "%v", err)
			} else {
				v.Path = c
			}
		default:
			d.at(item, ip, "must be a path such as /data or a mapping such as {path: /data, size: 1Gi}, not %s", describe(r))
		}
		volumes = append(volumes, v) // a failed one stays as a placeholder: volumes[i] is the file's i-th
	}
	return volumes
}

func (d *decoder) releasePhase(n *yaml.Node, p path) *ReleasePhase {
	r := &ReleasePhase{}
	decodeObject(d, n, p, releasePhaseFields, r)
	return r
}

func (d *decoder) releaseCommand(n *yaml.Node, p path) ([]string, bool) {
	v := resolve(n)
	if v.Kind == yaml.SequenceNode {
		items, _ := d.sequence(n, p)
		if len(items) == 0 {
			d.at(n, p, "must not be empty")
			return nil, false
		}
		list := make([]string, len(items))
		for i, item := range items {
			list[i], _ = d.str(item, p.index(i))
		}
		return list, false
	}
	s, ok := d.scalar(n, p, "a command, as a string or a list", "!!str")
	if !ok {
		return nil, false
	}
	if strings.TrimSpace(s) == "" {
		d.at(n, p, "must not be empty")
		return nil, false
	}
	return []string{s}, true
}

// cleanVolumePath checks a volume's path: absolute, not the root, not a folder the engine
// owns.
func cleanVolumePath(s string) (string, error) {
	if !strings.HasPrefix(s, "/") {
		return "", fmt.Errorf("%s is not an absolute path: write it from the container's root, such as /data", code(s))
	}
	c := pathpkg.Clean(s)
	if c == "/" {
		return "", fmt.Errorf("the root folder cannot be a volume: name a folder, such as /data")
	}
	for _, owned := range []string{"/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/tmp"} {
		if c == owned || strings.HasPrefix(c, owned+"/") {
			return "", fmt.Errorf("%s is the engine's: a volume cannot be mounted there", code(c))
		}
	}
	return c, nil
}

// validateVolumes: each path once, none inside another.
func validateVolumes(s *Service, sp path, r *report) {
	vp := sp.key("volumes")
	for i, v := range s.Volumes {
		if v.Path == "" || r.failed(vp.index(i)) {
			continue
		}
		for j, w := range s.Volumes[:i] {
			if w.Path == v.Path {
				r.on(vp.index(i), "%s is already volumes[%d]", code(v.Path), j)
				break
			}
			if w.Path != "" && (strings.HasPrefix(v.Path, w.Path+"/") || strings.HasPrefix(w.Path, v.Path+"/")) {
				r.on(vp.index(i), "%s and volumes[%d] (%s) are one inside the other: list the outer one only", code(v.Path), j, code(w.Path))
				break
			}
		}
	}
}

// optionalSize is a size that may be left out (0).
func optionalSize[T any](key string, at func(*T) *int64, lo int64, doc string) field[T] {
	f := size(key, at, lo, 0, doc)
	f.def = nil
	return f
}
