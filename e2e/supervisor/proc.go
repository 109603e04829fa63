package supervisor

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// What the benchmarks read of a process, from Linux's /proc.

// Status returns a "VmXXX:  1234 kB" field of /proc/PID/status (VmRSS,
// VmHWM) in bytes.
func (p *Process) Status(field string) (int64, error) {
	pid := p.PID()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) < 1 {
			break
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s in /proc/%d/status: %w", field, pid, err)
		}
		return n << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// RSS returns the resident memory (VmRSS) in bytes.
func (p *Process) RSS() (int64, error) { return p.Status("VmRSS") }

// ResetPeak resets the peak resident memory (VmHWM) to the current one by
// writing 5 to /proc/PID/clear_refs; not every kernel or container allows it.
func (p *Process) ResetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.PID()), []byte("5"), 0)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100

// CPUSeconds returns the user plus system CPU time of the process (and its
// waited-for children), 0 when it cannot be read.
func (p *Process) CPUSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: the
	// state is f[0], utime (field 14 of the line) f[11], stime f[12].
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks
}

// FDs returns how many descriptors the process has open, 0 when it cannot
// be read.
func (p *Process) FDs() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID()))
	if err != nil {
		return 0
	}
	return len(ents)
}

// SamplePeaks reads the resident memory every interval, and the open
// descriptors every fdEvery-th time (0: never; counting them costs more),
// until the returned function is called, which returns the highest of each.
func (p *Process) SamplePeaks(interval time.Duration, fdEvery int) (stop func() (rss int64, fds int)) {
	var peakRSS int64
	var peakFDs int
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			if rss, err := p.RSS(); err == nil && rss > peakRSS {
				peakRSS = rss
			}
			if fdEvery > 0 && i%fdEvery == 0 {
				peakFDs = max(peakFDs, p.FDs())
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int64, int) {
		close(done)
		<-sampled
		return peakRSS, peakFDs
	}
}
