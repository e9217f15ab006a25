package watcher

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inNetnsHelper enters the namespace at PW_NETNS many times through inNetns,
// from the main goroutine as the watcher does, then prints the namespace of
// the main thread (/proc/self/ns/net is the thread group leader's) before
// and after.
func inNetnsHelper() int {
	before, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	path := os.Getenv("PW_NETNS")
	for range 50 {
		if err := inNetns(path, 0, func() error { return nil }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	after, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Println(before, after)
	return 0
}

// TestInNetnsMainThread checks that a namespace entered through inNetns
// does not stick to the main thread: when the runtime runs the goroutine
// there (likely, while the main goroutine waits for it), the thread must
// come back to its own namespace instead of being parked in the foreign one.
// It runs in a child process, so that a failure cannot leave this one's
// main thread in a foreign namespace.
func TestInNetnsMainThread(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{netns: true})
	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=innetns", fmt.Sprintf("PW_NETNS=/proc/%d/ns/net", h.pid()), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] != f[1] {
		t.Errorf("main thread's namespace before and after 50 inNetns calls: %q, want the same", out)
	}
}

// TestRunInNetnsRestore checks the way back used on the main thread: enter
// a namespace on a locked thread, run fn there, and setns to the original.
func TestRunInNetnsRestore(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{netns: true})
	want := mustNetns(t, h.pid())
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Thrown away if anything below fails.
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		var origSt unix.Stat_t
		if err := unix.Fstat(orig, &origSt); err != nil {
			errc <- err
			return
		}
		var inside uint64
		entered, err := runInNetns(fmt.Sprintf("/proc/%d/ns/net", h.pid()), want, func() error {
			var st unix.Stat_t
			err := unix.Stat("/proc/thread-self/ns/net", &st)
			inside = st.Ino
			return err
		})
		if !entered || err != nil {
			errc <- fmt.Errorf("entered %v: %v", entered, err)
			return
		}
		if inside != want {
			errc <- fmt.Errorf("fn ran in namespace %d, want %d", inside, want)
			return
		}
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			errc <- err
			return
		}
		if st.Ino != origSt.Ino {
			errc <- fmt.Errorf("after setns back, namespace %d, want %d", st.Ino, origSt.Ino)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Error(err)
	}
}
