package lease

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Table is the lease bucket as one watch shows it: the live worker leases and the
// key entries. It costs one message per write to the bucket (a worker's renewal, a
// claim, a release), whatever the number of keys, and may lag the server: use it
// to choose what to try, never to decide that a key is free (ClaimKey reads the
// server for that).
type Table struct {
	mu      sync.Mutex
	workers map[string]Record // by worker id
	keys    map[string]Record // by key name
	revs    map[string]uint64 // by key name: the revision of its last write, deletes included
	// workerNames maps a worker entry to the holder its record names.
	workerNames map[string]string
	ready       bool
	changed     chan struct{} // holds one signal at most
}

// NewTable returns an empty Table; Run fills it.
func NewTable() *Table {
	return &Table{workers: map[string]Record{}, keys: map[string]Record{}, revs: map[string]uint64{}, workerNames: map[string]string{}, changed: make(chan struct{}, 1)}
}

// Run watches the bucket until ctx ends or the watch fails.
func (t *Table) Run(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch leases: the watch ended")
			}
			t.apply(e)
		}
	}
}

func (t *Table) apply(e jetstream.KeyValueEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e == nil { // the initial values are in
		t.ready = true
		t.signal()
		return
	}
	name, worker, ok := ParseEntry(e.Key())
	if !ok {
		return
	}
	m := t.keys
	if worker {
		m = t.workers
	} else {
		t.revs[name] = e.Revision()
	}
	var r Record
	if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil {
		if n, ok := t.workerNames[e.Key()]; worker && ok {
			name = n
			delete(t.workerNames, e.Key())
		}
		delete(m, name)
		t.signal()
		return
	}
	if worker && r.Holder != "" {
		// Key entries name a worker by the holder its lease record gives.
		t.workerNames[e.Key()] = r.Holder
		name = r.Holder
	}
	if old, ok := m[name]; worker && ok && old.Session == r.Session {
		m[name] = r
		return // a renewal: nothing a claimer acts on changed
	}
	m[name] = r
	t.signal()
}

func (t *Table) signal() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// Changed signals after the table changed in a way a claimer acts on (a worker
// lease or a key entry came or went; not a renewal); it holds one signal at most.
func (t *Table) Changed() <-chan struct{} { return t.changed }

// Ready reports whether the watch has delivered the bucket's initial values.
func (t *Table) Ready() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ready
}

// View is a copy of the table at one instant.
type View struct {
	Workers map[string]Record // live worker leases by id
	Keys    map[string]Record // key entries by name
}

// View returns a copy of the table.
func (t *Table) View() View {
	t.mu.Lock()
	defer t.mu.Unlock()
	return View{Workers: maps.Clone(t.workers), Keys: maps.Clone(t.keys)}
}

// TakenFrom reports whether the table has seen key name's entry written after
// revision rev (the hold's own write) by anyone but the given session: deleted, or
// naming another holder.
func (t *Table) TakenFrom(name string, rev uint64, session string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.revs[name] <= rev {
		return false // the table has not caught up with the hold's own write
	}
	r, ok := t.keys[name]
	return !ok || r.Session != session
}

// Held reports whether key name's entry names a worker whose lease the view shows
// alive with the same session.
func (v View) Held(name string) (Record, bool) {
	r, ok := v.Keys[name]
	if !ok {
		return Record{}, false
	}
	w, ok := v.Workers[r.Holder]
	return r, ok && w.Session == r.Session
}
