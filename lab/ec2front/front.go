// Package ec2front is the lab's EC2-compatible endpoint. Every request goes
// to moto; for the EC2 calls whose answers depend on a real machine (instance
// and image states, addresses, console output) the front asks its Backend and
// rewrites moto's XML answer, so that any AWS client pointed at it with
// AWS_ENDPOINT_URL sees EC2 behave as EC2 does. IAM and STS pass through.
//
// It owns request routing, request/response rewriting and the request log. It
// does not own machines or images: the Backend (package lab) does.
package ec2front

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/beevik/etree"
)

// InstanceView is what the lab knows of an instance that moto does not.
type InstanceView struct {
	State string // EC2 state name: pending, running, stopping, stopped, shutting-down, terminated
	Addr  string // the instance's loopback address, reported as every IP and DNS name
}

// ImageView is what the lab knows of an image that moto does not.
type ImageView struct {
	State            string    // pending, available, failed
	CreationDate     time.Time // zero: keep moto's
	DeprecationTime  time.Time // zero: none
	Protection       string    // deregistration protection: "" or enabled-with(out)-cooldown
	SnapshotProgress int       // 0..100 while pending
	// Encrypted: the image's snapshots are encrypted with KMSKeyID (moto
	// keeps no encryption for images).
	Encrypted bool
	KMSKeyID  string
}

// LaunchSpec is one instance moto has just created in RunInstances.
type LaunchSpec struct {
	Region       string
	InstanceID   string
	ImageID      string
	KeyName      string
	InstanceType string
	// Encrypted and KMSKeyID are the root volume's (RunInstances'
	// BlockDeviceMapping Ebs.Encrypted and Ebs.KmsKeyId, as its ARN).
	Encrypted bool
	KMSKeyID  string
}

// CopySpec is one CopyImage moto has just answered.
type CopySpec struct {
	SourceRegion, SourceImageID string
	Region, ImageID             string // the copy's
	Encrypted                   bool
	KMSKeyID                    string // its ARN; "" for the region's default key
	ImageTags, SnapshotTags     map[string]string
}

// Backend gives instances and images their bodies. Methods that change
// things return quickly; the work goes on in the background and shows in the
// views.
type Backend interface {
	// CheckLaunch says whether an image can be launched now (AWS checks
	// this before creating anything); the error is an *APIError.
	CheckLaunch(region, imageID string) error
	// CheckKey says whether a KMS key (ID, ARN or alias) exists in region
	// and is enabled, and returns its ARN; the error is an *APIError.
	CheckKey(ctx context.Context, region, key string) (string, error)
	// CheckCopy says whether an image can be copied now from region.
	CheckCopy(region, imageID string) error
	// CopyImage gives a copy moto made the source's body: it shares the
	// source's layers, and is pending for a while as a new image is.
	CopyImage(ctx context.Context, spec CopySpec) error
	Launch(ctx context.Context, spec LaunchSpec) (InstanceView, error)
	Instance(id string) (InstanceView, bool)
	Stop(id string, force bool) error
	Start(id string) error
	Reboot(id string) error
	Terminate(id string) error
	Console(id string) ([]byte, bool)

	CreateImage(ctx context.Context, region, instanceID, imageID string, noReboot bool, snapshotTags map[string]string) error
	Image(id string) (ImageView, bool)
	Snapshot(id string) (ImageView, bool)
	Deregister(region, imageID string) error
	SetDeprecation(region, imageID string, at time.Time) error
	SetProtection(region, imageID, value string) error
}

