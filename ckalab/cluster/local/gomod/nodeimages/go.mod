// Two tiny static programs for the images ckalab builds itself (no registry is reachable):
// pause, the sandbox process of every pod, and clockprobe, which tells whether a container
// may set the clock without ever setting it.
module ckalab.local/nodeimages

go 1.26.0
