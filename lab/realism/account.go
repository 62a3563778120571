package realism

// The account's shape: no default VPC, subnets without public IPs, IAM
// that takes a while to propagate, regions not enabled or denied, copies
// that fail late, launches that end terminated.

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/beevik/etree"

	"github.com/latentworker/latentworker/lab/ec2front"
)

// refuseAccount answers, before anything else, what the account refuses
// whatever the request: a key too new to be valid yet, an EC2 request in
// a region not enabled or denied.
func (h *Handler) refuseAccount(r *http.Request, q ec2front.Request, now time.Time) *apiError {
	if d := h.cfg.IAMKeyDelay.Duration; d > 0 {
		akid := ec2front.AccessKeyID(r.Header.Get("Authorization"))
		h.mu.Lock()
		at, young := h.keys[akid]
		h.mu.Unlock()
		if young && now.Sub(at) < d {
			if q.Service == "ec2" {
				return &apiError{401, "AuthFailure", "AWS was not able to validate the provided access credentials"}
			}
			return &apiError{403, "InvalidClientTokenId", "The security token included in the request is invalid."}
		}
	}
	if q.Service != "ec2" {
		return nil
	}
	switch {
	case slices.Contains(h.cfg.DisabledRegions, q.Region):
		return &apiError{401, "AuthFailure", "AWS was not able to validate the provided access credentials"}
	case slices.Contains(h.cfg.DeniedRegions, q.Region):
		return &apiError{403, "UnauthorizedOperation", fmt.Sprintf("You are not authorized to perform this operation: ec2:%s in %s, with an explicit deny in a service control policy.", q.Action, q.Region)}
	}
	return nil
}

// learnsFrom reports whether an IAM answer is one the layer learns from.
func (h *Handler) learnsFrom(q ec2front.Request) bool {
	return q.Service == "iam" && (q.Action == "CreateInstanceProfile" && h.cfg.IAMProfileDelay.Duration > 0 ||
		q.Action == "CreateAccessKey" && h.cfg.IAMKeyDelay.Duration > 0)
}

// learnIAM records a new instance profile or access key.
func (h *Handler) learnIAM(q ec2front.Request, body []byte) {
	if !h.learnsFrom(q) {
		return
	}
	doc := etree.NewDocument()
	if doc.ReadFromBytes(body) != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	switch q.Action {
	case "CreateInstanceProfile":
		if e := doc.FindElement("//InstanceProfileName"); e != nil {
			h.profiles[strings.TrimSpace(e.Text())] = now
		}
	case "CreateAccessKey":
		if e := doc.FindElement("//AccessKeyId"); e != nil {
			h.keys[strings.TrimSpace(e.Text())] = now
		}
	}
}

// refuseShape answers what EC2 refuses in an account of this shape: a
// launch or group that needs the default VPC where there is none, a launch
// naming an instance profile EC2 does not know yet (h.mu held).
func (h *Handler) refuseShape(q ec2front.Request, now time.Time) *apiError {
	if h.cfg.NoDefaultVPC {
		switch {
		case q.Action == "RunInstances" && q.Form.Get("SubnetId") == "" && q.Form.Get("NetworkInterface.1.SubnetId") == "" && q.Form.Get("NetworkInterface.1.NetworkInterfaceId") == "":
			return &apiError{400, "VPCIdNotSpecified", "No default VPC for this user"}
		case q.Action == "CreateSecurityGroup" && q.Form.Get("VpcId") == "":
			return &apiError{400, "VPCIdNotSpecified", "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC."}
		}
	}
	if d := h.cfg.IAMProfileDelay.Duration; d > 0 && q.Action == "RunInstances" {
		name := q.Form.Get("IamInstanceProfile.Name")
		if arn := q.Form.Get("IamInstanceProfile.Arn"); arn != "" {
			name = arn[strings.LastIndex(arn, "/")+1:]
		}
		if at, ok := h.profiles[name]; ok && now.Sub(at) < d {
			return &apiError{400, "InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name", name)}
		}
	}
	return nil
}

