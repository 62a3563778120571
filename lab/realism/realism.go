// Package realism makes the lab's endpoint answer as AWS does when it is
// asked to (the lab file's [realism] section): throttling and server errors
// at set rates, calls that take effect but whose answer is lost, eventual
// consistency (a new resource is not found for a while, a terminated
// instance is listed only for a while), slow boots, console output that
// comes late, and GetConsoleOutput's Latest refused on Xen instance types.
//
// It is an http.Handler in front of the EC2 endpoint (package ec2front): it
// reads requests as the front does, answers some itself, and rewrites some
// answers. It keeps what it learns from the answers (new IDs, launch,
// reboot and termination times, instance types) in memory. The lab's own
// calls to moto do not pass through it, nor do moto's /moto-api calls.
package realism

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beevik/etree"

	"github.com/latentworker/latentworker/lab/ec2front"
)

// Handler is the realism layer in front of an endpoint.
type Handler struct {
	cfg  Config
	next http.Handler
	logf func(format string, args ...any)
	now  func() time.Time

	mu       sync.Mutex
	rng      *mrand.Rand
	young    map[string]born      // "id:ID", "key:NAME", "sg:NAME" -> a new resource
	gone     map[string]time.Time // instance ID -> when first terminated
	booting  map[string]*boot     // instance ID -> its latest launch or start
	rebooted map[string]time.Time // instance ID -> its latest RebootInstances
	types    map[string]string    // instance ID -> instance type

	// The account's shape (Config's account knobs).
	profiles map[string]time.Time // instance profile name -> created
	keys     map[string]time.Time // access key ID -> created
	public   map[string]bool      // instance ID -> its launch asked for a public IP
	doomed   map[string]bool      // instance ID -> its launch ends terminated
	failed   map[string]bool      // image ID -> a copy that ends failed
}

// boot is an instance's launch or start through the endpoint.
type boot struct {
	at time.Time
	// up is when an answer would first have shown it running (the lab's
	// boot is done); zero until then.
	up time.Time
}

// shown is when the instance shows running: BootDelay after its boot was
// done, or, while nobody has asked for its state, after its launch.
func (b *boot) shown(delay time.Duration) time.Time {
	if b.up.IsZero() {
		return b.at.Add(delay)
	}
	return b.up.Add(delay)
}

// born is a resource created through the endpoint.
type born struct {
	kind kind
	ref  string // its ID or name, as the client names it
	at   time.Time
}

type kind int

const (
	kindInstance kind = iota
	kindImage
	kindGroup
	kindKeyPair
	kindSnapshot
	kindVolume
)

