"""The client fleet: each Deployment's pods as real Redis connections from their own pod IPs, plus the
controllers a cluster would run for them (ReplicaSets, pods, HPA, KEDA), driven through the API emulator."""
