package policy

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/filetest"
	"github.com/portwatchd/portwatchd/watcher"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// testLoader is a loader on fixture files: the fixture services database,
// no root-only permission checks, and a fixed environment.
func testLoader(env map[string]string) *loader {
	l := newLoader()
	l.servicesFile = "testdata/services"
	l.checkPerms = false
	l.getenv = func(k string) string { return env[k] }
	return l
}

// mustLoad loads path with testLoader(env) and fails the test on an error.
func mustLoad(t *testing.T, env map[string]string, path string) *Config {
	t.Helper()
	c, err := testLoader(env).load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInvalid loads each file (or directory with drop-ins) under
// testdata/bad and compares the errors with its golden file.
func TestInvalid(t *testing.T) {
	entries, err := os.ReadDir("testdata/bad")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		var path, golden string
		switch {
		case e.IsDir():
			path = filepath.Join("testdata/bad", name, "portwatch.yaml")
			golden = filepath.Join("testdata/bad", name+".golden")
		case strings.HasSuffix(name, ".yaml"):
			path = filepath.Join("testdata/bad", name)
			golden = strings.TrimSuffix(path, ".yaml") + ".golden"
			name = strings.TrimSuffix(name, ".yaml")
		default:
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			c, err := testLoader(nil).load(path)
			if err == nil {
				t.Fatalf("Load(%s) = %d rules, want an error", path, len(c.Rules))
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Load(%s) error is %T, want ErrorList", path, err)
			}
			got := err.Error() + "\n"
			if strings.Contains(got, "SECRETTOKEN") {
				t.Errorf("error leaks the webhook URL:\n%s", got)
			}
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Load(%s) errors mismatch (-want +got):\n%s", path, diff)
			}
		})
	}
	if n < 40 {
		t.Errorf("found %d cases under testdata/bad, want at least 40", n)
	}
}

