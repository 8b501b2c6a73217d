package kubelet

import (
	"context"
	"io"
	"net/http"
	"strings"
)

// HTTPHealthz asks over plain HTTP, never through a proxy: healthz is on
// this node.
type HTTPHealthz struct{}

var healthzClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// Get implements Healthz.
func (HTTPHealthz) Get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := healthzClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}
