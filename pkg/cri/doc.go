// Package cri inspects the node's container runtime over the CRI gRPC API,
// the way an operator would with crictl info, pods, ps -a, inspect and logs,
// and turns what it sees into findings: the runtime itself, its readiness,
// the sandbox image, and pods and containers that crash, loop, get
// OOM-killed or are stuck.
//
// The layers are separate: endpoint resolution and crictl.yaml parsing are
// pure; Client talks gRPC; Source takes one Snapshot per interval and shares
// it; each check is one file that only reads a Snapshot.
package cri
