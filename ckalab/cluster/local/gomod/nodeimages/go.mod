// Tiny static programs for the images ckalab builds itself (no registry is reachable):
// pause, the sandbox process of every pod; clockprobe, which tells whether a container may set
// the clock without ever setting it; kubecall, one API request as the pod's ServiceAccount.
module ckalab.local/nodeimages

go 1.26.0
