package hostd

import (
	"os"
	"strings"
	"testing"
)

// The ACL policy docs/hostd.md shows is the one ACLRules gives (and the ACL test runs with).
func TestDocsShowTheACLRules(t *testing.T) {
	doc, err := os.ReadFile("../docs/hostd.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "```hcl\n" + ACLRules("gilliam/", "web-1") + "```\n"
	if !strings.Contains(string(doc), want) {
		t.Errorf("docs/hostd.md does not show ACLRules(\"gilliam/\", \"web-1\"):\n%s", want)
	}
}