// rewriteShape rewrites an answer as this account shows it (h.mu held).
func (h *Handler) rewriteShape(q ec2front.Request, doc *etree.Document) bool {
	changed := false
	set := func(e *etree.Element, tag, v string) {
		if ec2front.ChildText(e, tag) != v {
			ec2front.SetChild(e, tag, v)
			changed = true
		}
	}
	drop := func(e *etree.Element) {
		e.Parent().RemoveChild(e)
		changed = true
	}
	items := func(id string) []*etree.Element {
		var out []*etree.Element
		for _, e := range doc.FindElements("//item") {
			if e.SelectElement(id) != nil {
				out = append(out, e)
			}
		}
		return out
	}
	switch q.Action {
	case "DescribeVpcs":
		if !h.cfg.NoDefaultVPC {
			return false
		}
		onlyDefault := slices.Contains(filterValues(q, "is-default"), "true") || slices.Contains(filterValues(q, "isDefault"), "true")
		for _, v := range items("vpcId") {
			if onlyDefault {
				drop(v)
			} else {
				set(v, "isDefault", "false")
			}
		}
	case "DescribeSubnets":
		onlyDefault := slices.Contains(filterValues(q, "default-for-az"), "true") || slices.Contains(filterValues(q, "defaultForAz"), "true")
		for _, sn := range items("subnetId") {
			if h.cfg.NoDefaultVPC {
				if onlyDefault {
					drop(sn)
					continue
				}
				set(sn, "defaultForAz", "false")
			}
			if h.cfg.NoPublicIPs {
				set(sn, "mapPublicIpOnLaunch", "false")
			}
		}
	case "DescribeRegions":
		all := strings.EqualFold(q.Form.Get("AllRegions"), "true")
		for _, r := range items("regionName") {
			if !slices.Contains(h.cfg.DisabledRegions, ec2front.ChildText(r, "regionName")) {
				continue
			}
			if all {
				set(r, "optInStatus", "not-opted-in")
			} else {
				drop(r)
			}
		}
	case "CopyImage":
		if slices.Contains(h.cfg.FailedCopies, q.Region) {
			if id := ec2front.ChildText(doc.Root(), "imageId"); id != "" {
				h.failed[id] = true
				h.logf("realism: ec2 CopyImage (%s): copy %s will end failed", q.Region, id)
			}
		}
	case "DescribeImages":
		for _, im := range items("imageId") {
			if !h.failed[ec2front.ChildText(im, "imageId")] {
				continue
			}
			set(im, "imageState", "failed")
			sr := im.SelectElement("stateReason")
			if sr == nil {
				sr = im.CreateElement("stateReason")
			}
			set(sr, "code", "Server.InternalError")
			set(sr, "message", "Copy failed: the destination refused the snapshot (the lab's realism.failed_copies)")
		}
	case "RunInstances", "DescribeInstances", "DescribeInstanceStatus":
		for _, item := range ec2front.InstanceItems(doc) {
			id := ec2front.ChildText(item, "instanceId")
			if h.doomed[id] && q.Action != "RunInstances" {
				if st := item.SelectElement("instanceState"); st != nil && ec2front.ChildText(st, "name") != "terminated" {
					set(st, "code", "48")
					set(st, "name", "terminated")
				}
				sr := item.SelectElement("stateReason")
				if sr == nil {
					sr = item.CreateElement("stateReason")
				}
				set(sr, "code", "Server.InsufficientInstanceCapacity")
				set(sr, "message", "Server.InsufficientInstanceCapacity: Insufficient capacity.")
			}
			if h.cfg.NoPublicIPs && !h.public[id] {
				if e := item.SelectElement("ipAddress"); e != nil {
					drop(e)
				}
				if e := item.SelectElement("dnsName"); e != nil && e.Text() != "" {
					e.SetText("")
					changed = true
				}
				for _, a := range item.FindElements(".//association") {
					drop(a)
				}
			}
		}
	}
	return changed
}
