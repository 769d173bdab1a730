// pause: the sandbox process of every Pod on the local node (agentid.devcluster.node). It holds the Pod's
// namespaces, reaps orphaned children (it is PID 1 of a shared PID namespace) and exits on SIGTERM or SIGINT.
// Built by hack/build-control-plane.sh --with-node into a one-file image, because no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
