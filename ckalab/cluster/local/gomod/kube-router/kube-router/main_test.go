package main

import (
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func pod(phase v1.PodPhase, ip string, labels map[string]string) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: labels},
		Status: v1.PodStatus{Phase: phase, PodIP: ip}}
}

func TestPodChangedFollowsUpstreamsRelevance(t *testing.T) {
	cases := []struct {
		name     string
		old, new interface{}
		want     bool
	}{
		{"added without an address", nil, pod(v1.PodPending, "", nil), false},
		{"added with an address", nil, pod(v1.PodRunning, "10.0.0.5", nil), true},
		{"added finished", nil, pod(v1.PodSucceeded, "10.0.0.5", nil), false},
		{"gets its address", pod(v1.PodPending, "", nil), pod(v1.PodRunning, "10.0.0.5", nil), true},
		{"only conditions change", pod(v1.PodRunning, "10.0.0.5", nil), pod(v1.PodRunning, "10.0.0.5", nil), false},
		{"labels change", pod(v1.PodRunning, "10.0.0.5", nil), pod(v1.PodRunning, "10.0.0.5", map[string]string{"a": "b"}), true},
		{"deleted", pod(v1.PodRunning, "10.0.0.5", nil), nil, true},
		{"deleted, seen late", cache.DeletedFinalStateUnknown{Key: "p"}, nil, true},
	}
	for _, c := range cases {
		if got := podChanged(c.old, c.new); got != c.want {
			t.Errorf("%s: podChanged = %v, want %v", c.name, got, c.want)
		}
	}
	hostNet := pod(v1.PodRunning, "10.0.0.5", nil)
	hostNet.Spec.HostNetwork = true
	if podChanged(nil, hostNet) {
		t.Errorf("a host-network pod added asks for a sync")
	}
}

func TestNamespaceChangedOnlyForLabels(t *testing.T) {
	plain := &v1.Namespace{}
	labelled := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "a"}}}
	if namespaceChanged(nil, plain) || !namespaceChanged(nil, labelled) || namespaceChanged(labelled, labelled) ||
		!namespaceChanged(plain, labelled) || !namespaceChanged(labelled, nil) {
		t.Errorf("namespaceChanged does not follow the labels")
	}
}

func TestABurstOfChangesAsksForOneSync(t *testing.T) {
	var syncs atomic.Int32
	b := &batcher{period: 50 * time.Millisecond, sync: func() { syncs.Add(1) }, wake: make(chan struct{}, 1)}
	stop := make(chan struct{})
	defer close(stop)
	go b.run(stop)
	h := b.handler(always)
	for i := 0; i < 20; i++ {
		h.OnAdd(pod(v1.PodRunning, "10.0.0.5", nil), false)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syncs.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second sync would have come by now
	if got := syncs.Load(); got != 1 {
		t.Fatalf("20 changes in one burst: %d syncs, want 1", got)
	}
	h.OnDelete(pod(v1.PodRunning, "10.0.0.5", nil)) // a later change starts the next burst
	deadline = time.Now().Add(5 * time.Second)
	for syncs.Load() == 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := syncs.Load(); got != 2 {
		t.Fatalf("a change after the burst: %d syncs, want 2", got)
	}
}