// notFound is EC2's answer to a request naming a resource it does not know.
func (k kind) notFound(ref string) *apiError {
	switch k {
	case kindInstance:
		return &apiError{400, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", ref)}
	case kindImage:
		return &apiError{400, "InvalidAMIID.NotFound", fmt.Sprintf("The image id '[%s]' does not exist", ref)}
	case kindGroup:
		return &apiError{400, "InvalidGroup.NotFound", fmt.Sprintf("The security group '%s' does not exist", ref)}
	case kindKeyPair:
		return &apiError{400, "InvalidKeyPair.NotFound", fmt.Sprintf("The key pair '%s' does not exist", ref)}
	case kindSnapshot:
		return &apiError{400, "InvalidSnapshot.NotFound", fmt.Sprintf("The snapshot '%s' does not exist.", ref)}
	default:
		return &apiError{400, "InvalidVolume.NotFound", fmt.Sprintf("The volume '%s' does not exist.", ref)}
	}
}

// creates maps the actions that create a resource to its kind and the
// answer's elements that hold the new IDs.
var creates = map[string]struct {
	kind kind
	tags []string
}{
	"RunInstances":        {kindInstance, []string{"instanceId"}},
	"CreateImage":         {kindImage, []string{"imageId"}},
	"RegisterImage":       {kindImage, []string{"imageId"}},
	"CopyImage":           {kindImage, []string{"imageId"}},
	"CreateSecurityGroup": {kindGroup, []string{"groupId"}},
	"CreateKeyPair":       {kindKeyPair, []string{"keyPairId"}},
	"ImportKeyPair":       {kindKeyPair, []string{"keyPairId"}},
	"CreateSnapshot":      {kindSnapshot, []string{"snapshotId"}},
	"CreateSnapshots":     {kindSnapshot, []string{"snapshotId"}},
	"CopySnapshot":        {kindSnapshot, []string{"snapshotId"}},
	"CreateVolume":        {kindVolume, []string{"volumeId"}},
}

// Wrap puts the realism layer in front of next; with every knob off it
// returns next itself. logf receives a line per fault it injects.
func Wrap(cfg Config, next http.Handler, logf func(format string, args ...any)) http.Handler {
	if !cfg.Enabled() {
		return next
	}
	return New(cfg, next, logf)
}

// New returns the realism layer in front of next.
func New(cfg Config, next http.Handler, logf func(format string, args ...any)) *Handler {
	seed := uint64(cfg.Seed)
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		for _, x := range b {
			seed = seed<<8 | uint64(x)
		}
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Handler{
		cfg: cfg, next: next, logf: logf, now: time.Now,
		rng:   mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		young: map[string]born{}, gone: map[string]time.Time{},
		booting: map[string]*boot{}, rebooted: map[string]time.Time{}, types: map[string]string{},
		profiles: map[string]time.Time{}, keys: map[string]time.Time{}, public: map[string]bool{},
		doomed: map[string]bool{}, failed: map[string]bool{},
	}
}

type fault int

const (
	noFault fault = iota
	throttled
	serverError
	lostAnswer
)

func (h *Handler) draw() (fault, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	x := h.rng.Float64()
	c := h.cfg
	switch {
	case x < c.Throttle:
		return throttled, 0
	case x < c.Throttle+c.ServerErrors:
		return serverError, h.rng.IntN(2)
	case x < c.Throttle+c.ServerErrors+c.LostAnswers:
		return lostAnswer, 0
	}
	return noFault, 0
}

// ServeHTTP injects a fault, refuses what AWS would not see yet (or any
// more), or passes the request on and rewrites the answer.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/moto-api") {
		h.next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	q := ec2front.ParseRequest(r, body)
	if q.Action == "" {
		h.next.ServeHTTP(w, r)
		return
	}
	if e := h.refuseAccount(r, q, h.now()); e != nil {
		h.fail(w, q, e, "")
		return
	}
	f, which := noFault, 0
	if h.cfg.faultsOn(q.Service, q.Action) {
		f, which = h.draw()
	}
	switch {
	case f == throttled:
		h.fail(w, q, throttleError(q.Service), "")
		return
	case f == serverError:
		h.fail(w, q, serverFault(q.Service, which), "")
		return
	case q.Service != "ec2" && f == noFault && !h.learnsFrom(q):
		h.next.ServeHTTP(w, r)
		return
	}
	// One time for what the request may see: the checks before it and the
	// rewriting of its answer agree.
	asked := h.now()
	if q.Service == "ec2" {
		if e := h.refuse(q, asked); e != nil {
			h.fail(w, q, e, "")
			return
		}
	}
	rec := newRecorder()
	h.next.ServeHTTP(rec, r)
	out := rec.body.Bytes()
	if q.Service == "ec2" && rec.status == http.StatusOK {
		out = h.observe(q, out, asked)
	}
	if q.Service == "iam" && rec.status == http.StatusOK {
		h.learnIAM(q, out)
	}
	if f == lostAnswer {
		h.fail(w, q, serverFault(q.Service, 0), fmt.Sprintf(" after the endpoint answered %d (the call took effect)", rec.status))
		return
	}
	for k, vs := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = vs
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(rec.status)
	_, _ = w.Write(out)
}

func (h *Handler) fail(w http.ResponseWriter, q ec2front.Request, e *apiError, why string) {
	h.logf("realism: %s %s (%s): answered %s (%d)%s", q.Service, q.Action, q.Region, e.code, e.status, why)
	writeError(w, q.Service, e)
}

// refName is the last name in a parameter key: "IpPermissions.1.Groups.1.GroupId" -> "GroupId".
func refName(key string) string {
	parts := strings.Split(key, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		if _, err := strconv.Atoi(parts[i]); err != nil {
			return parts[i]
		}
	}
	return ""
}

