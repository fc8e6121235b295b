package state

import (
	"context"
	"time"
)

// ForgeReport is how the commit statuses and pull-request comments the leader posts on
// the forges stand (docs/observability.md): `gilliam-sync status` shows it. The leader
// rewrites it when a delivery succeeds after failing, starts failing, or is new.
type ForgeReport struct {
	Deliveries []ForgeDelivery `json:"deliveries"`
	Updated    time.Time       `json:"updated"`
}

// ForgeDelivery is one status context or one preview's comment on one repository.
type ForgeDelivery struct {
	Repo string `json:"repo"`
	// What is the status's context (gilliam/<formation>) or the comment it is.
	What string `json:"what"`
	// Formation is the formation it is about.
	Formation string `json:"formation,omitempty"`
	Commit    string `json:"commit,omitempty"`
	State     string `json:"state,omitempty"`
	// Delivered says the forge shows it; Error why not, since Since, after Attempts.
	Delivered bool      `json:"delivered"`
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	Since     time.Time `json:"since,omitzero"`
}

func (s *Store) forgeKey() string { return s.prefix + "forge" }

// ForgeReport reads the forge deliveries' report; an empty one when absent.
func (s *Store) ForgeReport(ctx context.Context) (*ForgeReport, error) {
	var r ForgeReport
	_, _, err := s.get(ctx, s.forgeKey(), &r)
	return &r, err
}

// PutForgeReport records how the forge deliveries stand.
func (s *Store) PutForgeReport(ctx context.Context, r *ForgeReport) error {
	return s.put(ctx, s.forgeKey(), r, nil)
}