// APIError is an EC2 error answer.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// Front is the HTTP handler.
type Front struct {
	Moto    string // moto's base URL
	Backend Backend
	// Credentials re-sign requests the front had to rewrite.
	Credentials aws.Credentials
	// Enforcing says moto enforces IAM. A rewritten request is then
	// re-signed with the key that signed it, so that moto checks the
	// caller's rights, not the lab's: the front knows the secrets of the
	// keys created through it (IAM CreateAccessKey). A rewritten request
	// of any other key is refused.
	Enforcing bool
	// Evaluator answers iam:SimulatePrincipalPolicy and
	// sts:DecodeAuthorizationMessage; with Enforcing, it decides every request signed
	// with a key other than Credentials (the lab's administrator, whose
	// requests moto checks): the front builds the request's authorization
	// context as AWS does (authz.go), has the evaluator decide against the
	// key's user's policies as moto has them, answers a refusal as AWS
	// does, and forwards an allowed EC2 request signed with the lab's key
	// (moto's own check would deny resource-scoped allows).
	Evaluator Evaluator
	// Log receives one JSON line per request (may be nil).
	Log io.Writer

	client *http.Client
	// launched holds RunInstances and CopyImage answers by region and
	// client token.
	launched sync.Map
	logMu    sync.Mutex
	keysMu   sync.Mutex
	keys     map[string]string // access key ID -> secret, of keys created through the front
	authz    authzState
}

// New returns a front for moto at motoURL.
func New(motoURL string, b Backend, log io.Writer) *Front {
	return &Front{
		Moto:        strings.TrimRight(motoURL, "/"),
		Backend:     b,
		Credentials: aws.Credentials{AccessKeyID: "testing", SecretAccessKey: "testing"},
		Log:         log,
		client:      &http.Client{Timeout: 120 * time.Second},
	}
}

// call is one request in flight.
type call struct {
	r       *http.Request
	body    []byte
	form    url.Values
	service string
	region  string
	action  string
	rewrote bool // form changed: re-sign before forwarding
	asLab   bool // allowed by the evaluator: forward signed with the lab's key
}

// Request is what the front reads of an AWS query-API request.
type Request struct {
	Service string // from the signature's scope: ec2, iam, sts
	Region  string
	Action  string
	Form    url.Values // the form body, or the URL's query
}

// ParseRequest reads a request as the front routes it: the service and
// region from the signature's credential scope, the parameters from a form
// body (or the URL's query), the Action among them.
func ParseRequest(r *http.Request, body []byte) Request {
	var q Request
	if m := credScope.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		q.Region, q.Service = m[1], m[2]
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		q.Form, _ = url.ParseQuery(string(body))
	} else {
		q.Form = r.URL.Query()
	}
	q.Action = q.Form.Get("Action")
	return q
}

var credScope = regexp.MustCompile(`Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request`)

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := ParseRequest(r, body)
	c := &call{r: r, body: body, service: q.Service, region: q.Region, action: q.Action, form: q.Form}
	status, respBody, hdr := f.handle(c)
	for k, vs := range hdr {
		if k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(respBody)))
	w.WriteHeader(status)
	_, _ = w.Write(respBody)
	f.logRequest(c, status, time.Since(start))
}

func (f *Front) handle(c *call) (int, []byte, http.Header) {
	if f.Evaluator != nil {
		akid := accessKeyID(c.r.Header.Get("Authorization"))
		lab := akid == f.Credentials.AccessKeyID || !f.Enforcing
		switch {
		case c.service == "iam" && c.action == "SimulatePrincipalPolicy":
			if !lab {
				if status, body, hdr, done := f.authorize(c, akid); done {
					return status, body, hdr
				}
			}
			return f.simulatePrincipalPolicy(c)
		case c.service == "sts" && c.action == "DecodeAuthorizationMessage":
			if !lab {
				if status, body, hdr, done := f.authorize(c, akid); done {
					return status, body, hdr
				}
			}
			return f.decodeAuthorizationMessage(c)
		case !lab:
			if status, body, hdr, done := f.authorize(c, akid); done {
				return status, body, hdr
			}
			c.asLab = c.service == "ec2"
		}
		if c.service == "iam" && !strings.HasPrefix(c.action, "Get") && !strings.HasPrefix(c.action, "List") {
			defer f.forgetIdentities()
		}
	}
	if c.service == "iam" && c.action == "CreateAccessKey" {
		status, body, hdr := f.forward(c)
		if status == http.StatusOK {
			f.learnKey(body)
		}
		return status, body, hdr
	}
	if c.service != "ec2" || c.action == "" {
		return f.forward(c)
	}
	h, ok := handlers[c.action]
	if !ok {
		return f.forward(c)
	}
	status, body, hdr, err := h(f, c)
	if err != nil {
		return errorResponse(err)
	}
	return status, body, hdr
}

