"""A real Kubernetes control plane for the sandbox: etcd, kube-apiserver, kube-controller-manager and
metrics-server built from the Go module in sandbox/kube (``build``), its certificates (``pki``) and the
launcher that runs them on loopback (``controlplane``)."""
