package schema

import (
	"slices"
	"time"
)

// A Formation is one gilliam.yml: the services of a repository, deployed together.
type Formation struct {
	// Name is the formation's name as written, or "" when the file names none: the caller
	// then applies DefaultName to the repository.
	Name string
	// Env is the formation-level environment as written; every service's Env already
	// includes it.
	Env      map[string]string
	Services map[string]*Service // by name; never nil
	Previews Previews
	// Domains are custom host names the router serves the web service at, lowercase.
	Domains []string
}

// A Service is one process type of a formation, run as Scale identical instances.
type Service struct {
	Name string
	Type string // TypeBuildpack, TypeImage or TypeDockerfile
	// Path is the folder built for buildpack and dockerfile services, cleaned and relative
	// to the repository root ("." for the root); "" for image services.
	Path  string
	Image string // the image reference of an image service; "" otherwise
	// Process is the buildpack launch process type to run (DefaultProcess unless set); ""
	// for other types and when Command is set.
	Process string
	Command []string          // an explicit command; nil runs the image's default
	Ports   []Port            // the first one is the primary port, registered in Consul
	Env     map[string]string // the formation env overridden by the service env; never nil
	Scale   int               // instances to run, 0 to MaxScale
	Check   Check
	// Resources are what one instance needs, in millicores and bytes.
	Resources   Resources
	Constraints []Constraint // host labels an instance's host must match, all of them
	Internal    bool         // an auxiliary service, never exposed outside the formation
	ReadOnly    bool         // the container's root filesystem is read-only
	Web         bool         // the service the router serves at the formation's own name
	DependsOn   []string     // services rolled out, and healthy, before this one
	Rollout     Rollout
	Restart     Restart
	// Volumes are folders kept per instance slot on its host (stateful.go).
	Volumes []Volume
	// Release is the command run once per release before its roll-out; nil for none.
	Release *ReleasePhase
}

// Service types.
const (
	TypeBuildpack  = "buildpack"  // built from Path with Cloud Native Buildpacks
	TypeImage      = "image"      // runs Image as it is
	TypeDockerfile = "dockerfile" // built from Path/Dockerfile
)

// A Port is one TCP port the service listens on inside its container.
type Port struct {
	Port int
	Name string // optional, a DNS label unique within the service
}

// A Check tells when an instance is healthy. Its target is always the primary port.
type Check struct {
	Type     string        // CheckHTTP, CheckTCP or CheckNone
	Path     string        // the path an HTTP check requests, starting with "/"
	Interval time.Duration // between two probes
	Timeout  time.Duration // for one probe
	// Grace is how long after an instance starts its failing checks are not held against
	// it: the time it may take to boot.
	Grace time.Duration
}

// Check types.
const (
	CheckHTTP = "http" // GET Path answers 2xx (redirects are not followed)
	CheckTCP  = "tcp"  // the port accepts a connection
	CheckNone = "none" // healthy as soon as it runs
)

// Resources are reserved on a host for each instance.
type Resources struct {
	CPU    int64 // millicores: 1000 is one core
	Memory int64 // bytes
}

// A Constraint restricts the hosts an instance may run on by one of their labels.
type Constraint struct {
	Key   string
	Op    string // OpEqual, OpNotEqual or OpMatch
	Value string // a regular expression (Go syntax) for OpMatch
}

// Constraint operators, as written between key and value ("zone=eu").
const (
	OpEqual    = "="  // the host has the label with this value
	OpNotEqual = "!=" // the host lacks the label or has another value
	OpMatch    = "~=" // the host has the label and its value matches the regular expression
)

// A Rollout says how a new release replaces the running one, a few instances at a time:
// a new instance starts, and an old one stops only once its replacement has been healthy
// for MinHealthy.
type Rollout struct {
	MaxParallel int           // new instances started at once
	MinHealthy  time.Duration // how long a new instance must pass its check before an old one stops
	Deadline    time.Duration // a roll-out not done by then is marked failed and stops advancing
}

// Restart bounds the backoff between restarts of a crashing instance: it starts at
// MinBackoff, doubles at each crash and stays at MaxBackoff.
type Restart struct {
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

// Previews say whether pull requests get a preview formation of their own, and how it
// differs from the main one.
type Previews struct {
	Enabled bool
	TTL     time.Duration // a preview not updated for this long is torn down
	// Services holds per-service overrides, by service name; never nil.
	Services map[string]PreviewOverride
}

// A PreviewOverride changes one service in preview formations.
type PreviewOverride struct {
	Scale *int              // nil keeps the service's scale
	Env   map[string]string // merged over the service's env; never nil
}

// Defaults of the fields a gilliam.yml leaves out. docs/gilliam-yml.md lists them too and
// a test keeps the two in step.
const (
	DefaultProcess       = "web"
	DefaultScale         = 1
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
	DefaultCheckGrace    = 10 * time.Second
	DefaultCPU           = 250       // millicores
	DefaultMemory        = 256 << 20 // 256Mi
	DefaultMaxParallel   = 1
	DefaultMinHealthy    = 10 * time.Second
	DefaultDeadline      = 5 * time.Minute
	DefaultMinBackoff    = 1 * time.Second
	DefaultMaxBackoff    = 1 * time.Minute
	DefaultPreviewTTL    = 72 * time.Hour
)

// Limits. They guard the control plane against typos and hostile files rather than
// describe what a host can do.
const (
	// MaxFileSize is the largest gilliam.yml accepted; a larger file is refused unread.
	MaxFileSize = 1 << 20
	// MaxScale bounds scale and max_parallel: a few extra zeros must not make the scheduler
	// plan millions of instances.
	MaxScale = 1000
)

// ServiceNames returns the names of the services, sorted.
// WebService is the service the router serves at <formation>.<domain> and at the custom
// domains: the one marked `web: true`, else the one named web unless it is internal, else
// "" (none).
func (f *Formation) WebService() string {
	for _, name := range f.ServiceNames() {
		if f.Services[name].Web {
			return name
		}
	}
	if s := f.Services["web"]; s != nil && !s.Internal {
		return "web"
	}
	return ""
}

func (f *Formation) ServiceNames() []string {
	names := make([]string, 0, len(f.Services))
	for name := range f.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// StartOrder returns the service names with every service after the services it depends
// on, and otherwise sorted by name, so that a roll-out can proceed in this order. It
// relies on the formation having been validated: depends_on has no cycle.
func (f *Formation) StartOrder() []string {
	var order []string
	done := make(map[string]bool, len(f.Services))
	var visit func(name string)
	visit = func(name string) {
		if done[name] {
			return
		}
		done[name] = true
		if s := f.Services[name]; s != nil {
			deps := slices.Clone(s.DependsOn)
			slices.Sort(deps)
			for _, dep := range deps {
				visit(dep)
			}
		}
		order = append(order, name)
	}
	for _, name := range f.ServiceNames() {
		visit(name)
	}
	return order
}

// PrimaryPort returns the service's first port, the one registered in Consul and checked,
// and false when it has none.
func (s *Service) PrimaryPort() (Port, bool) {
	if len(s.Ports) == 0 {
		return Port{}, false
	}
	return s.Ports[0], true
}

// Built reports whether the service is built from the repository (buildpack and
// dockerfile services) rather than run from an image reference.
func (s *Service) Built() bool {
	return s.Type == TypeBuildpack || s.Type == TypeDockerfile
}
