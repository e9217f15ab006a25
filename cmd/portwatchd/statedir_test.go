package main

import (
	"strings"
	"testing"
)

func TestLockStateDir(t *testing.T) {
	dir := t.TempDir()
	if _, err := lockStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := lockStateDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another portwatchd") {
		t.Errorf("second lock: err = %v, want in use", err)
	}
}
