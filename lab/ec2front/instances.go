package ec2front

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/beevik/etree"
)

var stateCodes = map[string]string{
	"pending": "0", "running": "16", "shutting-down": "32",
	"terminated": "48", "stopping": "64", "stopped": "80",
}

// setState writes an EC2 instance state element (instanceState,
// currentState, previousState).
func setState(e *etree.Element, state string) {
	if e == nil || state == "" {
		return
	}
	setChild(e, "code", stateCodes[state])
	setChild(e, "name", state)
}

var addrTags = []string{"privateIpAddress", "ipAddress", "publicIp", "dnsName", "privateDnsName", "publicDnsName"}

// rewriteInstance puts the lab's state and address into one instance item.
func rewriteInstance(item *etree.Element, v InstanceView) {
	setState(item.SelectElement("instanceState"), v.State)
	if v.Addr == "" {
		return
	}
	for _, tag := range addrTags {
		for _, e := range item.FindElements(".//" + tag) {
			e.SetText(v.Addr)
		}
	}
	for _, tag := range []string{"ipAddress", "dnsName", "privateIpAddress", "privateDnsName"} {
		if item.SelectElement(tag) == nil {
			item.CreateElement(tag).SetText(v.Addr)
		}
	}
}

// instanceItems finds every instance item of an answer.
func instanceItems(doc *etree.Document) []*etree.Element {
	var out []*etree.Element
	for _, e := range doc.FindElements("//item") {
		if e.SelectElement("instanceId") != nil && e.SelectElement("instanceState") != nil {
			out = append(out, e)
		}
	}
	return out
}

func (f *Front) runInstances(c *call) (int, []byte, http.Header, error) {
	// A client token makes the launch idempotent, as on EC2 (moto ignores
	// it): the same token answers the first launch's answer again, so a
	// retry after a lost answer launches nothing more.
	token := c.region + "/" + c.form.Get("ClientToken")
	if c.form.Get("ClientToken") != "" {
		if v, ok := f.launched.Load(token); ok {
			a := v.(tokenAnswer)
			return a.status, a.body, a.hdr.Clone(), nil
		}
	}
	if err := f.Backend.CheckLaunch(c.region, c.form.Get("ImageId")); err != nil {
		return 0, nil, nil, err
	}
	encrypted, key := rootEncryption(c)
	if key != "" {
		// EC2 checks the key before it creates anything here; on AWS
		// the instance is created and ends terminated with a state
		// reason (Client.InvalidKMSKey.InvalidState).
		arn, err := f.Backend.CheckKey(c.r.Context(), c.region, key)
		if err != nil {
			return 0, nil, nil, err
		}
		key = arn
	}
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, item := range instanceItems(doc) {
		spec := LaunchSpec{
			Region:       c.region,
			InstanceID:   childText(item, "instanceId"),
			ImageID:      childText(item, "imageId"),
			KeyName:      childText(item, "keyName"),
			InstanceType: childText(item, "instanceType"),
			Encrypted:    encrypted,
			KMSKeyID:     key,
		}
		v, err := f.Backend.Launch(c.r.Context(), spec)
		if err != nil {
			return 0, nil, nil, err
		}
		rewriteInstance(item, v)
	}
	status, body, hdr, err = render(doc, hdr)
	if err == nil && c.form.Get("ClientToken") != "" {
		f.launched.Store(token, tokenAnswer{status, body, hdr.Clone()})
	}
	return status, body, hdr, err
}

// rootEncryption reads a launch's EBS encryption: any block device mapping
// with Ebs.Encrypted (the lab's instances have one volume), and its key.
func rootEncryption(c *call) (bool, string) {
	encrypted, key := false, ""
	for k, vs := range c.form {
		if !strings.HasPrefix(k, "BlockDeviceMapping.") || len(vs) == 0 {
			continue
		}
		switch {
		case strings.HasSuffix(k, ".Ebs.Encrypted"):
			encrypted = encrypted || strings.EqualFold(vs[0], "true")
		case strings.HasSuffix(k, ".Ebs.KmsKeyId"):
			key = vs[0]
		}
	}
	return encrypted || key != "", key
}

// tokenAnswer is a response the front gives again for the same client token.
type tokenAnswer struct {
	status int
	body   []byte
	hdr    http.Header
}

func (f *Front) describeInstances(c *call) (int, []byte, http.Header, error) {
	taken := takeFilters(c, "instance-state-name", "instance-state-code", "launch-time")
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, item := range instanceItems(doc) {
		if v, ok := f.Backend.Instance(childText(item, "instanceId")); ok {
			rewriteInstance(item, v)
		}
		if !keepInstance(item, taken) {
			item.Parent().RemoveChild(item)
		}
	}
	// Drop reservations left without instances.
	for _, res := range doc.FindElements("//reservationSet/item") {
		if is := res.SelectElement("instancesSet"); is != nil && len(is.SelectElements("item")) == 0 {
			res.Parent().RemoveChild(res)
		}
	}
	return render(doc, hdr)
}

