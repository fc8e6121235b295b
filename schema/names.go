package schema

import "strings"

// DefaultName derives a formation name, a valid DNS label, from a repository URL or path:
// its last element without ".git", lowercased, every run of other characters than letters
// and digits turned into one "-", cut to 63 characters. The caller applies it when the
// file has no `formation:` name; it is given an absolute path, not ".".
//
//	https://github.com/acme/My_Shop.git  →  my-shop
//	git@github.com:acme/shop.git         →  shop
//	/srv/repos/shop/                     →  shop
//
// When nothing usable is left it returns "formation".
func DefaultName(repo string) string {
	s := repo
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i] // a URL's query or fragment
	}
	s = strings.TrimRight(s, `/\`)
	if i := strings.LastIndexAny(s, `/\:`); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSuffix(strings.ToLower(s), ".git")

	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	name := b.String()
	if len(name) > 63 {
		name = name[:63]
	}
	name = strings.TrimRight(name, "-")
	if name == "" {
		return "formation"
	}
	return name
}
