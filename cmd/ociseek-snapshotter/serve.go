package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/ociseek/ociseek/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
)

// stopTimeout bounds the graceful stop: RPCs still running after it are
// cut, so that a stuck Prepare cannot keep the daemon from exiting.
const stopTimeout = 10 * time.Second

// serve runs the daemon until SIGTERM or SIGINT (or ctx ends). SIGINT
// unmounts every lazy layer and stops the lazy file system; SIGTERM (and
// the end of ctx) leaves the mounts for the next start to take over.
// Under systemd (Type=notify) it reports READY=1 once containerd's socket
// serves, and STOPPING=1 when it begins to stop.
func serve(ctx context.Context, cfg *config.Config) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	svc, err := newService(ctx, cfg, reg)
	if err != nil {
		return err
	}
	lis, ownSocket, err := listen(cfg.Daemon.Address)
	if err != nil {
		return errors.Join(err, svc.shutdown(ctx, false))
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(svc.sn))

	// Each server goroutine reports on errc (buffered: nobody may block on
	// a send after serve has returned).
	errc := make(chan error, 3)
	if err := svc.cri.serve(ctx, srv, errc); err != nil {
		lis.Close()
		return errors.Join(err, svc.shutdown(ctx, false))
	}
	go func() { errc <- srv.Serve(lis) }()
	metricsSrv, err := serveMetrics(cfg.Metrics, reg, errc)
	if err != nil {
		srv.Stop()
		return errors.Join(err, svc.shutdown(ctx, false))
	}
	log.G(ctx).WithField("address", cfg.Daemon.Address).WithField("root", cfg.Daemon.Root).Info("ociseek-snapshotter serving")
	if err := notifySystemd("READY=1"); err != nil {
		log.G(ctx).WithError(err).Warn("cannot tell systemd the daemon is ready")
	}

	var sig os.Signal
	select {
	case sig = <-sigs:
		log.G(ctx).WithField("signal", sig.String()).Info("stopping")
	case err = <-errc:
		log.G(ctx).WithError(err).Error("server failed; stopping")
	case <-ctx.Done():
	}
	if nerr := notifySystemd("STOPPING=1"); nerr != nil {
		log.G(ctx).WithError(nerr).Warn("cannot tell systemd the daemon is stopping")
	}
	stopGRPC(srv)
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	if ownSocket {
		// A socket systemd handed over is systemd's: it stays, so that
		// containerd's next call starts the daemon again.
		os.Remove(cfg.Daemon.Address)
	}
	return errors.Join(err, svc.shutdown(ctx, sig == syscall.SIGINT))
}

// stopGRPC lets running RPCs finish, up to stopTimeout.
func stopGRPC(srv *grpc.Server) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}

// listen returns the socket containerd connects to, and whether the daemon
// created it (and so removes it when it stops). Under systemd socket
// activation (LISTEN_PID is us) it takes fd 3; otherwise it creates the
// socket with mode 0660 in a directory only root can list. The socket is
// bound under a temporary name and renamed once its mode is set, so that
// it is never reachable with a laxer mode.
func listen(address string) (_ net.Listener, created bool, err error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) && os.Getenv("LISTEN_FDS") != "" {
		f := os.NewFile(3, "systemd-socket")
		defer f.Close()
		lis, err := net.FileListener(f)
		if err != nil {
			return nil, false, fmt.Errorf("socket from systemd: %w", err)
		}
		return lis, false, nil
	}
	lis, err := listenUnix(address)
	return lis, err == nil, err
}

// listenUnix creates the unix socket at address, mode 0660.
func listenUnix(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	tmp := address + ".new"
	os.Remove(tmp)
	lis, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", address, err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		lis.Close()
		return nil, fmt.Errorf("set socket mode: %w", err)
	}
	if err := os.Rename(tmp, address); err != nil {
		lis.Close()
		return nil, fmt.Errorf("move socket into place: %w", err)
	}
	return lis, nil
}

// serveMetrics serves GET /metrics when an address is configured, and the
// pprof handlers when asked to.
func serveMetrics(cfg config.Metrics, reg *prometheus.Registry, errc chan<- error) (*http.Server, error) {
	if cfg.Address == "" {
		return nil, nil
	}
	if cfg.Network == "unix" {
		os.Remove(cfg.Address)
	}
	lis, err := net.Listen(cfg.Network, cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics server: %w", err)
		}
	}()
	return srv, nil
}
