package master

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultUser is the username Client sends with a forced build. Buildbot's
// ForceScheduler rejects one that is not of the form "Name <email>".
const DefaultUser = "latentlab <latentlab@latentworker.invalid>"

// Buildbot result codes (buildbot.process.results).
const (
	Success   = 0
	Warnings  = 1
	Failure   = 2
	Skipped   = 3
	Exception = 4
	Retry     = 5
	Cancelled = 6
)

// ResultString names a buildbot result code.
func ResultString(code int) string {
	names := []string{"success", "warnings", "failure", "skipped", "exception", "retry", "cancelled"}
	if code >= 0 && code < len(names) {
		return names[code]
	}
	return "result " + strconv.Itoa(code)
}

// ErrNotFound is returned when the master does not know the thing asked for.
var ErrNotFound = errors.New("not found")

// pollInterval is how often the Wait methods ask the master.
const pollInterval = 250 * time.Millisecond

// Client talks to a buildbot master's REST API (/api/v2). It works against
// any buildbot master; the zero HTTP field means http.DefaultClient.
type Client struct {
	BaseURL string       // e.g. "http://127.0.0.1:8010/"
	HTTP    *http.Client // nil: http.DefaultClient
	User    string       // username for forced builds; "": DefaultUser
}

// Build is a build as the REST API reports it.
type Build struct {
	BuildID        int    `json:"buildid"`
	Number         int    `json:"number"`
	BuilderID      int    `json:"builderid"`
	BuildRequestID int    `json:"buildrequestid"`
	WorkerID       int    `json:"workerid"`
	Complete       bool   `json:"complete"`
	Results        int    `json:"results"` // a result code (Success...); NoResults until complete
	StateString    string `json:"state_string"`
}

// NoResults is Build.Results of a build that has not finished.
const NoResults = -1

