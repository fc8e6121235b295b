package hostd

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// MachineCapacity is what this machine offers: every core (in millicores) and the memory
// /proc/meminfo reports (0, meaning unknown, where it cannot be read).
func MachineCapacity() state.Resources {
	r := state.Resources{CPU: int64(runtime.NumCPU()) * 1000}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return r
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
				r.Memory = kb * 1024
			}
			break
		}
	}
	return r
}