type handler func(f *Front, c *call) (int, []byte, http.Header, error)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"RunInstances":                         (*Front).runInstances,
		"DescribeInstances":                    (*Front).describeInstances,
		"DescribeInstanceStatus":               (*Front).describeInstanceStatus,
		"StopInstances":                        (*Front).stopInstances,
		"StartInstances":                       (*Front).startInstances,
		"RebootInstances":                      (*Front).rebootInstances,
		"TerminateInstances":                   (*Front).terminateInstances,
		"GetConsoleOutput":                     (*Front).getConsoleOutput,
		"CreateImage":                          (*Front).createImage,
		"CopyImage":                            (*Front).copyImage,
		"DescribeImages":                       (*Front).describeImages,
		"DescribeSnapshots":                    (*Front).describeSnapshots,
		"DeregisterImage":                      (*Front).deregisterImage,
		"EnableImageDeprecation":               (*Front).enableImageDeprecation,
		"DisableImageDeprecation":              (*Front).disableImageDeprecation,
		"EnableImageDeregistrationProtection":  (*Front).enableProtection,
		"DisableImageDeregistrationProtection": (*Front).disableProtection,
	}
}

// learnKey remembers the key in an IAM CreateAccessKey answer, so that a
// rewritten request signed with it can be signed again with it. Secrets
// stay in memory; the request log never has them.
func (f *Front) learnKey(body []byte) {
	doc := etree.NewDocument()
	if doc.ReadFromBytes(body) != nil {
		return
	}
	k := doc.FindElement("//AccessKey")
	if k == nil {
		return
	}
	id, secret := childText(k, "AccessKeyId"), childText(k, "SecretAccessKey")
	if id == "" || secret == "" {
		return
	}
	f.keysMu.Lock()
	defer f.keysMu.Unlock()
	if f.keys == nil {
		f.keys = map[string]string{}
	}
	f.keys[id] = secret
}

func (f *Front) secret(id string) (string, bool) {
	f.keysMu.Lock()
	defer f.keysMu.Unlock()
	s, ok := f.keys[id]
	return s, ok
}

// errCannotResign is a request the front had to rewrite for moto, signed
// with a key whose secret the front does not have, under IAM enforcement.
var errCannotResign = errors.New("lab: under IAM enforcement, what the lab emulates for moto (instance state and launch-time filters, image state filters, snapshot tags at CreateImage) works only for the lab's key and keys created through the lab's endpoint")

// forward sends the call to moto as it is (or re-signed when rewritten).
func (f *Front) forward(c *call) (int, []byte, http.Header) {
	status, body, hdr, err := f.roundTrip(c)
	if err != nil {
		return errorResponse(err)
	}
	return status, body, hdr
}

// roundTrip sends the call to moto and returns its answer. Its error is an
// *APIError: the front's refusal, or moto out of reach.
func (f *Front) roundTrip(c *call) (int, []byte, http.Header, error) {
	status, body, hdr, err := f.send(c)
	switch {
	case errors.Is(err, errCannotResign):
		return 0, nil, nil, &APIError{Status: 400, Code: "UnsupportedOperation", Message: err.Error()}
	case err != nil:
		return 0, nil, nil, &APIError{Status: 503, Code: "ServiceUnavailable", Message: "lab: moto: " + err.Error()}
	}
	return status, body, hdr, nil
}

