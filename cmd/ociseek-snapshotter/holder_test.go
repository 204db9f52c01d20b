package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestHolderKeepsAcrossClients: what one daemon keeps, the next lists
// (with a working fd and its state); a drop forgets it; a holder with
// nothing to hold and nobody connected exits.
func TestHolderKeepsAcrossClients(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "h.sock")
	done := make(chan error, 1)
	go func() { done <- runHolder(context.Background(), socket) }()
	var k *holderClient
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := dialHolder(socket)
		if err == nil {
			k = &holderClient{c: c}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holder does not answer: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := k.Keep("/mnt/a", r, []byte(`{"version":1}`)); err != nil {
		t.Fatalf("Keep: %v", err)
	}
	r.Close() // the holder has its own copy now
	k.close()

	c, err := dialHolder(socket)
	if err != nil {
		t.Fatal(err)
	}
	k2 := &holderClient{c: c}
	held, err := k2.list()
	if err != nil || len(held) != 1 || held[0].Mountpoint != "/mnt/a" || string(held[0].State) != `{"version":1}` {
		t.Fatalf("list = %+v, %v; want /mnt/a with its state", held, err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if n, err := held[0].Dev.Read(b); n != 1 || b[0] != 'x' {
		t.Fatalf("the handed-back fd reads %q, %v; want the same pipe", b[:n], err)
	}
	held[0].Dev.Close()
	if err := k2.Drop("/mnt/a"); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	if held, err := k2.list(); err != nil || len(held) != 0 {
		t.Fatalf("list after Drop = %+v, %v; want nothing", held, err)
	}
	k2.close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("holder: %v", err)
		}
	case <-time.After(holderIdle + 5*time.Second):
		t.Fatal("an idle holder did not exit")
	}
}