// TestHostileInput checks that inputs too big or too deep are refused with
// a clear message.
func TestHostileInput(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{
			name: "10 MB",
			data: bytes.Repeat([]byte("# padding padding padding padding\n"), 10<<20/34),
			want: "x.yaml:1:1: file is larger than 1048576 bytes",
		},
		{
			name: "deep flow nesting",
			data: []byte("allow: " + strings.Repeat("[", 100000)),
			want: "x.yaml:1:1: YAML syntax: exceeded max depth of 10000",
		},
		{
			name: "nesting within the parser's limit",
			data: []byte("allow: " + strings.Repeat("[", 500) + strings.Repeat("]", 500)),
			want: "x.yaml:1:40: nesting deeper than 32 levels",
		},
		{
			name: "deep block nesting",
			data: func() []byte {
				var b strings.Builder
				for i := range 200 {
					b.WriteString(strings.Repeat(" ", i) + "a:\n")
				}
				return []byte(b.String())
			}(),
			want: "x.yaml:33:33: nesting deeper than 32 levels",
		},
		{
			name: "billion laughs",
			data: []byte("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b]\n"),
			want: "x.yaml:1:4: YAML anchors (&a) are not supported",
		},
		{
			name: "NUL bytes",
			data: []byte("version: 1\nallow: []\n\x00\x00"),
			want: "x.yaml:3:1: file contains a NUL byte: not a YAML text file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLoader(nil)
			l.followIncludes = false
			_, err := l.parse("x.yaml", tt.data)
			if err == nil {
				t.Fatal("parse succeeded, want an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadBigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, bytes.Repeat([]byte("#\n"), 5<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := testLoader(nil).load(p)
	want := p + ": file is larger than 1048576 bytes"
	if err == nil || err.Error() != want {
		t.Errorf("Load(10 MB) = %v, want %q", err, want)
	}
}

func TestLoadFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo.yaml")
	if err := mkfifo(p); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	_, err := testLoader(nil).load(p)
	want := p + ": not a regular file (p---------)"
	if err == nil || err.Error() != want {
		t.Errorf("Load(fifo) = %v, want %q", err, want)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := testLoader(nil).load("testdata/does-not-exist.yaml")
	want := "testdata/does-not-exist.yaml: cannot read: no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %q", err, want)
	}
}

// TestReferenceConfig parses the shipped configs/portwatch.yaml and checks
// the values it documents.
func TestReferenceConfig(t *testing.T) {
	// state_dir is left to systemd's StateDirectory=.
	l := testLoader(map[string]string{"STATE_DIRECTORY": "/var/lib/portwatch-from-env"})
	c, err := l.load("../configs/portwatch.yaml")
	if err != nil {
		t.Fatalf("Load(configs/portwatch.yaml): %v", err)
	}
	checkSettings(t, c, wantDefaults("/var/lib/portwatch-from-env"), Notify{Journald: true, SpoolSize: 10000})
	var names []string
	for _, r := range c.Rules {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff([]string{"loopback", "ssh"}, names); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}
	if len(c.Notify.Webhooks) != 0 {
		t.Errorf("the shipped file sends to %d webhooks, want none", len(c.Notify.Webhooks))
	}

	// As a live allowlist, the shipped file allows loopback listeners and
	// the pinned sshd, and nothing else.
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		l    watcher.Listener
		want Verdict
	}{
		{name: "loopback, any process", l: listener("tcp", "127.0.0.1", 8080, python), want: Allowed},
		{name: "loopback v6, unattributed", l: listener("udp", "::1", 323), want: Allowed},
		{name: "sshd on wildcard", l: listener("tcp", "0.0.0.0", 22, sshd), want: Allowed},
		{name: "sshd impostor (comm and unit, not exe)", l: listener("tcp", "0.0.0.0", 22, fake), want: Unexpected},
		{name: "sshd in a container", l: with(listener("tcp", "0.0.0.0", 22, sshd), func(l *watcher.Listener) { l.Netns = "container:0123456789ab" }), want: Unexpected},
		{name: "sshd on another port", l: listener("tcp", "0.0.0.0", 2222, sshd), want: Unexpected},
		{name: "wildcard 8000 in a container", l: with(listener("tcp", "0.0.0.0", 8000, inCtr), func(l *watcher.Listener) { l.Netns = "container:0123456789ab" }), want: Unexpected},
		{name: "LAN address, no process", l: listener("udp", "192.168.1.5", 5353), want: Unexpected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Evaluate(tt.l, now); got.Verdict != tt.want {
				t.Errorf("verdict = %s (%s), want %s", got.Verdict, got.Reason, tt.want)
			}
		})
	}

	// Every key the loader knows is documented in the reference file.
	data, err := os.ReadFile("../configs/portwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{topKeys, ruleKeys, notifyKeys, webhookKeys} {
		for _, k := range keys {
			if !bytes.Contains(data, []byte("# "+k+":")) && !bytes.Contains(data, []byte("#   "+k+":")) {
				t.Errorf("key %q is not documented in a comment in configs/portwatch.yaml", k)
			}
		}
	}
}

// TestExampleDropins loads the shipped file with every example drop-in
// from configs/examples/ beside it, as an admin who copied them all to
// /etc/portwatch.d/ would, and the commented-out example rules in the
// shipped file itself: examples that do not load teach nothing.
func TestExampleDropins(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	main, err := os.ReadFile("../configs/portwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files["portwatch.yaml"] = string(main)
	examples, err := filepath.Glob("../configs/examples/*.yaml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example drop-ins: %v", err)
	}
	for _, p := range examples {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files["portwatch.d/"+filepath.Base(p)] = string(data)
	}
	filetest.Write(t, dir, files)
	c, err := testLoader(nil).load(filepath.Join(dir, "portwatch.yaml"))
	if err != nil {
		t.Fatalf("load with the example drop-ins: %v", err)
	}
	var rules, formats []string
	for _, r := range c.Rules {
		rules = append(rules, r.Name)
	}
	for _, w := range c.Notify.Webhooks {
		formats = append(formats, w.Format)
	}
	wantRules := []string{"loopback", "ssh", "local-dns", "web", "app-containers", "vpn-namespace", "debug-server"}
	if diff := cmp.Diff(wantRules, rules); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}
	slices.Sort(formats)
	if diff := cmp.Diff(slices.Sorted(slices.Values(webhookFormats)), formats); diff != "" {
		t.Errorf("example webhook formats mismatch (-want +got):\n%s", diff)
	}

	// The commented-out rules under "More examples" in the shipped file.
	var block []string
	in := false
	for _, line := range strings.Split(string(main), "\n") {
		switch {
		case strings.HasPrefix(line, "  # More examples"):
			in = true
		case in && !strings.HasPrefix(line, "  #"):
			in = false
		case in:
			block = append(block, strings.TrimPrefix(strings.TrimPrefix(line, "  #"), " "))
		}
	}
	if len(block) < 10 {
		t.Fatalf("found %d lines of commented-out example rules, want the block under \"More examples\"", len(block))
	}
	ex, err := testLoader(nil).parse("examples", []byte("allow:\n"+strings.Join(block, "\n")))
	if err != nil {
		t.Fatalf("commented-out examples in configs/portwatch.yaml:\n%v", err)
	}
	if len(ex.Rules) != 5 {
		t.Errorf("parsed %d commented-out example rules, want 5", len(ex.Rules))
	}
}

