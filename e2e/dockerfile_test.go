package e2e

import (
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A dockerfile service with `command:` runs it as the container's command, with the
// image's own entrypoint: images built from a Dockerfile have no buildpack launcher.
func TestDockerfileServiceCommand(t *testing.T) {
	parallel(t, 18*time.Second)
	c := newCluster(t)
	c.host("h")
	base := c.docker.TestImage(t)
	c.repo.Commit(map[string]string{
		"Dockerfile": "FROM " + base + "\nENV MESSAGE=from-the-image\n",
		"gilliam.yml": `formation: dfc
services:
  web:
    type: dockerfile
    path: .
    command: [say, from-the-command]
    ports: [8080]
    check: {http: /healthz, interval: 1s, timeout: 1s}
`}, "dockerfile with a command")
	c.sync("a", nil)
	testenv.Eventually(t, 3*time.Minute, "the command's answer", func() bool { return c.countAnswering("dfc-web", "from-the-command") == 1 })
}
