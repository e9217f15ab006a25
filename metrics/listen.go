package metrics

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the metrics.listen endpoint: GET /metrics.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// ErrNotLoopback is the error of Listen for an address off the loopback
// interface without metrics.listen_non_loopback.
var ErrNotLoopback = errors.New("not a loopback address; set metrics.listen_non_loopback: true to listen there")

// Listen opens the endpoint on addr (IP:port) and serves m's registry on
// /metrics until Close. A non-loopback address is refused unless
// nonLoopback is set: the inventory tells an attacker which programs
// listen where. Errors from the HTTP server go to errLog.
func Listen(addr string, nonLoopback bool, m *Metrics, errLog *log.Logger) (*Server, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %q: %w", addr, err)
	}
	if !ap.Addr().Unmap().IsLoopback() && !nonLoopback {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, ErrNotLoopback)
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{
		ErrorLog: errLog, ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 10 * time.Second,
	}))
	s := &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 20 * time.Second, IdleTimeout: time.Minute, ErrorLog: errLog, MaxHeaderBytes: 16 << 10},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the endpoint, giving requests in flight up to a second.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
