package schema

import (
	"strings"
	"testing"
)

func TestDefaultName(t *testing.T) {
	for repo, want := range map[string]string{
		"https://github.com/acme/shop":        "shop",
		"https://github.com/acme/My_Shop.git": "my-shop",
		"https://github.com/acme/shop.git/":   "shop",
		"git@github.com:acme/shop.git":        "shop",
		"git@github.com:shop.git":             "shop",
		"ssh://git@host:2222/acme/shop.git":   "shop",
		"https://host/a/shop?ref=main#readme": "shop",
		"/srv/repos/shop/":                    "shop",
		`C:\repos\Shop Front`:                 "shop-front",
		"file:///tmp/--weird..name--":         "weird-name",
		"café":                                "caf",
		"":                                    "formation",
		"/":                                   "formation",
		"...":                                 "formation",
		"日本":                                  "formation",
		"2024-report":                         "2024-report",
		"/x/" + strings.Repeat("ab-", 40):     strings.TrimSuffix(strings.Repeat("ab-", 21), "-"),
	} {
		got := DefaultName(repo)
		if got != want {
			t.Errorf("DefaultName(%q) = %q, want %q", repo, got, want)
		}
		if err := checkLabel(got); err != nil {
			t.Errorf("DefaultName(%q) = %q, not a DNS label: %v", repo, got, err)
		}
	}
}

// Whatever the input, the name is a DNS label.
func FuzzDefaultName(f *testing.F) {
	for _, s := range []string{"https://github.com/acme/shop.git", "", "-", "A_B", strings.Repeat("x-", 50)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, repo string) {
		if name := DefaultName(repo); checkLabel(name) != nil {
			t.Fatalf("DefaultName(%q) = %q, not a DNS label", repo, name)
		}
	})
}