func keepInstance(item *etree.Element, taken map[string][]string) bool {
	st := item.SelectElement("instanceState")
	if vs, ok := taken["instance-state-name"]; ok && (st == nil || !matchAny(childText(st, "name"), vs)) {
		return false
	}
	if vs, ok := taken["instance-state-code"]; ok && (st == nil || !matchAny(childText(st, "code"), vs)) {
		return false
	}
	if vs, ok := taken["launch-time"]; ok && !matchLaunchTime(childText(item, "launchTime"), vs) {
		return false
	}
	return true
}

// matchLaunchTime compares moto's launch time with filter values, which on
// AWS are ISO 8601 timestamps, possibly with wildcards (2026-11-*).
func matchLaunchTime(lt string, vs []string) bool {
	if matchAny(lt, vs) {
		return true
	}
	t, err := time.Parse(time.RFC3339, lt)
	if err != nil {
		return false
	}
	for _, form := range []string{"2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05Z"} {
		if matchAny(t.UTC().Format(form), vs) {
			return true
		}
	}
	return false
}

func (f *Front) describeInstanceStatus(c *call) (int, []byte, http.Header, error) {
	taken := takeFilters(c, "instance-state-name", "instance-state-code")
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, item := range instanceItems(doc) {
		if v, ok := f.Backend.Instance(childText(item, "instanceId")); ok {
			setState(item.SelectElement("instanceState"), v.State)
			if v.State != "running" {
				for _, tag := range []string{"systemStatus", "instanceStatus"} {
					if s := item.SelectElement(tag); s != nil {
						setChild(s, "status", "initializing")
					}
				}
			}
		}
		if !keepInstance(item, taken) {
			item.Parent().RemoveChild(item)
		}
	}
	return render(doc, hdr)
}

// stateChange handles Stop/Start/Terminate: it checks each instance with the
// lab first (moto would happily stop a terminated one), forwards, acts, and
// reports the lab's previous and current states.
func (f *Front) stateChange(c *call, act func(id string) error) (int, []byte, http.Header, error) {
	ids := formList(c, "InstanceId")
	prev := map[string]string{}
	for _, id := range ids {
		if v, ok := f.Backend.Instance(id); ok {
			prev[id] = v.State
		}
	}
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, id := range ids {
		if _, ok := prev[id]; ok {
			if err := act(id); err != nil {
				return 0, nil, nil, err
			}
		}
	}
	for _, item := range doc.FindElements("//instancesSet/item") {
		id := childText(item, "instanceId")
		p, ok := prev[id]
		if !ok {
			continue
		}
		v, _ := f.Backend.Instance(id)
		setState(item.SelectElement("previousState"), p)
		setState(item.SelectElement("currentState"), v.State)
	}
	return render(doc, hdr)
}

func (f *Front) stopInstances(c *call) (int, []byte, http.Header, error) {
	force := strings.EqualFold(c.form.Get("Force"), "true")
	return f.stateChange(c, func(id string) error { return f.Backend.Stop(id, force) })
}

func (f *Front) startInstances(c *call) (int, []byte, http.Header, error) {
	return f.stateChange(c, f.Backend.Start)
}

func (f *Front) terminateInstances(c *call) (int, []byte, http.Header, error) {
	return f.stateChange(c, f.Backend.Terminate)
}

func (f *Front) rebootInstances(c *call) (int, []byte, http.Header, error) {
	ids := formList(c, "InstanceId")
	for _, id := range ids {
		if v, ok := f.Backend.Instance(id); ok && v.State != "running" {
			return 0, nil, nil, &APIError{Code: "IncorrectState", Message: "The instance '" + id + "' is not in a state from which it can be rebooted."}
		}
	}
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, id := range ids {
		if _, ok := f.Backend.Instance(id); ok {
			if err := f.Backend.Reboot(id); err != nil {
				return 0, nil, nil, err
			}
		}
	}
	return render(doc, hdr)
}

// consoleLimit is how much console output EC2 returns: the last 64 KB.
const consoleLimit = 64 << 10

func (f *Front) getConsoleOutput(c *call) (int, []byte, http.Header, error) {
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	out, ok := f.Backend.Console(c.form.Get("InstanceId"))
	if !ok {
		return render(doc, hdr)
	}
	if len(out) > consoleLimit {
		out = out[len(out)-consoleLimit:]
	}
	root := doc.Root()
	if len(out) == 0 {
		if o := root.SelectElement("output"); o != nil {
			root.RemoveChild(o)
		}
	} else {
		setChild(root, "output", base64.StdEncoding.EncodeToString(out))
	}
	setChild(root, "timestamp", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	return render(doc, hdr)
}
