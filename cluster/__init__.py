"""localkube: a real single-node Kubernetes with KEDA on this machine, from upstream sources.

``make cluster`` (``python -m cluster up``) runs etcd, the control plane, containerd, the
kubelet, kube-proxy, CoreDNS and a volume provisioner as host processes, the way
Kubernetes' own ``hack/local-up-cluster.sh`` does, with binaries that ``cluster/build.sh``
builds from the Go module proxy; KEDA runs inside the cluster from images built here.
Nothing is pulled from a registry. ``make cluster-down`` removes everything it made.
See cluster/README.md.
"""
