package embedded

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway certificate authority with a server certificate for
// loopback and a client certificate, written as PEM files into one folder: enough
// for a server that requires TLS and client certificates on this machine.
type PKI struct {
	// Dir holds the files.
	Dir string
	// CA is the authority's certificate; ServerCert/ServerKey and
	// ClientCert/ClientKey are signed by it.
	CA, ServerCert, ServerKey, ClientCert, ClientKey string

	caCert *x509.Certificate
	caKey  crypto.Signer
}

// NewPKI creates a certificate authority, a server certificate for 127.0.0.1,
// ::1 and localhost, and a client certificate, each valid for a day from now, in
// dir.
func NewPKI(dir string) (*PKI, error) {
	p := &PKI{Dir: dir}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("test PKI: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ratefleet test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("test PKI: CA: %w", err)
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("test PKI: CA: %w", err)
	}
	p.caKey = key
	if p.CA, err = writePEM(dir, "ca.pem", "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if p.ServerCert, p.ServerKey, err = p.Issue("server", true, now.Add(-time.Hour), now.Add(24*time.Hour)); err != nil {
		return nil, err
	}
	if p.ClientCert, p.ClientKey, err = p.Issue("client", false, now.Add(-time.Hour), now.Add(24*time.Hour)); err != nil {
		return nil, err
	}
	return p, nil
}

// Issue signs a new certificate named name, valid from notBefore to notAfter,
// for a server on loopback or for a client, and returns the paths of its
// certificate and key files.
func (p *PKI) Issue(name string, server bool, notBefore, notAfter time.Time) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("test PKI: %s: %w", name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", fmt.Errorf("test PKI: %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return "", "", fmt.Errorf("test PKI: %s: %w", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("test PKI: %s: %w", name, err)
	}
	if certFile, err = writePEM(p.Dir, name+"-cert.pem", "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if keyFile, err = writePEM(p.Dir, name+"-key.pem", "PRIVATE KEY", kder); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func writePEM(dir, name, typ string, der []byte) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return "", fmt.Errorf("test PKI: write %s: %w", path, err)
	}
	return path, nil
}
