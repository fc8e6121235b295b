package state

import "github.com/gilliam-sync/gilliam-sync/internal/names"

// The naming contract lives in internal/names (build uses it too, and may not import
// state); these are its names for the packages that speak state.
var (
	ServiceName         = names.ServiceName
	RegistrationID      = names.RegistrationID
	ParseRegistrationID = names.ParseRegistrationID
	CheckID             = names.CheckID
	ContainerName       = names.ContainerName
	HostServiceID       = names.HostServiceID
	HostCheckID         = names.HostCheckID
	InstanceID          = names.InstanceID
	ServiceNameConflict = names.ServiceNameConflict
	ReservedFormations  = names.ReservedFormations
	VolumeName          = names.Volume
	Slot                = names.Slot
	InstanceSlot        = names.InstanceSlot
	ReleaseTaskID       = names.ReleaseTaskID
)

// HostService is the Consul service every host daemon registers for itself.
const HostService = names.HostService