// UnmarshalJSON decodes a build, mapping the null results of an unfinished
// build to NoResults (not 0, which is Success).
func (b *Build) UnmarshalJSON(data []byte) error {
	type plain Build
	var v struct {
		plain
		Results *int `json:"results"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*b = Build(v.plain)
	b.Results = NoResults
	if v.Results != nil {
		b.Results = *v.Results
	}
	return nil
}

// Succeeded reports whether the build finished with SUCCESS.
func (b Build) Succeeded() bool { return b.Complete && b.Results == Success }

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// endpoint returns the URL of the API path p (e.g. "workers/w1"), with
// query q.
func (c *Client) endpoint(p string, q url.Values) string {
	u := strings.TrimSuffix(c.BaseURL, "/") + "/api/v2/" + p
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// get fetches an API path into v. A 404 wraps ErrNotFound.
func (c *Client) get(ctx context.Context, p string, q url.Values, v any) error {
	u := c.endpoint(p, q)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("GET %s: %w", u, ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, snippet(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decode: %w", u, err)
	}
	return nil
}

// snippet shortens a response body for an error message.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// rpcMessage renders a JSON-RPC error message: a JSON string as its text,
// anything else (buildbot sends an object of validation errors) as JSON.
func rpcMessage(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return snippet(raw)
}

// BuilderID returns the ID of the builder called name.
func (c *Client) BuilderID(ctx context.Context, name string) (int, error) {
	var r struct {
		Builders []struct {
			BuilderID int    `json:"builderid"`
			Name      string `json:"name"`
		} `json:"builders"`
	}
	if err := c.get(ctx, "builders", url.Values{"name": {name}}, &r); err != nil {
		return 0, fmt.Errorf("look up builder %q: %w", name, err)
	}
	for _, b := range r.Builders {
		if b.Name == name {
			return b.BuilderID, nil
		}
	}
	return 0, fmt.Errorf("look up builder %q: %w", name, ErrNotFound)
}

// WorkerConnected reports whether the worker called name is connected to a
// master. An unknown worker is an error wrapping ErrNotFound.
func (c *Client) WorkerConnected(ctx context.Context, name string) (bool, error) {
	var r struct {
		Workers []struct {
			Name        string            `json:"name"`
			ConnectedTo []json.RawMessage `json:"connected_to"`
		} `json:"workers"`
	}
	if err := c.get(ctx, "workers/"+url.PathEscape(name), nil, &r); err != nil {
		return false, fmt.Errorf("get worker %q: %w", name, err)
	}
	for _, w := range r.Workers {
		if w.Name == name {
			return len(w.ConnectedTo) > 0, nil
		}
	}
	return false, fmt.Errorf("get worker %q: %w", name, ErrNotFound)
}

// WaitWorkerConnected polls until the worker called name is connected,
// timeout passes or ctx ends. Errors while polling (e.g. a master still
// starting) are retried and reported with the timeout.
func (c *Client) WaitWorkerConnected(ctx context.Context, name string, timeout time.Duration) error {
	return poll(ctx, timeout, fmt.Sprintf("wait for worker %q to connect", name), func(ctx context.Context) (bool, error) {
		return c.WorkerConnected(ctx, name)
	})
}

// WaitWorkerDisconnected polls until the worker called name has no
// connection, timeout passes or ctx ends: a worker of the same name that
// connects before the master has dropped an old connection may be refused
// by buildbot's arbitration (3.7: "cannot attach ... already connected"),
// while the master goes on showing the old one as connected.
func (c *Client) WaitWorkerDisconnected(ctx context.Context, name string, timeout time.Duration) error {
	return poll(ctx, timeout, fmt.Sprintf("wait for worker %q to disconnect", name), func(ctx context.Context) (bool, error) {
		ok, err := c.WorkerConnected(ctx, name)
		return !ok, err
	})
}

// ForceBuild asks the ForceScheduler called scheduler to build on the
// builder called builder and returns the new build request's ID.
func (c *Client) ForceBuild(ctx context.Context, scheduler, builder, reason string) (int, error) {
	op := fmt.Sprintf("force build on %q via scheduler %q", builder, scheduler)
	builderID, err := c.BuilderID(ctx, builder)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	// Buildbot answers a force on an unknown scheduler with a 500
	// (AttributeError); ask first for a clear error.
	var scheds struct {
		ForceSchedulers []json.RawMessage `json:"forceschedulers"`
	}
	if err := c.get(ctx, "forceschedulers/"+url.PathEscape(scheduler), nil, &scheds); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if len(scheds.ForceSchedulers) == 0 {
		return 0, fmt.Errorf("%s: scheduler: %w", op, ErrNotFound)
	}
	user := c.User
	if user == "" {
		user = DefaultUser
	}
	reqBody, err := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"method":  "force",
		"id":      1,
		"params": map[string]any{
			"builderid": builderID,
			"reason":    reason,
			"username":  user,
		},
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	u := c.endpoint("forceschedulers/"+url.PathEscape(scheduler), nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(reqBody))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	var r struct {
		Result []json.RawMessage `json:"result"`
		Error  *struct {
			Code int `json:"code"`
			// A string, or an object of validation errors by field.
			Message json.RawMessage `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("%s: %s: decode response: %w: %s", op, resp.Status, err, snippet(body))
	}
	if r.Error != nil {
		return 0, fmt.Errorf("%s: %s: JSON-RPC error %d: %s", op, resp.Status, r.Error.Code, rpcMessage(r.Error.Message))
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s: %s", op, resp.Status, snippet(body))
	}
	// The result is [buildsetid, {builderid: buildrequestid, ...}].
	var brids map[string]int
	if len(r.Result) != 2 {
		return 0, fmt.Errorf("%s: unexpected result %s", op, snippet(body))
	}
	if err := json.Unmarshal(r.Result[1], &brids); err != nil {
		return 0, fmt.Errorf("%s: unexpected result %s: %w", op, snippet(body), err)
	}
	brid, ok := brids[strconv.Itoa(builderID)]
	if !ok {
		return 0, fmt.Errorf("%s: no build request for builder %d in result %s", op, builderID, snippet(body))
	}
	return brid, nil
}

