// Command kubecall makes one request to the Kubernetes API as the pod's ServiceAccount, the way
// an in-cluster client does: the API server's Service address from KUBERNETES_SERVICE_HOST/PORT,
// the CA and token mounted at /var/run/secrets/kubernetes.io/serviceaccount. It prints the HTTP
// status code on the first line and the body after it; it exits 0 when the server answered.
//
//	kubecall /api/v1/namespaces/default/pods
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const mount = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) != 2 || !strings.HasPrefix(os.Args[1], "/") {
		fmt.Fprintln(os.Stderr, "usage: kubecall /api/PATH")
		os.Exit(2)
	}
	token, err := os.ReadFile(mount + "/token")
	if err != nil {
		fmt.Fprintln(os.Stderr, "no ServiceAccount token mounted:", err)
		os.Exit(3)
	}
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(mount + "/ca.crt"); err == nil {
		pool.AppendCertsFromPEM(ca)
	}
	host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc"}}}
	req, _ := http.NewRequest("GET", "https://"+host+os.Args[1], nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "request failed:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	fmt.Printf("%d\n%s\n", resp.StatusCode, body)
}
