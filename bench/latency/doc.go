// Package latency holds the detection-latency benchmark of portwatchd run:
// from a child's listen() returning to the alert being readable in journald
// and received by a loopback webhook. Run bench/latency/run.sh as root.
package latency