// WaitBuild polls until the build request is complete, timeout passes or
// ctx ends, and returns the request's last build. The error is nil also for
// a failed build: check Build.Results. A request that completed without any
// build (e.g. cancelled before it started) is an error.
func (c *Client) WaitBuild(ctx context.Context, buildRequestID int, timeout time.Duration) (Build, error) {
	op := fmt.Sprintf("wait for build request %d", buildRequestID)
	var results *int
	err := poll(ctx, timeout, op, func(ctx context.Context) (bool, error) {
		var r struct {
			BuildRequests []struct {
				Complete bool `json:"complete"`
				Results  *int `json:"results"`
			} `json:"buildrequests"`
		}
		if err := c.get(ctx, "buildrequests/"+strconv.Itoa(buildRequestID), nil, &r); err != nil {
			return false, err
		}
		if len(r.BuildRequests) == 0 {
			return false, ErrNotFound
		}
		results = r.BuildRequests[0].Results
		return r.BuildRequests[0].Complete, nil
	})
	if err != nil {
		return Build{}, err
	}
	var r struct {
		Builds []Build `json:"builds"`
	}
	q := url.Values{"buildrequestid": {strconv.Itoa(buildRequestID)}, "order": {"buildid"}}
	if err := c.get(ctx, "builds", q, &r); err != nil {
		return Build{}, fmt.Errorf("%s: %w", op, err)
	}
	if len(r.Builds) == 0 {
		res := "none"
		if results != nil {
			res = ResultString(*results)
		}
		return Build{}, fmt.Errorf("%s: request completed (%s) without a build", op, res)
	}
	return r.Builds[len(r.Builds)-1], nil
}

// Step is one step of a build as the REST API reports it.
type Step struct {
	Name        string  `json:"name"`
	Number      int     `json:"number"`
	Results     *int    `json:"results"` // nil until complete
	StateString string  `json:"state_string"`
	Started     float64 `json:"started_at"`
	Completed   float64 `json:"complete_at"`
}

// Duration is how long the step took (0 before it completes).
func (s Step) Duration() time.Duration {
	if s.Started == 0 || s.Completed == 0 {
		return 0
	}
	return time.Duration((s.Completed - s.Started) * float64(time.Second)).Round(time.Second)
}

// Steps returns the steps of the build with ID buildID, in order.
func (c *Client) Steps(ctx context.Context, buildID int) ([]Step, error) {
	var r struct {
		Steps []Step `json:"steps"`
	}
	if err := c.get(ctx, "builds/"+strconv.Itoa(buildID)+"/steps", url.Values{"order": {"number"}}, &r); err != nil {
		return nil, fmt.Errorf("steps of build %d: %w", buildID, err)
	}
	return r.Steps, nil
}

// StepOutput returns what the command of the step called step printed in
// the build with ID buildID: the stdout and stderr lines of the step's stdio
// log, without buildbot's header lines. For the lab builder's step "hello"
// that is "hello from HOSTNAME\n", naming the machine the worker runs on.
func (c *Client) StepOutput(ctx context.Context, buildID int, step string) (string, error) {
	var r struct {
		LogChunks []struct {
			Content string `json:"content"`
		} `json:"logchunks"`
	}
	p := "builds/" + strconv.Itoa(buildID) + "/steps/" + url.PathEscape(step) + "/logs/stdio/contents"
	if err := c.get(ctx, p, nil, &r); err != nil {
		return "", fmt.Errorf("get output of step %q of build %d: %w", step, buildID, err)
	}
	// Each line of a stream log starts with its stream: 'o'ut, 'e'rr or
	// 'h'eader.
	var out strings.Builder
	for _, chunk := range r.LogChunks {
		for _, line := range strings.SplitAfter(chunk.Content, "\n") {
			if line != "" && (line[0] == 'o' || line[0] == 'e') {
				out.WriteString(line[1:])
			}
		}
	}
	return out.String(), nil
}

// poll calls check every pollInterval until it returns true, timeout passes
// or ctx ends. Errors from check are retried; the last one is reported.
func poll(ctx context.Context, timeout time.Duration, op string, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := check(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%s: %w (last error: %v)", op, ctx.Err(), lastErr)
			}
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-tick.C:
		}
	}
}