// wantDefaults are the settings of a config that sets none, with the
// state directory that the environment or the file gave.
func wantDefaults(stateDir string) Settings {
	return Settings{
		Interval:                 time.Second,
		IgnoreEphemeralUDP:       true,
		FlapWindow:               30 * time.Second,
		ShutdownGrace:            5 * time.Second,
		StateDir:                 stateDir,
		EBPF:                     EBPFAuto,
		ReconcileInterval:        10 * time.Second,
		TransientAlertsPerMinute: 20,
		Exposure:                 ExposureAuto,
	}
}

// checkSettings compares the settings and the notify section of c with
// the wanted ones.
func checkSettings(t *testing.T, c *Config, want Settings, wantNotify Notify) {
	t.Helper()
	if diff := cmp.Diff(want, c.Settings); diff != "" {
		t.Errorf("settings mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantNotify, c.Notify); diff != "" {
		t.Errorf("notify mismatch (-want +got):\n%s", diff)
	}
}

// TestEBPFSettings: the ebpf mode, and reconcile_interval with its default
// tied to interval (a valid one, whatever the order of the keys).
func TestEBPFSettings(t *testing.T) {
	tests := []struct {
		name      string
		data      string
		mode      EBPFMode
		reconcile time.Duration
	}{
		{name: "defaults", data: "version: 1\n", mode: EBPFAuto, reconcile: 10 * time.Second},
		{name: "on", data: "ebpf: on\n", mode: EBPFOn, reconcile: 10 * time.Second},
		{name: "off", data: "ebpf: off\n", mode: EBPFOff, reconcile: 10 * time.Second},
		{name: "auto", data: "ebpf: auto\n", mode: EBPFAuto, reconcile: 10 * time.Second},
		{name: "long interval raises the default", data: "interval: 30s\n", mode: EBPFAuto, reconcile: 30 * time.Second},
		{name: "equal to interval", data: "reconcile_interval: 2s\ninterval: 2s\n", mode: EBPFAuto, reconcile: 2 * time.Second},
		{name: "short", data: "interval: 200ms\nreconcile_interval: 1s\n", mode: EBPFAuto, reconcile: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := testLoader(nil).parse("x.yaml", []byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			type got struct {
				Mode      EBPFMode
				Reconcile time.Duration
			}
			if diff := cmp.Diff(got{tt.mode, tt.reconcile}, got{c.EBPF, c.ReconcileInterval}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		data       string
		want       Settings
		wantNotify Notify
	}{
		{
			name:       "defaults, first STATE_DIRECTORY",
			env:        map[string]string{"STATE_DIRECTORY": "/var/lib/portwatch-test:/var/lib/other"},
			data:       "version: 1\n",
			want:       wantDefaults("/var/lib/portwatch-test"),
			wantNotify: Notify{Journald: true, SpoolSize: 10000},
		},
		{
			name: "every key set",
			data: `
interval: 250ms
ignore_ephemeral_udp: false
log_allowed: true
repeat_interval: 1h
flap_window: 0
shutdown_grace: 2s
state_dir: /srv/portwatch/
ebpf: off
reconcile_interval: 30s
transient_alerts_per_minute: 500
exposure: off
notify:
  journald: false
  spool_size: 50
`,
			want: Settings{
				Interval:                 250 * time.Millisecond,
				LogAllowed:               true,
				RepeatInterval:           time.Hour,
				ShutdownGrace:            2 * time.Second,
				StateDir:                 "/srv/portwatch",
				EBPF:                     EBPFOff,
				ReconcileInterval:        30 * time.Second,
				TransientAlertsPerMinute: 500,
				Exposure:                 ExposureOff,
			},
			wantNotify: Notify{Journald: false, SpoolSize: 50},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := testLoader(tt.env).parse("x.yaml", []byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			checkSettings(t, c, tt.want, tt.wantNotify)
		})
	}
}

func TestDropins(t *testing.T) {
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml":              "version: 1\nallow:\n  - name: main\n    port: 1\n",
		"portwatch.d/20-b.yaml":       "allow:\n  - name: b\n    port: 3\n",
		"portwatch.d/10-a.yaml":       "version: 1\nallow:\n  - name: a\n    port: 2\nnotify:\n  webhooks:\n    - name: hook-a\n      format: generic\n      url: http://127.0.0.1:9/a\n",
		"portwatch.d/.30-hidden.yaml": "this is: [not even valid\n",
		"portwatch.d/40-c.yaml~":      "this is: [not even valid\n",
		"extra/z.yaml":                "allow:\n  - name: z\n    port: 4\n",
	})
	main := filepath.Join(dir, "portwatch.yaml")
	c := mustLoad(t, nil, main)
	names := func(c *Config) []string {
		var out []string
		for _, r := range c.Rules {
			out = append(out, r.Name)
		}
		return out
	}
	if diff := cmp.Diff([]string{"main", "a", "b"}, names(c)); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}
	wantFiles := []string{main, filepath.Join(dir, "portwatch.d/10-a.yaml"), filepath.Join(dir, "portwatch.d/20-b.yaml")}
	if diff := cmp.Diff(wantFiles, c.Files); diff != "" {
		t.Errorf("files mismatch (-want +got):\n%s", diff)
	}
	if len(c.Notify.Webhooks) != 1 || c.Notify.Webhooks[0].Name != "hook-a" {
		t.Errorf("webhooks = %+v, want hook-a from the drop-in", c.Notify.Webhooks)
	}
	if got, want := c.Rules[1].File, filepath.Join(dir, "portwatch.d/10-a.yaml")+":3"; got != want {
		t.Errorf("rule a File = %q, want %q", got, want)
	}

	// Explicit include: patterns replace the default, and all matches are
	// merged in lexical order of their paths.
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml": "version: 1\ninclude: [portwatch.d/*.yaml, extra/*.yaml, " + filepath.Join(dir, "portwatch.d/1*.yaml") + "]\nallow:\n  - name: main\n    port: 1\n",
	})
	c2 := mustLoad(t, nil, main)
	if diff := cmp.Diff([]string{"main", "z", "a", "b"}, names(c2)); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}
	wantIncludes := []string{filepath.Join(dir, "portwatch.d/*.yaml"), filepath.Join(dir, "extra/*.yaml"), filepath.Join(dir, "portwatch.d/1*.yaml")}
	if diff := cmp.Diff(wantIncludes, c2.Includes); diff != "" {
		t.Errorf("includes mismatch (-want +got):\n%s", diff)
	}
	if c2.Hash == c.Hash {
		t.Error("hash unchanged after the main file changed")
	}

	// include: [] turns drop-ins off.
	filetest.Write(t, dir, map[string]string{"portwatch.yaml": "include: []\n"})
	c3 := mustLoad(t, nil, main)
	if len(c3.Rules) != 0 || len(c3.Files) != 1 {
		t.Errorf("include: [] loaded %d rules from %v, want none from the main file alone", len(c3.Rules), c3.Files)
	}
}

func TestHashCoversSecrets(t *testing.T) {
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml": "include: []\nnotify:\n  webhooks:\n    - name: g\n      format: generic\n      url_file: ${CREDENTIALS_DIRECTORY}/g.url\n      secret_file: g.secret\n",
		"creds/g.url":    "https://example.com/hook/TOKEN1\n",
		"g.secret":       "whsec_c2VjcmV0\n",
	})
	env := map[string]string{"CREDENTIALS_DIRECTORY": filepath.Join(dir, "creds")}
	main := filepath.Join(dir, "portwatch.yaml")
	c1 := mustLoad(t, env, main)
	w := c1.Notify.Webhooks[0]
	if w.URL != "https://example.com/hook/TOKEN1" || string(w.Secret) != "whsec_c2VjcmV0" {
		t.Errorf("webhook = URL %q secret %q, want them read from the files, trimmed", w.URL, w.Secret)
	}
	if diff := cmp.Diff([]string{"opened", "changed", "closed", "test"}, w.Events); diff != "" {
		t.Errorf("default events mismatch (-want +got):\n%s", diff)
	}
	c2 := mustLoad(t, env, main)
	if c1.Hash != c2.Hash {
		t.Error("hash differs between two loads of the same files")
	}
	filetest.Write(t, dir, map[string]string{"creds/g.url": "https://example.com/hook/TOKEN2\n"})
	c3 := mustLoad(t, env, main)
	if c3.Hash == c1.Hash {
		t.Error("hash unchanged after url_file changed")
	}
	filetest.Write(t, dir, map[string]string{"g.secret": "whsec_b3RoZXI=\n"})
	c4 := mustLoad(t, env, main)
	if c4.Hash == c3.Hash {
		t.Error("hash unchanged after secret_file changed")
	}
}

func TestWebhookURLs(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		insecure bool
		wantErr  string
	}{
		{name: "https", url: "https://hooks.example.com/services/x"},
		{name: "http loopback v4", url: "http://127.0.0.1:9093"},
		{name: "http loopback 127/8", url: "http://127.1.2.3:9093/x"},
		{name: "http loopback v6", url: "http://[::1]:8080/"},
		{name: "http localhost", url: "http://localhost:8080/"},
		{name: "http localhost in capitals", url: "http://LOCALHOST:9093/"},
		{name: "http loopback v6 with zone", url: "http://[::1%25lo]:8080/"},
		{name: "http loopback v4 mapped", url: "http://[::ffff:127.0.0.1]:8080/"},
		{name: "http .localhost refused", url: "http://x.localhost/", wantErr: "plain http is refused for a host other than loopback; use https, or set insecure: true"},
		{name: "http insecure", url: "http://192.0.2.1/hook", insecure: true},
		{name: "http refused", url: "http://192.0.2.1/hook", wantErr: "plain http is refused for a host other than loopback; use https, or set insecure: true"},
		{name: "http localhost lookalike", url: "http://localhost.example.com/", wantErr: "plain http is refused for a host other than loopback; use https, or set insecure: true"},
		{name: "no scheme", url: "hooks.example.com/x", wantErr: "the scheme must be http or https"},
		{name: "no host", url: "https:///x", wantErr: "the URL has no host"},
		{name: "unparsable", url: "https://[bad/x", wantErr: "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkURL(tt.url, tt.insecure)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("checkURL(%q) mismatch (-want +got):\n%s", tt.url, diff)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		name, key, want string
	}{
		{name: "prefix", key: "prot", want: "protocol"},
		{name: "typo", key: "adress", want: "address"},
		{name: "transposition", key: "exipres", want: "expires"},
		{name: "ambiguous prefix falls back to distance", key: "e", want: ""},
		{name: "far", key: "frobnicate", want: ""},
		{name: "plural", key: "ports", want: "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, suggest(tt.key, ruleKeys)); diff != "" {
				t.Errorf("suggest(%q) mismatch (-want +got):\n%s", tt.key, diff)
			}
		})
	}
}

func TestParseServices(t *testing.T) {
	data := []byte("# comment\nssh 22/tcp\nhttp 80/tcp www www-http # web\nhttp 80/udp\nbad x/tcp\nzero 0/tcp\nnoproto 12\nssh 2222/tcp\n")
	want := Services{
		"ssh":      {"tcp": 22},
		"http":     {"tcp": 80, "udp": 80},
		"www":      {"tcp": 80},
		"www-http": {"tcp": 80},
	}
	if diff := cmp.Diff(want, ParseServices(data)); diff != "" {
		t.Errorf("ParseServices mismatch (-want +got):\n%s", diff)
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if c.Source != "embedded default" || len(c.Rules) != 1 || c.Files != nil {
		t.Errorf("Default() = source %q, %d rules, files %v", c.Source, len(c.Rules), c.Files)
	}
}

func TestParseReadsNoDropins(t *testing.T) {
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{"portwatch.d/a.yaml": "allow: [{name: a}]\n"})
	c, err := Parse(filepath.Join(dir, "portwatch.yaml"), []byte("version: 1\nallow: [{name: main}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rules) != 1 || len(c.Files) != 1 {
		t.Errorf("Parse read %d rules from %v, want the main file's only", len(c.Rules), c.Files)
	}
}

// TestHostileDropinName checks that a drop-in whose name holds a newline
// cannot forge a line in the error output.
func TestHostileDropinName(t *testing.T) {
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml": "version: 1\n",
		"portwatch.d/x\nfake.yaml:1:1: all good\n.yaml": "allow: [{name: a, port: 0}]\n",
	})
	_, err := testLoader(nil).load(filepath.Join(dir, "portwatch.yaml"))
	if err == nil {
		t.Fatal("Load succeeded, want the port error")
	}
	want := filepath.Join(dir, "portwatch.d/x") + `\nfake.yaml:1:1: all good\n.yaml:1:25: port: 0 is outside 1..65535`
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("error mismatch (-want +got):\n%s", diff)
	}
}

// TestExeGlobNeverMatches checks the warning for exe globs that no absolute
// path can match, and that the warning is right: path.Match agrees.
func TestExeGlobNeverMatches(t *testing.T) {
	tests := []struct {
		name  string
		glob  string
		probe string // an absolute path the glob should match when it can match at all
		never bool
	}{
		{name: "stars around a name", glob: "*python*", probe: "/usr/bin/python3", never: true},
		{name: "star alone", glob: "*", probe: "/usr/bin/python3", never: true},
		{name: "star and a name", glob: "*sshd", probe: "/usr/sbin/sshd", never: true},
		{name: "star then question mark", glob: "*?usr/bin/x", probe: "/usr/bin/x", never: true},
		{name: "star then a path", glob: "*/usr/bin/x", probe: "/usr/bin/x"},
		{name: "stars then a path", glob: "**/usr/bin/x", probe: "/usr/bin/x"},
		{name: "star then a class", glob: "*[/]usr/bin/x", probe: "/usr/bin/x"},
		{name: "absolute glob", glob: "/usr/bin/python3*", probe: "/usr/bin/python3.11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exeNeverMatches(tt.glob); got != tt.never {
				t.Errorf("exeNeverMatches(%q) = %t, want %t", tt.glob, got, tt.never)
			}
			if ok, _ := path.Match(tt.glob, tt.probe); ok == tt.never {
				t.Errorf("path.Match(%q, %q) = %t: the warning would be wrong", tt.glob, tt.probe, ok)
			}
		})
	}

	yml := "version: 1\nallow:\n  - name: py\n    exe: \"*python*\"\n  - name: ok\n    exe: /usr/bin/python3*\n"
	c, err := testLoader(nil).parse("x.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`x.yaml:4:10: exe: glob "*python*" never matches: executable paths start with "/" and * does not match "/" (write the directory: /usr/bin/python3*)`}
	if diff := cmp.Diff(want, c.Warnings); diff != "" {
		t.Errorf("warnings mismatch (-want +got):\n%s", diff)
	}
}

// TestErrorCap checks that a file with thousands of errors reports the
// first MaxErrors and counts the rest.
func TestErrorCap(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nallow:\n")
	for range 40000 {
		b.WriteString("  - {name: dup, port: 1}\n")
	}
	_, err := testLoader(nil).parse("x.yaml", []byte(b.String()))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("parse: %v, want an ErrorList", err)
	}
	if len(list) != MaxErrors+1 {
		t.Fatalf("%d entries, want %d", len(list), MaxErrors+1)
	}
	if got, want := list.Total(), 39999; got != want {
		t.Errorf("Total() = %d, want %d", got, want)
	}
	if got, want := list[0].Error(), `x.yaml:4:12: duplicate rule name "dup" (first defined at x.yaml:3)`; got != want {
		t.Errorf("first error = %q, want %q", got, want)
	}
	if got, want := list[MaxErrors].Error(), "x.yaml: ... and 39899 more errors (fix these first)"; got != want {
		t.Errorf("last entry = %q, want %q", got, want)
	}
}