// refs lists the parameters of a request that name resources: their key's
// last name is an ID (…Id), a Resource, a KeyName, a GroupName or a
// SecurityGroup. Filters and tags do not name resources.
func refs(q ec2front.Request) map[string][]string {
	out := map[string][]string{}
	for k, vs := range q.Form {
		top, _, _ := strings.Cut(k, ".")
		if top == "Filter" || top == "TagSpecification" || top == "Tag" {
			continue
		}
		n := refName(k)
		switch {
		case n == "KeyName":
			out["key"] = append(out["key"], vs...)
		case n == "GroupName" || n == "SecurityGroup":
			out["sg"] = append(out["sg"], vs...)
		case n == "Resource" || n == "ResourceId" || strings.HasSuffix(n, "Id"):
			out["id"] = append(out["id"], vs...)
		}
	}
	return out
}

// refuse answers, before the request reaches the endpoint, what AWS would
// refuse: a new resource it does not see yet, an instance it no longer
// lists, Latest on a Xen instance type.
func (h *Handler) refuse(q ec2front.Request, now time.Time) *apiError {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cfg.Consistency.Duration > 0 {
		for k, b := range h.young {
			if now.Sub(b.at) >= h.cfg.Consistency.Duration {
				delete(h.young, k)
			}
		}
	}
	rs := refs(q)
	if len(h.young) > 0 {
		for _, v := range rs["id"] {
			if b, ok := h.young["id:"+v]; ok {
				return b.kind.notFound(v)
			}
		}
		// Creating a resource names it, and AWS answers a missing key
		// pair's deletion with success.
		if q.Action != "CreateKeyPair" && q.Action != "ImportKeyPair" && q.Action != "DeleteKeyPair" {
			for _, v := range rs["key"] {
				if b, ok := h.young["key:"+v]; ok {
					return b.kind.notFound(v)
				}
			}
		}
		if q.Action != "CreateSecurityGroup" {
			for _, v := range rs["sg"] {
				if b, ok := h.young["sg:"+v]; ok {
					return b.kind.notFound(v)
				}
			}
		}
	}
	if h.cfg.TerminatedListed.Duration > 0 {
		for _, v := range rs["id"] {
			if h.unlisted(v, now) {
				return kindInstance.notFound(v)
			}
		}
	}
	if e := h.refuseShape(q, now); e != nil {
		return e
	}
	if q.Action == "GetConsoleOutput" && h.cfg.LatestNitroOnly && strings.EqualFold(q.Form.Get("Latest"), "true") {
		id := q.Form.Get("InstanceId")
		if t, ok := h.types[id]; ok && h.cfg.Xen(t) {
			return &apiError{400, "UnsupportedOperation",
				fmt.Sprintf("The instance '%s' is of type %s, which is not built on the Nitro system: the latest console output (Latest) is available only on Nitro-based instance types.", id, t)}
		}
	}
	return nil
}

// unlisted reports whether an instance was terminated longer ago than
// TerminatedListed (h.mu held).
func (h *Handler) unlisted(id string, now time.Time) bool {
	t, ok := h.gone[id]
	return ok && h.cfg.TerminatedListed.Duration > 0 && now.Sub(t) >= h.cfg.TerminatedListed.Duration
}

