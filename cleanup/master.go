package cleanup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// ErrMaster is wrapped by errors asking the buildmaster.
var ErrMaster = errors.New("asking the buildmaster")

// master asks a buildmaster's REST API whether workers are connected, once
// per worker per Find.
type master struct {
	url   string
	hc    *http.Client
	mu    sync.Mutex
	cache map[string]masterAnswer
}

type masterAnswer struct {
	connected bool
	err       error
}

func (m *master) enabled() bool { return m != nil && m.url != "" }

// connected reports whether worker is connected: GET /api/v2/workers/NAME
// has a worker whose connected_to is not empty. A worker the master does
// not know (404 or no worker in the answer) is not connected.
func (m *master) connected(ctx context.Context, worker string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.cache[worker]; ok {
		return a.connected, a.err
	}
	c, err := m.ask(ctx, worker)
	m.cache[worker] = masterAnswer{c, err}
	return c, err
}

func (m *master) ask(ctx context.Context, worker string) (bool, error) {
	u := strings.TrimRight(m.url, "/") + "/api/v2/workers/" + url.PathEscape(worker)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("%w about worker %s: %w", ErrMaster, worker, err)
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("%w about worker %s: %w", ErrMaster, worker, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%w about worker %s: GET %s: %s", ErrMaster, worker, u, resp.Status)
	}
	var body struct {
		Workers []struct {
			Name        string            `json:"name"`
			ConnectedTo []json.RawMessage `json:"connected_to"`
		} `json:"workers"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return false, fmt.Errorf("%w about worker %s: decoding GET %s: %w", ErrMaster, worker, u, err)
	}
	for _, w := range body.Workers {
		if (w.Name == "" || w.Name == worker) && len(w.ConnectedTo) > 0 {
			return true, nil
		}
	}
	return false, nil
}
