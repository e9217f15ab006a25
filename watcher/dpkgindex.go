package watcher

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"io"
	"slices"
	"strings"
)

// dpkgIndex says which installed Debian package owns a path: every path of
// every /var/lib/dpkg/info/*.list, with diversions applied. It keeps a
// 64-bit hash of each path, not the path (113k paths on a typical host: 2
// MiB instead of about 10), sorted for a binary search.
//
// The hash is maphash with a seed drawn per index, not a fixed function
// such as FNV: a fixed function lets whoever names a file pick a path that
// collides with a packaged one, and so hide an unpackaged executable.
// With a random seed a false "packaged" is a 1 in 2^64/113k chance per
// lookup.
type dpkgIndex struct {
	seed maphash.Seed
	ents []indexEntry // sorted by hash; a path owned by several packages has several
	pkgs []string     // the .list base names: "bash", "libc6:amd64"
	// divertedFrom maps the path a diverted file was moved to back to the
	// path its package's md5sums names it by.
	divertedFrom map[string]string
}

type indexEntry struct {
	hash uint64
	pkg  uint32 // index in pkgs
}

// diversion is one entry of /var/lib/dpkg/diversions: dpkg installs the
// file that packages other than by name as from at to instead; by ":"
// (a local diversion) means every package.
type diversion struct {
	from, to, by string
}

// parseDiversions parses /var/lib/dpkg/diversions: three lines per entry
// (the diverted path, where it goes, the diverting package). A truncated
// last entry is an error: the file is rewritten whole by dpkg-divert, so
// a short one was read mid-write, and the old index is better.
func parseDiversions(data []byte) ([]diversion, error) {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil, nil
	}
	if len(lines)%3 != 0 {
		return nil, errDiversions
	}
	out := make([]diversion, 0, len(lines)/3)
	for i := 0; i < len(lines); i += 3 {
		d := diversion{from: lines[i], to: lines[i+1], by: lines[i+2]}
		if !strings.HasPrefix(d.from, "/") || !strings.HasPrefix(d.to, "/") || d.by == "" {
			return nil, errDiversions
		}
		out = append(out, d)
	}
	return out, nil
}

// indexBuilder builds a dpkgIndex one .list file at a time.
type indexBuilder struct {
	idx      *dpkgIndex
	diverted map[string]diversion // by from
}

func newIndexBuilder(divs []diversion, sizeHint int) *indexBuilder {
	b := &indexBuilder{
		idx:      &dpkgIndex{seed: maphash.MakeSeed(), ents: make([]indexEntry, 0, sizeHint)},
		diverted: make(map[string]diversion, len(divs)),
	}
	for _, d := range divs {
		b.diverted[d.from] = d
		if b.idx.divertedFrom == nil {
			b.idx.divertedFrom = make(map[string]string)
		}
		b.idx.divertedFrom[d.to] = d.from
	}
	return b
}

// addList adds the paths of one package's .list file (one absolute path a
// line), read from r. pkg is the file's base name without ".list". A path
// diverted away from this package is recorded where dpkg put it.
func (b *indexBuilder) addList(pkg string, r *bufio.Reader) error {
	id := uint32(len(b.idx.pkgs))
	b.idx.pkgs = append(b.idx.pkgs, pkg)
	name, _, _ := strings.Cut(pkg, ":")
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			return errLongLine
		case err != nil && err != io.EOF:
			return err
		}
		line = bytes.TrimSuffix(line, []byte{'\n'})
		if len(line) > 0 && line[0] == '/' {
			b.add(line, name, id)
		}
		if err == io.EOF {
			return nil
		}
	}
}

// errLongLine says a .list file has a line longer than any path.
var errLongLine = errors.New("line too long")

func (b *indexBuilder) add(path []byte, pkgName string, id uint32) {
	if len(b.diverted) > 0 {
		if d, ok := b.diverted[string(path)]; ok && d.by != pkgName {
			b.idx.ents = append(b.idx.ents, indexEntry{b.idx.hash(d.to), id})
			return
		}
	}
	b.idx.ents = append(b.idx.ents, indexEntry{maphash.Bytes(b.idx.seed, path), id})
}

// done sorts the index and returns it.
func (b *indexBuilder) done() *dpkgIndex {
	slices.SortFunc(b.idx.ents, func(x, y indexEntry) int { return cmp.Compare(x.hash, y.hash) })
	b.idx.ents = slices.Clip(b.idx.ents)
	return b.idx
}

func (x *dpkgIndex) hash(path string) uint64 { return maphash.String(x.seed, path) }

// owners appends the packages that own path, in either spelling of merged
// /usr (see usrAlias), and reports whether there was one.
func (x *dpkgIndex) owners(path string, out []string) []string {
	out = x.ownersOf(path, out)
	if alt, ok := usrAlias(path); ok {
		out = x.ownersOf(alt, out)
	}
	return out
}

func (x *dpkgIndex) ownersOf(path string, out []string) []string {
	h := x.hash(path)
	i, _ := slices.BinarySearchFunc(x.ents, h, func(e indexEntry, h uint64) int { return cmp.Compare(e.hash, h) })
	for ; i < len(x.ents) && x.ents[i].hash == h; i++ {
		if p := x.pkgs[x.ents[i].pkg]; !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// owned reports whether a package owns path.
func (x *dpkgIndex) owned(path string) bool {
	var buf [4]string
	return len(x.owners(path, buf[:0])) > 0
}

// md5Names returns the names under which a package's md5sums may list the
// file at path: md5sums has paths relative to / ("usr/bin/x"), in the
// spelling of the package (merged /usr), and by the path before a
// diversion.
func (x *dpkgIndex) md5Names(path string) []string {
	var names []string
	add := func(p string) {
		names = append(names, strings.TrimPrefix(p, "/"))
		if alt, ok := usrAlias(p); ok {
			names = append(names, strings.TrimPrefix(alt, "/"))
		}
	}
	add(path)
	if from, ok := x.divertedFrom[path]; ok {
		add(from)
	}
	return names
}

// usrDirs are the directories that merged /usr turned into symlinks to
// their /usr counterparts (Debian 12 on amd64 and the other architectures).
var usrDirs = []string{"/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/libo32/"}

// usrAlias returns the other spelling of path under merged /usr:
// /usr/bin/x for /bin/x and the reverse. /proc/PID/exe gives the /usr one,
// while a package may list only the other (683 paths on the host this was
// written on).
func usrAlias(path string) (string, bool) {
	for _, d := range usrDirs {
		if rest, ok := strings.CutPrefix(path, "/usr"+d); ok {
			return d + rest, true
		}
		if rest, ok := strings.CutPrefix(path, d); ok {
			return "/usr" + d + rest, true
		}
	}
	return "", false
}

// md5Lookup returns the md5 that a package's md5sums file ("<hex>  <path>"
// lines, path relative to /) gives for the first of names it lists.
func md5Lookup(md5sums []byte, names []string) ([16]byte, bool) {
	var sum [16]byte
	for len(md5sums) > 0 {
		line := md5sums
		if i := bytes.IndexByte(md5sums, '\n'); i >= 0 {
			line, md5sums = md5sums[:i], md5sums[i+1:]
		} else {
			md5sums = nil
		}
		hexSum, name, ok := bytes.Cut(line, []byte("  "))
		if !ok || len(hexSum) != 32 {
			continue
		}
		for _, n := range names {
			if string(name) == n {
				if _, err := hex.Decode(sum[:], hexSum); err != nil {
					return sum, false
				}
				return sum, true
			}
		}
	}
	return sum, false
}