// observe learns from a successful answer and rewrites it as AWS would
// show it to a request made at asked. It returns the answer to send.
func (h *Handler) observe(q ec2front.Request, body []byte, asked time.Time) []byte {
	switch q.Action {
	case "RunInstances", "StartInstances", "RebootInstances", "TerminateInstances", "ModifyInstanceAttribute",
		"DescribeInstances", "DescribeInstanceStatus", "GetConsoleOutput",
		"DescribeVpcs", "DescribeSubnets", "DescribeImages", "DescribeRegions":
	default:
		if _, ok := creates[q.Action]; !ok {
			return body
		}
	}
	doc := etree.NewDocument()
	if doc.ReadFromBytes(body) != nil {
		return body
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	changed := false
	if c, ok := creates[q.Action]; ok && h.cfg.Consistency.Duration > 0 {
		for _, tag := range c.tags {
			for _, e := range doc.FindElements("//" + tag) {
				if id := strings.TrimSpace(e.Text()); id != "" {
					h.young["id:"+id] = born{kind: c.kind, ref: id, at: now}
				}
			}
		}
		switch q.Action {
		case "CreateSecurityGroup":
			if n := q.Form.Get("GroupName"); n != "" {
				h.young["sg:"+n] = born{kind: kindGroup, ref: n, at: now}
			}
		case "CreateKeyPair", "ImportKeyPair":
			if n := ec2front.ChildText(doc.Root(), "keyName"); n != "" {
				h.young["key:"+n] = born{kind: kindKeyPair, ref: n, at: now}
			}
		}
	}
	switch q.Action {
	case "RunInstances":
		for _, item := range ec2front.InstanceItems(doc) {
			id := ec2front.ChildText(item, "instanceId")
			h.types[id] = ec2front.ChildText(item, "instanceType")
			h.booting[id] = &boot{at: now}
			h.public[id] = strings.EqualFold(q.Form.Get("NetworkInterface.1.AssociatePublicIpAddress"), "true")
			if matchType(h.cfg.InsufficientCapacity, h.types[id]) {
				h.doomed[id] = true
				h.logf("realism: ec2 RunInstances (%s): %s (%s) will end terminated, Server.InsufficientInstanceCapacity", q.Region, id, h.types[id])
			}
		}
		changed = h.rewriteShape(q, doc) || changed
	case "DescribeVpcs", "DescribeSubnets", "DescribeImages", "DescribeRegions", "CopyImage":
		changed = h.rewriteShape(q, doc) || changed
	case "StartInstances":
		for _, item := range doc.FindElements("//instancesSet/item") {
			id := ec2front.ChildText(item, "instanceId")
			if cur := item.SelectElement("currentState"); cur != nil && ec2front.ChildText(cur, "name") == "pending" {
				if p := item.SelectElement("previousState"); p == nil || ec2front.ChildText(p, "name") != "pending" {
					h.booting[id] = &boot{at: now}
				}
			}
		}
	case "RebootInstances":
		for k, vs := range q.Form {
			if strings.HasPrefix(k, "InstanceId") {
				for _, id := range vs {
					h.rebooted[id] = now
				}
			}
		}
	case "TerminateInstances":
		for _, item := range doc.FindElements("//instancesSet/item") {
			id := ec2front.ChildText(item, "instanceId")
			if _, ok := h.gone[id]; !ok {
				h.gone[id] = now
			}
		}
	case "ModifyInstanceAttribute":
		id := q.Form.Get("InstanceId")
		if v := q.Form.Get("InstanceType.Value"); v != "" {
			h.types[id] = v
		} else if q.Form.Get("Attribute") == "instanceType" && q.Form.Get("Value") != "" {
			h.types[id] = q.Form.Get("Value")
		}
	case "DescribeInstances", "DescribeInstanceStatus":
		changed = h.rewriteShape(q, doc)
		changed = h.rewriteInstances(q, doc, asked, now) || changed
	case "GetConsoleOutput":
		if !h.consolePosted(q.Form.Get("InstanceId"), now) {
			if o := doc.Root().SelectElement("output"); o != nil {
				doc.Root().RemoveChild(o)
				changed = true
			}
		}
	}
	if !changed {
		return body
	}
	out, err := doc.WriteToBytes()
	if err != nil {
		return body
	}
	return out
}

// consolePosted reports whether GetConsoleOutput shows the instance's
// output: ConsoleDelay after it shows running, and after its latest reboot
// (h.mu held).
func (h *Handler) consolePosted(id string, now time.Time) bool {
	d := h.cfg.ConsoleDelay.Duration
	if b := h.booting[id]; b != nil && now.Before(b.shown(h.cfg.BootDelay.Duration).Add(d)) {
		return false
	}
	if t, ok := h.rebooted[id]; ok && now.Before(t.Add(d)) {
		return false
	}
	return true
}

// rewriteInstances shows a booting instance pending until its BootDelay
// has passed, and drops instances terminated longer ago than
// TerminatedListed when the request was made (h.mu held).
func (h *Handler) rewriteInstances(q ec2front.Request, doc *etree.Document, asked, now time.Time) bool {
	changed := false
	states := filterValues(q, "instance-state-name")
	allStatus := strings.EqualFold(q.Form.Get("IncludeAllInstances"), "true")
	for _, item := range ec2front.InstanceItems(doc) {
		id := ec2front.ChildText(item, "instanceId")
		if h.unlisted(id, asked) {
			item.Parent().RemoveChild(item)
			changed = true
			continue
		}
		st := item.SelectElement("instanceState")
		b := h.booting[id]
		if b == nil || st == nil || ec2front.ChildText(st, "name") != "running" {
			continue
		}
		if b.up.IsZero() {
			b.up = now
		}
		if now.Before(b.shown(h.cfg.BootDelay.Duration)) {
			ec2front.SetChild(st, "code", "0")
			ec2front.SetChild(st, "name", "pending")
			for _, tag := range []string{"systemStatus", "instanceStatus"} {
				if s := item.SelectElement(tag); s != nil {
					ec2front.SetChild(s, "status", "initializing")
				}
			}
			changed = true
			hidden := states != nil && !ec2front.MatchAny("pending", states)
			if q.Action == "DescribeInstanceStatus" && !allStatus {
				hidden = true // by default it lists running instances only
			}
			if hidden {
				item.Parent().RemoveChild(item)
			}
		}
	}
	if changed {
		for _, res := range doc.FindElements("//reservationSet/item") {
			if is := res.SelectElement("instancesSet"); is != nil && len(is.SelectElements("item")) == 0 {
				res.Parent().RemoveChild(res)
			}
		}
	}
	return changed
}

// filterValues returns the values of the request's filter name, or nil.
func filterValues(q ec2front.Request, name string) []string {
	var out []string
	for k, vs := range q.Form {
		if !strings.HasPrefix(k, "Filter.") || !strings.HasSuffix(k, ".Name") || len(vs) == 0 || vs[0] != name {
			continue
		}
		prefix := strings.TrimSuffix(k, "Name") + "Value."
		for vk, vv := range q.Form {
			if strings.HasPrefix(vk, prefix) {
				out = append(out, vv...)
			}
		}
	}
	return out
}

// apiError is an error answer.
type apiError struct {
	status int
	code   string
	msg    string
}

func throttleError(service string) *apiError {
	if service == "ec2" {
		return &apiError{503, "RequestLimitExceeded", "Request limit exceeded."}
	}
	return &apiError{400, "Throttling", "Rate exceeded"}
}

func serverFault(service string, which int) *apiError {
	switch {
	case service == "ec2" && which == 0:
		return &apiError{500, "InternalError", "An internal error has occurred. Retry your request, but if the problem persists, contact us."}
	case service == "ec2":
		return &apiError{503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."}
	case which == 0:
		return &apiError{500, "InternalFailure", "The request processing has failed because of an unknown error, exception or failure."}
	default:
		return &apiError{503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."}
	}
}

// writeError writes an error as the service does: EC2's Response/Errors
// document, or the query protocol's ErrorResponse for IAM and STS.
func writeError(w http.ResponseWriter, service string, e *apiError) {
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	if service == "ec2" {
		resp := doc.CreateElement("Response")
		er := resp.CreateElement("Errors").CreateElement("Error")
		er.CreateElement("Code").SetText(e.code)
		er.CreateElement("Message").SetText(e.msg)
		resp.CreateElement("RequestID").SetText(requestID())
	} else {
		resp := doc.CreateElement("ErrorResponse")
		ns := "https://iam.amazonaws.com/doc/2010-05-08/"
		if service == "sts" {
			ns = "https://sts.amazonaws.com/doc/2011-06-15/"
		}
		resp.CreateAttr("xmlns", ns)
		er := resp.CreateElement("Error")
		typ := "Sender"
		if e.status >= 500 {
			typ = "Receiver"
		}
		er.CreateElement("Type").SetText(typ)
		er.CreateElement("Code").SetText(e.code)
		er.CreateElement("Message").SetText(e.msg)
		resp.CreateElement("RequestId").SetText(requestID())
	}
	b, _ := doc.WriteToBytes()
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// recorder keeps an answer to inspect it before it is sent.
type recorder struct {
	hdr    http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{hdr: http.Header{}, status: http.StatusOK} }

func (r *recorder) Header() http.Header         { return r.hdr }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(status int)      { r.status = status }
