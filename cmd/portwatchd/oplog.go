package main

import (
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/sirupsen/logrus"
)

// newLogger returns the operational log. Under journald (stderr is the
// stream named by JOURNAL_STREAM) the journal stamps each line itself, so the
// text format leaves the time out.
func newLogger(w io.Writer, format, level string) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(w)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lvl)
	switch format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: underJournald(w), FullTimestamp: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
	}
	return log, nil
}

// underJournald reports whether w is the journal stream systemd connected
// (JOURNAL_STREAM holds its device and inode), and not just any stderr of a
// process that inherited the variable.
func underJournald(w io.Writer) bool {
	js := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if js == "" || !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
