package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times: USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// ProcessCPU returns the CPU time (user and system) a process has used so far, from
// /proc/<pid>/stat: Linux only.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command's name, in parentheses, may hold spaces: the fields start after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 of the file
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// CPUMeter adds up the CPU time a set of processes uses between Start and Stop.
type CPUMeter struct {
	// PIDs returns the processes to count; it is called at Start and at Stop, and a
	// process counts from the first call that lists it (all of its time, for one
	// that started in between).
	PIDs  func() []int
	start map[int]time.Duration
	used  time.Duration
	err   error
}

// Start takes the processes' CPU times.
func (m *CPUMeter) Start() {
	m.start, m.used, m.err = map[int]time.Duration{}, 0, nil
	for _, pid := range m.PIDs() {
		if t, err := ProcessCPU(pid); err == nil {
			m.start[pid] = t
		} else if m.err == nil {
			m.err = err
		}
	}
}

// Stop adds up the CPU time used since Start.
func (m *CPUMeter) Stop() {
	for _, pid := range m.PIDs() {
		t, err := ProcessCPU(pid)
		if err != nil {
			if m.err == nil {
				m.err = err
			}
			continue
		}
		m.used += t - m.start[pid]
	}
}

// Used returns the CPU time counted, and the first process that could not be read.
func (m *CPUMeter) Used() (time.Duration, error) { return m.used, m.err }

// PostgresPIDs returns the server processes of the PostgreSQL at url that
// pg_stat_activity lists (the connections' backends, and the background processes
// such as the WAL writer and the checkpointer), for a CPUMeter on the same machine.
func PostgresPIDs(ctx context.Context, url string) ([]int, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
	if err != nil {
		return nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	out := make([]int, len(pids))
	for i, p := range pids {
		out[i] = int(p)
	}
	return out, nil
}
