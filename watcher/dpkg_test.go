package watcher

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// requireDpkg skips a test on a host without a dpkg database.
func requireDpkg(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/var/lib/dpkg/info"); err != nil {
		t.Skip("no dpkg database on this host:", err)
	}
}

// TestDpkgIndexHost reads this host's real dpkg database: packaged
// executables are owned in both spellings of merged /usr, others are not.
func TestDpkgIndexHost(t *testing.T) {
	requireDpkg(t)
	start := time.Now()
	x, err := loadDpkgIndex("/var/lib/dpkg", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d paths of %d packages in %v", len(x.ents), len(x.pkgs), time.Since(start))
	if len(x.ents) < 1000 {
		t.Fatalf("only %d paths indexed", len(x.ents))
	}
	for _, path := range []string{"/usr/bin/sleep", "/bin/sleep", "/usr/bin/dpkg", "/usr/bin/perl"} {
		if !x.owned(path) {
			t.Errorf("%s: not owned by a package", path)
		}
	}
	// dpkg -S says who owns each of /usr/sbin (some through the /sbin
	// spelling): every one must be owned.
	listed := hostListed(t)
	ents, _ := os.ReadDir("/usr/sbin")
	n := 0
	for _, e := range ents {
		path := "/usr/sbin/" + e.Name()
		alt, _ := usrAlias(path)
		if e.IsDir() || !listed[path] && !listed[alt] {
			continue
		}
		n++
		if !x.owned(path) {
			t.Errorf("%s: listed by a package, not owned in the index", path)
		}
	}
	if n == 0 {
		t.Error("no packaged file found in /usr/sbin")
	}
	for _, path := range []string{"/opt/nothing/sleep", "/usr/local/bin/sleep", "/tmp/sleep", "/usr/bin/sleep.copy"} {
		if x.owned(path) {
			t.Errorf("%s: owned", path)
		}
	}
}

// hostListed returns every path the host's .list files name, read
// without the index (grep's way, as dpkg -S finds them).
func hostListed(t testing.TB) map[string]bool {
	t.Helper()
	set := make(map[string]bool)
	lists, _ := filepath.Glob("/var/lib/dpkg/info/*.list")
	for _, l := range lists {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			set[line] = true
		}
	}
	return set
}

// BenchmarkDpkgIndex builds the index of this host's dpkg database, and
// reports what it keeps (retained-B) besides the time and what the build
// allocates.
func BenchmarkDpkgIndex(b *testing.B) {
	requireDpkg(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := loadDpkgIndex("/var/lib/dpkg", 0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x, _ := loadDpkgIndex("/var/lib/dpkg", 0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "retained-B")
	b.ReportMetric(float64(len(x.ents)), "paths")
	runtime.KeepAlive(x)
}

// TestDpkgIndexBudget holds the index to the budget on this host:
// built in 100 ms, kept in 8 MiB. The time is the best of a few builds,
// so that another test's load does not fail it.
func TestDpkgIndexBudget(t *testing.T) {
	requireDpkg(t)
	if testing.Short() || raceEnabled {
		t.Skip("timing: not with -short or -race")
	}
	best := time.Hour
	var x *dpkgIndex
	for range 5 {
		start := time.Now()
		var err error
		if x, err = loadDpkgIndex("/var/lib/dpkg", 0); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	kept := len(x.ents)*16 + len(x.pkgs)*16
	for _, p := range x.pkgs {
		kept += len(p)
	}
	t.Logf("best build %v, index %d bytes for %d paths", best, kept, len(x.ents))
	if best > 100*time.Millisecond {
		t.Errorf("build took %v, want at most 100ms", best)
	}
	if kept > 8<<20 {
		t.Errorf("index keeps %d bytes, want at most 8 MiB", kept)
	}
}

// copyDpkg makes a throwaway dpkg database under a temporary directory,
// with the given .list files (package -> paths) and md5sums (package ->
// content): never the host's files.
func copyDpkg(t *testing.T, lists, md5sums map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "info"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeDpkgFiles(t, dir, lists, md5sums)
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeDpkgFiles(t *testing.T, dir string, lists, md5sums map[string]string) {
	t.Helper()
	for pkg, l := range lists {
		if err := os.WriteFile(filepath.Join(dir, "info", pkg+".list"), []byte(l), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for pkg, s := range md5sums {
		if err := os.WriteFile(filepath.Join(dir, "info", pkg+".md5sums"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// touchStatus ends a simulated dpkg run as dpkg does: status-new renamed
// over status.
func touchStatus(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "status-new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "status-new"), filepath.Join(dir, "status")); err != nil {
		t.Fatal(err)
	}
}

// waitGen waits for db to reach build gen; the debounce is a second.
func waitGen(t *testing.T, db *dpkgDB, gen uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for db.gen.Load() < gen {
		if time.Now().After(deadline) {
			t.Fatalf("index build %d not reached (at %d)", gen, db.gen.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDpkgRebuild changes a throwaway database as dpkg would: the index is
// rebuilt once the run ends; a database that cannot be read keeps the old
// index and says so once.
func TestDpkgRebuild(t *testing.T) {
	dir := copyDpkg(t, map[string]string{"a": "/opt/a/bin/a\n"}, nil)
	db, err := openDpkg(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.wait()
	if !db.index().owned("/opt/a/bin/a") || db.index().owned("/opt/b/bin/b") {
		t.Fatal("first build wrong")
	}
	// A run: the new package's list first, then status, several times.
	writeDpkgFiles(t, dir, map[string]string{"b": "/opt/b/bin/b\n"}, nil)
	for range 3 {
		touchStatus(t, dir)
	}
	waitGen(t, db, 2)
	if !db.index().owned("/opt/b/bin/b") {
		t.Error("a package installed: not in the rebuilt index")
	}
	if got := db.takeFailure(); got != "" {
		t.Errorf("failure %q after a good rebuild", got)
	}
	// A broken diversions file: the rebuild fails, the old index stays.
	if err := os.WriteFile(filepath.Join(dir, "diversions"), []byte("/opt/b/bin/b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var msg string
	for msg == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		msg = db.takeFailure()
	}
	if !strings.Contains(msg, "diversions") {
		t.Errorf("failure %q, want one naming diversions", msg)
	}
	if db.gen.Load() != 2 || !db.index().owned("/opt/b/bin/b") {
		t.Error("a failed rebuild changed the index")
	}
	if got := db.takeFailure(); got != "" {
		t.Errorf("failure said twice: %q", got)
	}
}

// TestDpkgNone: without dpkg there is no index and no watch.
func TestDpkgNone(t *testing.T) {
	db, err := openDpkg(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.index() != nil || db.fw != nil {
		t.Error("an index or a watch without dpkg")
	}
}
