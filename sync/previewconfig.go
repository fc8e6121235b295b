package sync

import (
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// A preview's config vars: its base formation's, under the file's preview overrides, under
// its own (`gilliam-sync env set FORMATION-pr-N`). From weakest to strongest, a preview
// service's env is:
//
//	the service's env in gilliam.yml
//	the base formation's config vars
//	previews.services.<service>.env in gilliam.yml
//	the preview formation's own config vars
//
// A formation that is no preview has its own config vars over the file's env, as before.

// serviceConfig is the config vars newRelease merges over a service's env (a preview's
// already holds the file's preview overrides, previewOf): the formation's own, and for a
// preview (base set) its base's first, except where the file's preview override sets a
// variable. config are the formations' opened config vars (World.Config).
func serviceConfig(config map[string]map[string]string, name, base string, override schema.PreviewOverride) map[string]string {
	own := config[name]
	if base == "" || len(config[base]) == 0 {
		return own
	}
	out := make(map[string]string, len(config[base])+len(own))
	for k, v := range config[base] {
		if _, overridden := override.Env[k]; !overridden {
			out[k] = v
		}
	}
	for k, v := range own {
		out[k] = v
	}
	return out
}

// configIndex identifies the config vars a formation's releases derive from: the
// ModifyIndex of its own, plus its base's for a preview, so that a change of either (each
// raises its index) releases the preview again.
func configIndex(kv *state.Snapshot, name, base string) uint64 {
	if base == "" {
		return kv.ConfigIndex(name)
	}
	return kv.ConfigIndex(name) + kv.ConfigIndex(base)
}

// previewBase is the formation a preview formation previews, from its status; "" for a
// formation that is no preview.
func previewBase(kv *state.Snapshot, formation string) string {
	if st := kv.Status[formation]; st != nil && st.Preview != nil {
		return st.Preview.Of
	}
	return ""
}
