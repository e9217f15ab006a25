package watcher

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseDiversions(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []diversion
		err  error
	}{
		{"empty", "", nil, nil},
		{"two", "/usr/bin/a\n/usr/bin/a.real\npkg\n/b\n/b.local\n:\n", []diversion{{"/usr/bin/a", "/usr/bin/a.real", "pkg"}, {"/b", "/b.local", ":"}}, nil},
		{"no final newline", "/a\n/a.x\np", []diversion{{"/a", "/a.x", "p"}}, nil},
		{"truncated", "/a\n/a.x\np\n/b\n", nil, errDiversions},
		{"relative", "a\n/a.x\np\n", nil, errDiversions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDiversions([]byte(tt.data))
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(diversion{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestUsrAlias(t *testing.T) {
	tests := []struct {
		name, path, want string
		ok               bool
	}{
		{"usr bin", "/usr/bin/sleep", "/bin/sleep", true},
		{"bin", "/bin/sleep", "/usr/bin/sleep", true},
		{"usr sbin", "/usr/sbin/agetty", "/sbin/agetty", true},
		{"lib64", "/lib64/ld-linux-x86-64.so.2", "/usr/lib64/ld-linux-x86-64.so.2", true},
		{"usr share", "/usr/share/x", "", false},
		{"binary prefix", "/binx/y", "", false},
		{"usr local", "/usr/local/bin/x", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := usrAlias(tt.path)
			if got != tt.want || ok != tt.ok {
				t.Errorf("usrAlias(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestDpkgIndexOwners(t *testing.T) {
	divs := []diversion{
		{"/usr/bin/pg_config", "/usr/bin/pg_config.libpq-dev", "postgresql-common"},
		{"/usr/sbin/local", "/usr/sbin/local.distrib", ":"},
	}
	b := newIndexBuilder(divs, 0)
	addListString(b, "coreutils", "/.\n/bin\n/bin/sleep\n/usr/bin/env\n")
	addListString(b, "libpq-dev:amd64", "/usr/bin/pg_config\n/usr/include/x.h")
	addListString(b, "postgresql-common", "/usr/bin/pg_config\n")
	addListString(b, "thing", "/usr/sbin/local\n\nnot absolute\n")
	addListString(b, "libc6:amd64", "/usr/share/doc/libc6\n")
	addListString(b, "libc6:i386", "/usr/share/doc/libc6\n")
	x := b.done()
	tests := []struct {
		path string
		want []string
	}{
		{"/bin/sleep", []string{"coreutils"}},
		{"/usr/bin/sleep", []string{"coreutils"}}, // merged /usr
		{"/usr/bin/env", []string{"coreutils"}},
		{"/bin/env", []string{"coreutils"}},
		{"/usr/bin/pg_config", []string{"postgresql-common"}},
		{"/usr/bin/pg_config.libpq-dev", []string{"libpq-dev:amd64"}},
		{"/usr/sbin/local", nil}, // a local diversion: the admin's file
		{"/usr/sbin/local.distrib", []string{"thing"}},
		{"/usr/share/doc/libc6", []string{"libc6:amd64", "libc6:i386"}},
		{"/usr/local/bin/x", nil},
		{"/opt/sleep", nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got := x.owners(tt.path, nil)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("owners (-want +got):\n%s", diff)
			}
			if x.owned(tt.path) != (len(tt.want) > 0) {
				t.Errorf("owned = %v", !(len(tt.want) > 0))
			}
		})
	}
	if diff := cmp.Diff([]string{"usr/bin/pg_config.libpq-dev", "bin/pg_config.libpq-dev", "usr/bin/pg_config", "bin/pg_config"}, x.md5Names("/usr/bin/pg_config.libpq-dev")); diff != "" {
		t.Errorf("md5Names of a diverted file (-want +got):\n%s", diff)
	}
}

func addListString(b *indexBuilder, pkg, list string) {
	if err := b.addList(pkg, bufio.NewReader(strings.NewReader(list))); err != nil {
		panic(err)
	}
}

func TestMD5Lookup(t *testing.T) {
	a, b := md5.Sum([]byte("a")), md5.Sum([]byte("b"))
	sums := []byte(fmt.Sprintf("%x  bin/sleep\n%x  usr/bin/env\nbroken line\n%x  short\n", a, b, a[:4]))
	tests := []struct {
		name  string
		names []string
		want  [16]byte
		ok    bool
	}{
		{"first", []string{"bin/sleep"}, a, true},
		{"second spelling", []string{"bin/env", "usr/bin/env"}, b, true},
		{"absent", []string{"usr/bin/x"}, [16]byte{}, false},
		{"short sum", []string{"short"}, [16]byte{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := md5Lookup(sums, tt.names)
			if got != tt.want || ok != tt.ok {
				t.Errorf("md5Lookup = %x, %v; want %x, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRiskNames(t *testing.T) {
	tests := []struct {
		name  string
		base  string
		names []string
		want  bool
	}{
		{"versioned python", "python3.11", interpreterNames, true},
		{"perl version", "perl5.36.0", interpreterNames, true},
		{"php", "php8.2", interpreterNames, true},
		{"php-fpm is no php", "php-fpm8.2", interpreterNames, false},
		{"php-fpm web server", "php-fpm8.2", webServerNames, true},
		{"sha256sum is no sh", "sha256sum", interpreterNames, false},
		{"nc.openbsd", "nc.openbsd", netcatNames, true},
		{"ncdu is no nc", "ncdu", netcatNames, false},
		{"socat", "socat", netcatNames, true},
		{"dash shell", "dash", shellNames, true},
		{"nginx", "nginx", webServerNames, true},
		{"sleep", "sleep", interpreterNames, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nameIs(tt.base, tt.names); got != tt.want {
				t.Errorf("nameIs(%q) = %v", tt.base, got)
			}
		})
	}
}

func TestInWritablePath(t *testing.T) {
	for path, want := range map[string]bool{
		"/tmp/x":                   true,
		"/var/tmp/x":               true,
		"/dev/shm/x":               true,
		"/run/user/1000/x":         true,
		"/home/u/.cache/x":         true,
		"/usr/bin/.x":              true,
		"/usr/bin/x":               false,
		"/opt/app/bin/x":           false,
		"/tmpfoo/x":                false,
		"/usr/lib/x86_64/ld.so.1x": false,
	} {
		if got := inWritablePath(path); got != want {
			t.Errorf("inWritablePath(%q) = %v", path, got)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name string
		data string
		want procStat
		ok   bool
	}{
		{"plain", "42 (sleep) S 1 42 42 34816 42 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0", procStat{1, 34816, 123456}, true},
		{"comm with paren", "42 (a) b) S 7 42 42 0 42 4194560 1 0 0 0 0 0 0 0 20 0 1 0 99 0 0", procStat{7, 0, 99}, true},
		{"short", "42 (x) S 1 2 3", procStat{}, false},
		{"no paren", "42 x S 1", procStat{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseProcStat([]byte(tt.data))
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseStatusEUID(t *testing.T) {
	status := "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
	if got, ok := parseStatusEUID([]byte(status)); got != 0 || !ok {
		t.Errorf("got %d, %v; want 0 (the effective uid), true", got, ok)
	}
	if _, ok := parseStatusEUID([]byte("Name:\tx\nUid:\t1000\n")); ok {
		t.Error("a Uid line with one field parsed")
	}
	if got, ok := parseBootTime([]byte("cpu 1 2\nbtime 1700000000\nprocesses 5\n")); got != 1700000000 || !ok {
		t.Errorf("btime %d, %v", got, ok)
	}
}

func TestFlagSetOrder(t *testing.T) {
	var s FlagSet
	for _, f := range slices.Backward(AllFlags) {
		s.Add(f)
	}
	if diff := cmp.Diff(AllFlags, s.List()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := orEmpty(FlagSet(0).List()); got == nil || len(got) != 0 {
		t.Errorf("empty set lists %#v, want an empty, non-nil slice", got)
	}
}

func FuzzParseDiversions(f *testing.F) {
	f.Add([]byte("/usr/bin/a\n/usr/bin/a.real\npkg\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		divs, err := parseDiversions(b)
		if err == nil && len(divs) > 0 {
			x := newIndexBuilder(divs, 0)
			x.addList("p", bufio.NewReader(bytes.NewReader(b)))
			x.done()
		}
	})
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("42 (sleep) S 1 42 42 34816 42 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseProcStat(b)
		parseStatusEUID(b)
		parseBootTime(b)
	})
}
