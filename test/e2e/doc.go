// Package e2e holds node-doctor's end-to-end tests against a real
// single-node cluster (test/harness). They carry the e2e build tag, need
// root, and run with: make e2e.
package e2e
