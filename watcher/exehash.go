package watcher

import (
	"crypto/md5"
	"errors"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// exeStamp identifies the content of an executable without reading it:
// a file rewritten in place keeps its (device, inode) but not its size
// and mtime together, barring a deliberate touch -r (see exe_modified: a
// hint, not a proof).
type exeStamp struct {
	id    fileID
	size  int64
	mtime unix.Timespec
}

// statStamp stats path (following symlinks: /proc/PID/exe gives the file
// the process runs, even deleted).
func statStamp(path string) (exeStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(unix.AT_FDCWD, path, &st, unix.AT_NO_AUTOMOUNT); err != nil {
		return exeStamp{}, err
	}
	return exeStamp{id: fileID{st.Dev, st.Ino}, size: st.Size, mtime: st.Mtim}, nil
}

// maxHashSize is the largest executable hashed (md5 reads about 600 MB/s):
// past it exe_modified is left unknown rather than spend seconds of a tick.
const maxHashSize = 512 << 20

// errTooLarge says an executable was not hashed, for its size.
var errTooLarge = errors.New("executable too large to hash")

// md5Cache holds the md5 of executables, by exeStamp. Only listener
// holders' executables are hashed, once each: a host has a few dozen.
type md5Cache struct {
	mu   sync.Mutex
	sums map[exeStamp][16]byte
}

// maxMD5Cache bounds the cache: past it, it starts again empty.
const maxMD5Cache = 4096

// sum returns the md5 of the file at path (a /proc/PID/exe link), whose
// stamp st was read before: the file is opened through the same link, and
// its stamp read again from the open descriptor, so that a sum is never
// filed under the stamp of another file.
func (c *md5Cache) sum(path string, st exeStamp) ([16]byte, error) {
	c.mu.Lock()
	s, ok := c.sums[st]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	if st.size > maxHashSize {
		return s, errTooLarge
	}
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return s, err
	}
	if got := (exeStamp{id: fileID{fst.Dev, fst.Ino}, size: fst.Size, mtime: fst.Mtim}); got != st {
		return s, errors.New("executable changed while read")
	}
	h := md5.New()
	if _, err := io.Copy(h, io.LimitReader(f, maxHashSize)); err != nil {
		return s, err
	}
	h.Sum(s[:0])
	c.mu.Lock()
	if c.sums == nil || len(c.sums) >= maxMD5Cache {
		c.sums = make(map[exeStamp][16]byte)
	}
	c.sums[st] = s
	c.mu.Unlock()
	return s, nil
}
