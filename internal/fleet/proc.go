// Package fleet runs a whole ratefleet on one machine: an embedded NATS server, the
// upstream simulator, a producer, workers and the monitor as separate processes,
// and reads what happened to every request. It backs `make run`, the benchmarks
// (internal/bench), the soak (internal/soak) and the tests that kill and pause
// real processes.
package fleet

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts bin with args. Its output goes to out, each line prefixed with the
// process's name when prefix is true. The child runs in its own process group so a
// signal to it reaches only it.
func Start(name, bin string, args, env []string, out io.Writer, prefix bool) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	var pipes sync.WaitGroup
	if out != nil {
		for _, set := range []func(io.Writer){func(w io.Writer) { cmd.Stdout = w }, func(w io.Writer) { cmd.Stderr = w }} {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, fmt.Errorf("start %s: %w", name, err)
			}
			set(w)
			pipes.Add(1)
			go func() {
				defer pipes.Done()
				defer r.Close()
				copyLines(out, r, name, prefix)
			}()
			defer w.Close() // the child holds its own copy
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w (run `make build` first?)", name, bin, err)
	}
	go func() {
		p.err = cmd.Wait()
		pipes.Wait()
		close(p.done)
	}()
	return p, nil
}

// SyncWriter serialises writes from several processes' output onto one writer.
type SyncWriter struct {
	mu sync.Mutex
	W  io.Writer
}

// Write writes p under the lock.
func (s *SyncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.W.Write(p)
}

func copyLines(out io.Writer, r io.Reader, name string, prefix bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text() + "\n"
		if prefix {
			line = fmt.Sprintf("%-10s| %s", name, line)
		}
		_, _ = io.WriteString(out, line)
	}
}

// Args returns the process's command line, program first.
func (p *Proc) Args() []string { return append([]string(nil), p.cmd.Args...) }

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then kills it.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %s and was killed", p.Name, grace)
	}
}

// Usage returns the CPU time and peak resident memory of an exited process.
func (p *Proc) Usage() (cpu time.Duration, maxRSS int64) {
	<-p.done
	if p.cmd.ProcessState == nil {
		return 0, 0
	}
	cpu = p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxRSS = ru.Maxrss * 1024
	}
	return cpu, maxRSS
}

// WaitCtx waits for the process to exit or ctx to end.
func (p *Proc) WaitCtx(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CPU returns the CPU time the running process has used so far, read from /proc;
// 0 where /proc is not there.
func (p *Proc) CPU() time.Duration { return procCPU(p.PID()) }

// userHZ is Linux's USER_HZ, the unit of /proc/<pid>/stat's times, on every
// architecture Go runs on; ClockTicks reads the kernel's own word for it.
const userHZ = 100

// atClockTick is the auxiliary vector's AT_CLKTCK: the clock ticks a second.
const atClockTick = 17

// ClockTicks returns the clock ticks a second of /proc's CPU times, from this
// process's auxiliary vector (what sysconf(_SC_CLK_TCK) reads), or 100, Linux's
// USER_HZ, where it cannot be read.
func ClockTicks() int64 {
	data, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return userHZ
	}
	if hz := auxvValue(data, atClockTick); hz > 0 {
		return int64(hz)
	}
	return userHZ
}

// auxvValue returns the value of tag in an auxiliary vector (pairs of native
// words, ended by a zero tag), or 0 when it is not there.
func auxvValue(auxv []byte, tag uint64) uint64 {
	word := strconv.IntSize / 8
	read := func(b []byte) uint64 {
		if word == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for i := 0; i+2*word <= len(auxv); i += 2 * word {
		t := read(auxv[i:])
		if t == 0 {
			break
		}
		if t == tag {
			return read(auxv[i+word:])
		}
	}
	return 0
}

// PeakRSS returns the most memory the running process has held resident
// (VmHWM in /proc/<pid>/status), in bytes, or 0 where it cannot be read.
func (p *Proc) PeakRSS() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
	if err != nil {
		return 0
	}
	n, err := StatusPeakRSS(data)
	if err != nil {
		return 0
	}
	return n
}

// StatusPeakRSS returns the peak resident set size that a /proc/<pid>/status
// file records (its VmHWM line, in kB), in bytes.
func StatusPeakRSS(status []byte) (int64, error) {
	for line := range strings.Lines(string(status)) {
		v, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("read VmHWM from %q: want a number of kB", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read VmHWM: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM line in /proc/<pid>/status")
}

func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	cpu, err := StatCPU(data, ClockTicks())
	if err != nil {
		return 0
	}
	return cpu
}

// StatCPU returns the CPU time, user plus system (utime + stime), that a
// /proc/<pid>/stat line records, its times counted in ticks a second
// (ClockTicks).
func StatCPU(stat []byte, ticks int64) (time.Duration, error) {
	// The command name, in parentheses, may hold spaces and parentheses: count
	// fields after the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || ticks <= 0 {
		return 0, fmt.Errorf("read CPU time from %q: not a /proc/<pid>/stat line", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("read CPU time from %q: %d fields after the name, want at least 13", s, len(f))
	}
	utime, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read utime: %w", err)
	}
	stime, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read stime: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / time.Duration(ticks), nil
}

// SelfCPU returns the CPU time this process (and the embedded NATS in it) has used.
func SelfCPU() time.Duration { return procCPU(os.Getpid()) }