func (f *Front) send(c *call) (int, []byte, http.Header, error) {
	body := c.body
	if c.rewrote {
		body = []byte(c.form.Encode())
	}
	req, err := http.NewRequestWithContext(c.r.Context(), c.r.Method, f.Moto+c.r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header = c.r.Header.Clone()
	req.Host = c.r.Host // the signature covers the Host header
	req.ContentLength = int64(len(body))
	req.Header.Del("Content-Length")
	if c.rewrote || c.asLab {
		creds := f.Credentials
		if akid := accessKeyID(c.r.Header.Get("Authorization")); f.Enforcing && akid != creds.AccessKeyID && !c.asLab {
			secret, ok := f.secret(akid)
			if !ok {
				return 0, nil, nil, fmt.Errorf("%w: %s from %s", errCannotResign, c.action, akid)
			}
			creds = aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret}
		}
		if err := f.sign(c, req, body, creds); err != nil {
			return 0, nil, nil, err
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	return resp.StatusCode, rb, resp.Header, err
}

func (f *Front) sign(c *call, req *http.Request, body []byte, creds aws.Credentials) error {
	req.Header.Del("Authorization")
	req.Header.Del("X-Amz-Date")
	req.Header.Del("X-Amz-Content-Sha256")
	sum := sha256Hex(body)
	req.Header.Set("X-Amz-Content-Sha256", sum)
	region := c.region
	if region == "" {
		region = "us-east-1"
	}
	return v4.NewSigner().SignHTTP(c.r.Context(), creds, req, sum, "ec2", region, time.Now())
}

// forwardXML forwards and parses a successful XML answer. A moto error is
// returned as it is, in the raw return values.
func (f *Front) forwardXML(c *call) (*etree.Document, int, []byte, http.Header, error) {
	status, body, hdr, err := f.roundTrip(c)
	if err != nil {
		return nil, 0, nil, nil, err
	}
	if status != http.StatusOK {
		return nil, status, body, hdr, nil
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(body); err != nil {
		return nil, 0, nil, nil, &APIError{Status: 500, Code: "InternalError", Message: "lab: unreadable moto answer: " + err.Error()}
	}
	return doc, status, body, hdr, nil
}

func render(doc *etree.Document, hdr http.Header) (int, []byte, http.Header, error) {
	b, err := doc.WriteToBytes()
	if err != nil {
		return 0, nil, nil, err
	}
	return http.StatusOK, b, hdr, nil
}

func errorResponse(err error) (int, []byte, http.Header) {
	ae, ok := err.(*APIError)
	if !ok {
		ae = &APIError{Status: 500, Code: "InternalError", Message: err.Error()}
	}
	if ae.Status == 0 {
		ae.Status = 400
	}
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	resp := doc.CreateElement("Response")
	e := resp.CreateElement("Errors").CreateElement("Error")
	e.CreateElement("Code").SetText(ae.Code)
	e.CreateElement("Message").SetText(ae.Message)
	resp.CreateElement("RequestID").SetText(requestID())
	b, _ := doc.WriteToBytes()
	return ae.Status, b, http.Header{"Content-Type": {"text/xml"}}
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// sensitive marks parameters whose values never reach the request log.
var sensitive = regexp.MustCompile(`(?i)(secret|password|passwd|token|material|userdata|policydocument)`)

func (f *Front) logRequest(c *call, status int, d time.Duration) {
	if f.Log == nil {
		return
	}
	params := map[string]string{}
	for k, vs := range c.form {
		if k == "Action" || k == "Version" || len(vs) == 0 {
			continue
		}
		v := vs[0]
		if sensitive.MatchString(k) {
			v = "(redacted)"
		} else if len(v) > 96 {
			v = v[:96] + "..."
		}
		params[k] = v
	}
	rec := map[string]any{
		"time":    time.Now().UTC().Format(time.RFC3339Nano),
		"service": c.service,
		"region":  c.region,
		"action":  c.action,
		"status":  status,
		"ms":      d.Milliseconds(),
		"params":  params,
	}
	if akid := accessKeyID(c.r.Header.Get("Authorization")); akid != "" {
		rec["access_key_id"] = akid
	}
	b, _ := json.Marshal(rec)
	f.logMu.Lock()
	defer f.logMu.Unlock()
	_, _ = f.Log.Write(append(b, '\n'))
}

var akidRe = regexp.MustCompile(`Credential=([^/]+)/`)

func accessKeyID(auth string) string {
	if m := akidRe.FindStringSubmatch(auth); m != nil {
		return m[1]
	}
	return ""
}

// OpenLog opens (appends to) a request log file, 0600.
func OpenLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
}
