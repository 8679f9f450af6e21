// Command coredns is CoreDNS with the plugins cluster/components.py's Corefile uses and no other:
// CoreDNS registers a plugin when its package is imported, so this file is the plugin list.
// (The upstream main imports every plugin, dozens of cloud SDKs among them, which would
// triple the build.)
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
)

func main() {
	_ = dnsserver.Directives // the server type registers itself on import, in directive order
	coremain.Run()
}
