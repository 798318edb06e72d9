// Command kube-router is kube-router's network policy controller, run the way upstream's
// `kube-router --run-firewall --run-router=false --run-service-proxy=false` runs it, with one
// change: the pod, namespace and NetworkPolicy changes after which upstream asks for a full iptables
// sync ask for one sync per burst, --event-batch-period after its first change.
//
// Why: upstream syncs once per relevant event, and each sync runs about twenty iptables and ipset
// commands. Starting a process costs 3-5 ms of CPU on our machines (docs/real-nodes.md), and both
// real nodes sync on every pod change in the cluster, so a lab's reset and solve (a few pods
// deleted and created) cost seconds of CPU: about a quarter of the CPU of a scripted pod churn
// (docs/real-nodes.md). Enforcement itself (the syncs) is upstream's code.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudnativelabs/kube-router/v2/pkg/cmd"
	"github.com/cloudnativelabs/kube-router/v2/pkg/controllers/netpol"
	"github.com/cloudnativelabs/kube-router/v2/pkg/healthcheck"
	"github.com/cloudnativelabs/kube-router/v2/pkg/options"
	"github.com/cloudnativelabs/kube-router/v2/pkg/version"
	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "%s\n", err)
		os.Exit(1)
	}
}

func run() error {
	klog.InitFlags(nil)
	config := options.NewKubeRouterConfig()
	config.AddFlags(pflag.CommandLine)
	period := pflag.Duration("event-batch-period", time.Second,
		"how long events that ask for an iptables sync are gathered before they are handed over (0: at once, as upstream)")
	pflag.Parse()
	if err := flag.Set("logtostderr", "true"); err != nil {
		return err
	}
	if err := flag.Set("v", config.VLevel); err != nil {
		return err
	}
	if config.Version {
		version.PrintVersion(false)
		return nil
	}
	if config.HelpRequested {
		pflag.Usage()
		return nil
	}
	if !config.RunFirewall || config.RunRouter || config.RunServiceProxy || config.RunLoadBalancer {
		return fmt.Errorf("this build runs the network policy controller only: give --run-firewall=true " +
			"--run-router=false --run-service-proxy=false")
	}
	kr, err := cmd.NewKubeRouterDefault(config)
	if err != nil {
		return fmt.Errorf("failed to parse kube-router config: %v", err)
	}

	stop := make(chan struct{})
	factory := informers.NewSharedInformerFactory(kr.Client, 0)
	pods := factory.Core().V1().Pods().Informer()
	namespaces := factory.Core().V1().Namespaces().Informer()
	policies := factory.Networking().V1().NetworkPolicies().Informer()
	factory.Start(stop)
	if err := kr.CacheSyncOrTimeout(factory, stop); err != nil {
		return fmt.Errorf("failed to synchronize cache: %v", err)
	}

	var ipsetMutex sync.Mutex
	iptables, ipsets, err := netpol.NewIPTablesHandlers(config)
	if err != nil {
		return fmt.Errorf("failed to create iptables handlers: %v", err)
	}
	npc, err := netpol.NewNetworkPolicyController(kr.Client, config, pods, policies, namespaces,
		&ipsetMutex, iptables, ipsets)
	if err != nil {
		return fmt.Errorf("failed to create network policy controller: %v", err)
	}
	b := &batcher{period: *period, sync: npc.RequestFullSync, wake: make(chan struct{}, 1)}
	handlers := map[cache.SharedIndexInformer]cache.ResourceEventHandler{
		pods: b.handler(podChanged), namespaces: b.handler(namespaceChanged), policies: b.handler(always),
	}
	for informer, handler := range handlers {
		if _, err := informer.AddEventHandler(handler); err != nil {
			return fmt.Errorf("failed to add event handler: %v", err)
		}
	}
	go b.run(stop)

	// Upstream's health controller reads the heartbeats; with --health-port=0 nothing serves
	// them, so they are read and dropped here (the controller blocks on a full channel).
	heartbeats := make(chan *healthcheck.ControllerHeartbeat, 10)
	go func() {
		for range heartbeats { //nolint:revive // drained on purpose
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go npc.Run(heartbeats, stop, &wg)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	klog.Info("Shutting down the network policy controller")
	close(stop)
	wg.Wait()
	return nil
}

// batcher asks the controller for one full sync `period` after the first event of a burst that
// would have made upstream's handlers ask for one. A full sync covers every pod, namespace and
// policy, so one per burst enforces what one per event did.
type batcher struct {
	period  time.Duration
	sync    func()
	wake    chan struct{}
	pending atomic.Bool
}

func (b *batcher) changed() {
	if b.period <= 0 {
		b.sync()
		return
	}
	if b.pending.CompareAndSwap(false, true) {
		b.wake <- struct{}{}
	}
}

func (b *batcher) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-b.wake:
		}
		select {
		case <-stop:
			return
		case <-time.After(b.period):
		}
		b.pending.Store(false) // events from here on start the next burst
		b.sync()
	}
}

// handler calls changed() for the events `relevant` says a sync must follow (old is nil for an
// add, new is nil for a delete).
func (b *batcher) handler(relevant func(old, new interface{}) bool) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if relevant(nil, obj) {
				b.changed()
			}
		},
		UpdateFunc: func(oldObj, newObj interface{}) {
			if relevant(oldObj, newObj) {
				b.changed()
			}
		},
		DeleteFunc: func(obj interface{}) {
			if relevant(obj, nil) {
				b.changed()
			}
		},
	}
}

func always(_, _ interface{}) bool { return true }

// podChanged: the pod changes upstream's handlers sync for. An added pod counts once it has an
// address outside the host's network and has not finished; an update when the phase, the
// addresses, the node address or the labels change; every delete.
func podChanged(oldObj, newObj interface{}) bool {
	newPod, _ := newObj.(*v1.Pod)
	if newObj == nil || newPod == nil {
		return true
	}
	oldPod, _ := oldObj.(*v1.Pod)
	if oldObj == nil || oldPod == nil {
		finished := newPod.Status.Phase == v1.PodSucceeded || newPod.Status.Phase == v1.PodFailed
		return newPod.Status.PodIP != "" && !newPod.Spec.HostNetwork && !finished
	}
	return oldPod.Status.Phase != newPod.Status.Phase || oldPod.Status.PodIP != newPod.Status.PodIP ||
		!reflect.DeepEqual(oldPod.Status.PodIPs, newPod.Status.PodIPs) ||
		oldPod.Status.HostIP != newPod.Status.HostIP || !reflect.DeepEqual(oldPod.Labels, newPod.Labels)
}

// namespaceChanged: policies select namespaces by label, so a labelled namespace added or
// deleted, or one whose labels change.
func namespaceChanged(oldObj, newObj interface{}) bool {
	oldNs, _ := oldObj.(*v1.Namespace)
	newNs, _ := newObj.(*v1.Namespace)
	switch {
	case oldNs == nil && newNs == nil:
		return true // a deleted namespace seen late (a tombstone)
	case oldNs == nil:
		return newNs.Labels != nil
	case newNs == nil:
		return oldNs.Labels != nil
	}
	return !reflect.DeepEqual(oldNs.Labels, newNs.Labels)
}
