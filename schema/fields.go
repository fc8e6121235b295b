package schema

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// The gilliam.yml format, key by key: one table per mapping, in the order the reference
// documents them. The doc strings become the JSON Schema's descriptions, which editors
// show on hover: one or two plain sentences each.

var formationFields = []field[Formation]{
	text("formation", func(f *Formation) *string { return &f.Name }, labelPattern, asLabel("a formation name"),
		"The formation's name, a DNS label (lowercase letters, digits and -). Default: derived from the repository's name."),
	env("env", func(f *Formation) *map[string]string { return &f.Env },
		"Environment variables given to every service. A service's own env overrides them."),
	{key: "services", required: true,
		doc:    "The services of the formation, by name. A name is a DNS label: lowercase letters, digits and -.",
		schema: mapSchema(labelPattern, objectSchema(serviceFields), 1),
		decode: func(d *decoder, n *yaml.Node, p path, f *Formation) { f.Services = d.services(n, p) }},
	object("previews", func(f *Formation) *Previews { return &f.Previews }, previewFields,
		"Preview formations: one per open pull request, built from its head, named <formation>-pr-<number>."),
	{key: "domains",
		doc:    "Custom host names (shop.example.com) the router serves the formation's web service at, besides <formation>.<domain>. A domain belongs to one formation.",
		schema: listSchema(stringSchema(domainPattern), 0),
		decode: func(d *decoder, n *yaml.Node, p path, f *Formation) { f.Domains = d.domains(n, p) }},
}

var serviceFields = []field[Service]{
	enum("type", func(s *Service) *string { return &s.Type }, []string{TypeBuildpack, TypeImage, TypeDockerfile},
		"How the service is made: buildpack builds path with Cloud Native Buildpacks, dockerfile builds path/Dockerfile, image runs image as it is. Default: image when image is set, else buildpack."),
	text("path", func(s *Service) *string { return &s.Path }, "", cleanRepoPath,
		"The folder a buildpack or dockerfile service is built from, relative to the repository root (. for the root). Required for those types; only changes inside it rebuild the service."),
	text("image", func(s *Service) *string { return &s.Image }, imagePattern, func(s string) (string, error) { return s, checkImage(s) },
		"The image an image service runs, such as redis:7 or registry.example.com/team/app@sha256:..."),
	text("process", func(s *Service) *string { return &s.Process }, processPattern, matching(processPattern, "a process type such as `web` or `worker`"),
		"The buildpack launch process to run (a Procfile entry). Default: web for buildpack services without command."),
	stringList("command", func(s *Service) *[]string { return &s.Command }, true,
		"The command to run instead of the image's own, as a list: [\"./server\", \"--verbose\"]. Not interpreted by a shell."),
	{key: "ports",
		doc:    "The TCP ports the service listens on, as numbers (8080) or mappings ({port: 8080, name: http}). The first is the primary port: registered in Consul and health-checked.",
		schema: listSchema(anyOf(integerSchema(1, 65535), objectSchema(portFields)), 0),
		decode: func(d *decoder, n *yaml.Node, p path, s *Service) { s.Ports = d.ports(n, p) }},
	env("env", func(s *Service) *map[string]string { return &s.Env },
		"Environment variables of the service, over the formation's env."),
	integer("scale", func(s *Service) *int { return &s.Scale }, 0, MaxScale, DefaultScale,
		"How many instances to run. 0 stops the service and keeps its configuration."),
	{key: "check", def: emptyMapping,
		doc:    "How to tell that an instance is healthy: {http: /healthz}, {tcp: true} or none. Default: a TCP check of the primary port, or none when the service has no port.",
		schema: anyOf(enumSchema([]string{CheckNone}), objectSchema(checkFields)),
		decode: func(d *decoder, n *yaml.Node, p path, s *Service) { s.Check = d.check(n, p) }},
	object("resources", func(s *Service) *Resources { return &s.Resources }, resourcesFields,
		"What one instance needs: placement reserves it on a host."),
	{key: "constraints",
		doc:    "Host labels an instance's host must match, all of them: label=value, label!=value or label~=regexp.",
		schema: listSchema(stringSchema(constraintPattern), 0),
		decode: func(d *decoder, n *yaml.Node, p path, s *Service) { s.Constraints = d.constraints(n, p) }},
	boolean("internal", func(s *Service) *bool { return &s.Internal }, false,
		"An auxiliary service (a database, a cache): reachable by the formation's services only, never exposed outside it."),
	boolean("read_only", func(s *Service) *bool { return &s.ReadOnly }, false,
		"The instance's root filesystem is read-only; /tmp is a small writable tmpfs."),
	boolean("web", func(s *Service) *bool { return &s.Web }, false,
		"The service the router serves at <formation>.<domain> and at the formation's domains. Default: the service named web."),
	stringList("depends_on", func(s *Service) *[]string { return &s.DependsOn }, false,
		"Services of this formation rolled out, and healthy, before this one."),
	object("rollout", func(s *Service) *Rollout { return &s.Rollout }, rolloutFields,
		"How a new release replaces the running one: new instances first, an old one stops once its replacement is healthy."),
	object("restart", func(s *Service) *Restart { return &s.Restart }, restartFields,
		"The backoff between restarts of a crashing instance: it doubles from min_backoff up to max_backoff."),
	{key: "volumes",
		doc:    "Folders kept across releases and restarts: a named volume per instance on its host, which holds the instance there. Paths (/data) or mappings ({path: /data, size: 1Gi}).",
		schema: listSchema(anyOf(stringSchema(volumePathPattern), objectSchema(volumeFields)), 0),
		decode: func(d *decoder, n *yaml.Node, p path, s *Service) { s.Volumes = d.volumes(n, p) }},
	{key: "release",
		doc:    "A command run once per release, in a one-off container of the new release, before its roll-out starts; if it fails the roll-out does not start.",
		schema: objectSchema(releasePhaseFields),
		decode: func(d *decoder, n *yaml.Node, p path, s *Service) { s.Release = d.releasePhase(n, p) }},
}

