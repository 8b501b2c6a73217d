package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync"
	"time"
)

// selfSigned makes a serving certificate in memory; it is never written
// anywhere. Scrapers of it skip verification (docs/metrics.md).
func selfSigned(hosts []string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server: self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server: self-signed serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "node-doctor"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server: self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// fileCert serves a mounted certificate and reloads it when either file
// changes (a Secret update swaps them), checked at most every few seconds.
type fileCert struct {
	certFile, keyFile string
	now               func() time.Time
	onErr             func(error)

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

func loadFileCert(certFile, keyFile string, onErr func(error)) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile, now: time.Now, onErr: onErr}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileCert) stampOf() string {
	var s string
	for _, p := range []string{f.certFile, f.keyFile} {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return s
}

func (f *fileCert) reload() error {
	stamp := f.stampOf()
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("server: metrics TLS certificate: %w", err)
	}
	f.cert, f.stamp = &c, stamp
	return nil
}

// get returns the current certificate; a pair that fails to load (e.g.
// halfway through an update) keeps the previous one in use.
func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); now.Sub(f.checked) >= 5*time.Second {
		f.checked = now
		if f.stampOf() != f.stamp {
			if err := f.reload(); err != nil {
				f.onErr(err)
			}
		}
	}
	return f.cert, nil
}
