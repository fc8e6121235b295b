package names_test

import (
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

func TestVolumeNames(t *testing.T) {
	a := names.Volume("h1", "shop", "db", 0, "/data")
	if !strings.HasPrefix(a, names.VolumePrefix+"h1.shop.db.0.") {
		t.Fatal(a)
	}
	for _, b := range []string{
		names.Volume("h2", "shop", "db", 0, "/data"),
		names.Volume("h1", "shop", "db", 1, "/data"),
		names.Volume("h1", "shop", "db", 0, "/data2"),
		names.Volume("h1", "shop-db", "x", 0, "/data"),
	} {
		if a == b {
			t.Errorf("%s named twice", a)
		}
	}
	if a != names.Volume("h1", "shop", "db", 0, "/data") {
		t.Error("not stable")
	}
	id := names.InstanceID("shop", "db", "0123456789abcdef0123", 3)
	if slot, ok := names.InstanceSlot(id); !ok || slot != "shop-db-3" {
		t.Errorf("slot of %s: %q %v", id, slot, ok)
	}
	if other, _ := names.InstanceSlot(names.InstanceID("shop", "db", "fedcba9876543210fedc", 3)); other != "shop-db-3" {
		t.Errorf("two releases, two slots: %s", other)
	}
	if _, ok := names.InstanceSlot("nodash"); ok {
		t.Error("slot of nodash")
	}
}