var portFields = []field[Port]{
	{key: "port", required: true, doc: "The port number, 1 to 65535.", schema: integerSchema(1, 65535),
		decode: func(d *decoder, n *yaml.Node, p path, port *Port) {
			if v, ok := d.integer(n, p, 1, 65535); ok {
				port.Port = v
			}
		}},
	text("name", func(port *Port) *string { return &port.Name }, labelPattern, asLabel("a port name"),
		"A name for the port, a DNS label unique within the service."),
}

var checkFields = []field[Check]{
	{key: "http", doc: "Check with an HTTP GET of this path on the primary port: a 2xx answer is healthy; a redirect is not followed and fails the check.",
		schema: stringSchema(httpPathPattern),
		decode: func(d *decoder, n *yaml.Node, p path, c *Check) {
			if s, ok := d.str(n, p); ok {
				if !httpPathRE.MatchString(s) {
					d.at(n, p, "%s is not a URL path: it starts with / and has no spaces", code(s))
					return
				}
				c.Type, c.Path = CheckHTTP, s
			}
		}},
	{key: "tcp", doc: "Check that the primary port accepts a TCP connection (write tcp: true).",
		schema: booleanSchema(),
		decode: func(d *decoder, n *yaml.Node, p path, c *Check) {
			if v, ok := d.boolean(n, p); ok {
				if !v {
					d.at(n, p, "only `tcp: true` has a meaning; write `check: none` for no check")
					return
				}
				c.Type = CheckTCP
			}
		}},
	duration("interval", func(c *Check) *time.Duration { return &c.Interval }, time.Second, DefaultCheckInterval,
		"Time between two checks; at least 1s."),
	duration("timeout", func(c *Check) *time.Duration { return &c.Timeout }, time.Millisecond, DefaultCheckTimeout,
		"How long one check may take; no longer than interval."),
	duration("grace", func(c *Check) *time.Duration { return &c.Grace }, 0, DefaultCheckGrace,
		"How long after an instance starts its failing checks are not held against it: its time to boot."),
}

var resourcesFields = []field[Resources]{
	cpu("cpu", func(r *Resources) *int64 { return &r.CPU }, DefaultCPU,
		"CPU for one instance: cores (1, 0.5) or millicores (500m)."),
	size("memory", func(r *Resources) *int64 { return &r.Memory }, 6<<20, DefaultMemory,
		"Memory for one instance, with a unit: Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000); at least 6Mi."),
}

var rolloutFields = []field[Rollout]{
	integer("max_parallel", func(r *Rollout) *int { return &r.MaxParallel }, 1, MaxScale, DefaultMaxParallel,
		"How many new instances start at once."),
	duration("min_healthy", func(r *Rollout) *time.Duration { return &r.MinHealthy }, 0, DefaultMinHealthy,
		"How long a new instance must pass its check before an old one stops."),
	duration("deadline", func(r *Rollout) *time.Duration { return &r.Deadline }, time.Second, DefaultDeadline,
		"A roll-out not done by then is marked failed and stops advancing; longer than min_healthy."),
}

var restartFields = []field[Restart]{
	duration("min_backoff", func(r *Restart) *time.Duration { return &r.MinBackoff }, time.Millisecond, DefaultMinBackoff,
		"The wait before the first restart."),
	duration("max_backoff", func(r *Restart) *time.Duration { return &r.MaxBackoff }, time.Millisecond, DefaultMaxBackoff,
		"The longest wait between restarts; at least min_backoff."),
}

var previewFields = []field[Previews]{
	boolean("enabled", func(v *Previews) *bool { return &v.Enabled }, false,
		"Ignored, kept for compatibility: whether previews run is the operator's, in the watch list; this file only shapes them."),
	duration("ttl", func(v *Previews) *time.Duration { return &v.TTL }, time.Minute, DefaultPreviewTTL,
		"A preview whose pull request sees no new commit for this long is torn down; at least 1m."),
	{key: "services", def: emptyMapping,
		doc:    "Per-service changes in previews, by service name.",
		schema: mapSchema(labelPattern, objectSchema(overrideFields), 0),
		decode: func(d *decoder, n *yaml.Node, p path, v *Previews) { v.Services = d.overrides(n, p) }},
}

var overrideFields = []field[PreviewOverride]{
	optionalInteger("scale", func(o *PreviewOverride) **int { return &o.Scale }, 0, MaxScale,
		"The service's scale in previews. Default: its scale."),
	env("env", func(o *PreviewOverride) *map[string]string { return &o.Env },
		"Environment variables set in previews, over the service's env."),
}

// asLabel is the parse function of names that must be DNS labels; what names the thing
// in messages: "a service name must be lowercase".
func asLabel(what string) func(string) (string, error) {
	return func(s string) (string, error) {
		if err := checkLabel(s); err != nil {
			return "", fmt.Errorf("%s %v", what, err)
		}
		return s, nil
	}
}
