// Stopping, killing, freezing and thawing a cluster's server and its backends.

package pgtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stop shuts the server down cleanly (a fast shutdown: clients are disconnected) and
// waits for it.
func (c *Cluster) Stop() { c.signal(syscall.SIGINT) }

// Kill kills the server at once (SIGKILL to the postmaster and every backend), as a
// crash of the machine would.
func (c *Cluster) Kill() { c.signal(syscall.SIGKILL) }

// Freeze stops the server and every backend with SIGSTOP, as a host that hangs or
// drops off the network: its connections stay open, new ones are accepted by the
// kernel, and nothing answers. Thaw resumes it; Stop, Kill and Close kill it (a frozen
// server cannot shut down cleanly).
func (c *Cluster) Freeze() { c.stopCont(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (c *Cluster) Thaw() { c.stopCont(syscall.SIGCONT) }

func (c *Cluster) stopCont(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	// The postmaster first, so that it forks no backend after its children are listed.
	pid := c.cmd.Process.Pid
	syscall.Kill(pid, sig)
	for _, p := range childrenOf(pid) {
		syscall.Kill(p, sig)
	}
	c.frozen = sig == syscall.SIGSTOP
}

func (c *Cluster) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	if c.frozen {
		sig, c.frozen = syscall.SIGKILL, false
	}
	// Each backend of PostgreSQL's is a session of its own: a crash kills them one by
	// one, found before the postmaster dies and they lose their parent.
	var procs []int
	if sig == syscall.SIGKILL {
		procs = childrenOf(c.cmd.Process.Pid)
	}
	c.cmd.Process.Signal(sig)
	for _, p := range procs {
		syscall.Kill(p, sig)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	// A backend that outlived the postmaster holds its shared memory, and a restart
	// would refuse to start beside it: wait for them all.
	for _, p := range procs {
		for i := 0; i < 400 && alive(p); i++ {
			time.Sleep(25 * time.Millisecond)
		}
	}
	c.cmd = nil
}

// childrenOf returns the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := procStat(p); ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// procStat returns a process's parent and state from /proc/<pid>/stat.
func procStat(pid int) (ppid int, state string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, ""
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0]
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	_, state := procStat(pid)
	return state != "" && state != "Z" && state != "X"
}
