package watcher

import (
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// userNames names uids from /etc/passwd.
type userNames struct {
	byUID map[uint32]string
	stamp passwdStamp // /etc/passwd as last read
}

// passwdStamp tells whether /etc/passwd changed since it was read: useradd
// and vipw replace the file (a new inode) or rewrite it (mtime, size).
type passwdStamp struct {
	ok       bool // the file was there
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

func statPasswd(path string) passwdStamp {
	var st unix.Stat_t
	if statPath(path, &st) != nil {
		return passwdStamp{}
	}
	return passwdStamp{ok: true, dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
}

// refreshUsers reads /etc/passwd again when it changed (a stat per tick),
// and renames the cached holders: a process started before its user was
// created is otherwise named by its uid until it execs.
func (w *Watcher) refreshUsers() {
	st := statPasswd(w.opts.PasswdFile)
	if st == w.users.stamp {
		return
	}
	w.users.stamp = st
	w.users.byUID = nil
	if b, err := os.ReadFile(w.opts.PasswdFile); err == nil {
		w.users.byUID = parsePasswd(b)
	}
	for pid, pi := range w.details.byPid {
		// A new procInfo, not a change to this one: build tells that a
		// holder's details changed by its pointer.
		n := *pi
		n.p.User = userName(w.users.byUID, pi.p.UID)
		w.details.byPid[pid] = &n
	}
	w.details.gen++
}

// ifnamesEvery is how many ticks a namespace's table of interface names is
// kept: interfaces are renamed, and indexes of deleted ones reused.
const ifnamesEvery = 60

// ifName names an interface of ns, refreshing the namespace's table when
// the index is new to it, and at least every ifnamesEvery ticks.
func (w *Watcher) ifName(ns *nsState, idx uint32) string {
	if ns.ifnames != nil && w.gen-ns.ifAt >= ifnamesEvery {
		ns.ifnames = nil
	}
	if n, ok := ns.ifnames[idx]; ok {
		return n
	}
	ns.ifAt = w.gen
	switch {
	case ns.inode == w.ns.self:
		ns.ifnames = interfaceNames()
	case ns.conn != nil:
		_ = inNetns(w.netnsPath(ns), ns.inode, func() error {
			ns.ifnames = interfaceNames()
			return nil
		})
	}
	if n, ok := ns.ifnames[idx]; ok {
		return n
	}
	if ns.ifnames == nil {
		ns.ifnames = make(map[uint32]string)
	}
	// Remember the miss so as not to look again every tick (until the
	// table is read again).
	n := "if" + strconv.FormatUint(uint64(idx), 10)
	ns.ifnames[idx] = n
	return n
}

// userName is the name of uid, or the number when it has none.
func userName(users map[uint32]string, uid uint32) string {
	if n, ok := users[uid]; ok {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// interfaceNames maps ifindex to name in the calling thread's namespace.
func interfaceNames() map[uint32]string {
	ifs, err := net.Interfaces()
	m := make(map[uint32]string, len(ifs))
	if err != nil {
		return m
	}
	for _, i := range ifs {
		m[uint32(i.Index)] = i.Name
	}
	return m
}
