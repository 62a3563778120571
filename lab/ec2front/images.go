package ec2front

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/beevik/etree"
)

const ec2NS = "http://ec2.amazonaws.com/doc/2016-11-15/"

// takeSnapshotTagSpecs removes the TagSpecification entries for snapshots
// (moto answers 500 to them) and returns their tags; the lab applies them to
// the image's snapshots after moto creates them, as AWS does at creation.
func takeSnapshotTagSpecs(c *call) map[string]string {
	specs := map[int]tagSpec{}
	for k, vs := range c.form {
		if !strings.HasPrefix(k, "TagSpecification.") || len(vs) == 0 {
			continue
		}
		parts := strings.SplitN(k, ".", 3)
		if len(parts) < 3 {
			continue
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			continue
		}
		if specs[n] == nil {
			specs[n] = tagSpec{}
		}
		specs[n][parts[2]] = vs[0]
	}
	tags := map[string]string{}
	var keep []int
	for n, s := range specs {
		if s["ResourceType"] != "snapshot" {
			keep = append(keep, n)
			continue
		}
		for i := 1; ; i++ {
			k, ok := s[fmt.Sprintf("Tag.%d.Key", i)]
			if !ok {
				break
			}
			tags[k] = s[fmt.Sprintf("Tag.%d.Value", i)]
		}
	}
	if len(keep) == len(specs) {
		return nil
	}
	sort.Ints(keep)
	for k := range c.form {
		if strings.HasPrefix(k, "TagSpecification.") {
			delete(c.form, k)
		}
	}
	for i, n := range keep {
		for sub, v := range specs[n] {
			c.form.Set(fmt.Sprintf("TagSpecification.%d.%s", i+1, sub), v)
		}
	}
	c.rewrote = true
	return tags
}

// tagSpec is one TagSpecification's sub-keys.
type tagSpec map[string]string

func (f *Front) createImage(c *call) (int, []byte, http.Header, error) {
	instanceID := c.form.Get("InstanceId")
	if _, ok := f.Backend.Instance(instanceID); !ok {
		return f.forwardRaw(c)
	}
	snapTags := takeSnapshotTagSpecs(c)
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	imageID := childText(doc.Root(), "imageId")
	noReboot := strings.EqualFold(c.form.Get("NoReboot"), "true")
	if err := f.Backend.CreateImage(c.r.Context(), c.region, instanceID, imageID, noReboot, snapTags); err != nil {
		return 0, nil, nil, err
	}
	return render(doc, hdr)
}

func (f *Front) forwardRaw(c *call) (int, []byte, http.Header, error) {
	status, body, hdr := f.forward(c)
	return status, body, hdr, nil
}

func (f *Front) describeImages(c *call) (int, []byte, http.Header, error) {
	taken := takeFilters(c, "state")
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, item := range doc.FindElements("//imagesSet/item") {
		// moto keeps no location for the images it registers or creates;
		// AWS gives an EBS-backed image "OWNER/NAME" ("amazon/NAME" for
		// Amazon's own): what EC2LatentWorker's valid_ami_location_regex
		// matches.
		if childText(item, "imageLocation") == "" && childText(item, "name") != "" {
			owner := childText(item, "imageOwnerAlias")
			if owner == "" {
				owner = childText(item, "imageOwnerId")
			}
			setChild(item, "imageLocation", owner+"/"+childText(item, "name"))
		}
		if v, ok := f.Backend.Image(childText(item, "imageId")); ok {
			if v.State != "" {
				setChild(item, "imageState", v.State)
			}
			if !v.CreationDate.IsZero() {
				setChild(item, "creationDate", v.CreationDate.UTC().Format("2006-01-02T15:04:05.000Z"))
			}
			if !v.DeprecationTime.IsZero() {
				setChild(item, "deprecationTime", v.DeprecationTime.UTC().Format("2006-01-02T15:04:05.000Z"))
			}
			if v.Protection != "" {
				setChild(item, "deregistrationProtection", v.Protection)
			}
		}
		if vs, ok := taken["state"]; ok && !matchAny(childText(item, "imageState"), vs) {
			item.Parent().RemoveChild(item)
		}
	}
	return render(doc, hdr)
}

func (f *Front) describeSnapshots(c *call) (int, []byte, http.Header, error) {
	taken := takeFilters(c, "status", "progress")
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	for _, item := range doc.FindElements("//snapshotSet/item") {
		if v, ok := f.Backend.Snapshot(childText(item, "snapshotId")); ok {
			switch v.State {
			case "pending":
				setChild(item, "status", "pending")
				setChild(item, "progress", fmt.Sprintf("%d%%", v.SnapshotProgress))
			case "failed":
				setChild(item, "status", "error")
			}
		}
		if vs, ok := taken["status"]; ok && !matchAny(childText(item, "status"), vs) {
			item.Parent().RemoveChild(item)
			continue
		}
		if vs, ok := taken["progress"]; ok && !matchAny(childText(item, "progress"), vs) {
			item.Parent().RemoveChild(item)
		}
	}
	return render(doc, hdr)
}

func (f *Front) deregisterImage(c *call) (int, []byte, http.Header, error) {
	id := c.form.Get("ImageId")
	if v, ok := f.Backend.Image(id); ok && v.Protection != "" {
		return 0, nil, nil, &APIError{Code: "InvalidParameterValue",
			Message: "Cannot deregister image " + id + " because deregistration protection is enabled."}
	}
	doc, status, body, hdr, err := f.forwardXML(c)
	if doc == nil {
		return status, body, hdr, err
	}
	if err := f.Backend.Deregister(c.region, id); err != nil {
		return 0, nil, nil, err
	}
	return render(doc, hdr)
}

// answer builds a plain <ActionResponse><requestId/><return>v</return>.
func answer(action, ret string) (int, []byte, http.Header, error) {
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	root := doc.CreateElement(action + "Response")
	root.CreateAttr("xmlns", ec2NS)
	root.CreateElement("requestId").SetText(requestID())
	root.CreateElement("return").SetText(ret)
	return render(doc, http.Header{"Content-Type": {"text/xml"}})
}

func (f *Front) enableImageDeprecation(c *call) (int, []byte, http.Header, error) {
	at, err := time.Parse(time.RFC3339, c.form.Get("DeprecateAt"))
	if err != nil {
		return 0, nil, nil, &APIError{Code: "InvalidParameterValue", Message: "DeprecateAt must be an ISO 8601 timestamp"}
	}
	if err := f.Backend.SetDeprecation(c.region, c.form.Get("ImageId"), at.Round(time.Minute)); err != nil {
		return 0, nil, nil, err
	}
	return answer(c.action, "true")
}

func (f *Front) disableImageDeprecation(c *call) (int, []byte, http.Header, error) {
	if err := f.Backend.SetDeprecation(c.region, c.form.Get("ImageId"), time.Time{}); err != nil {
		return 0, nil, nil, err
	}
	return answer(c.action, "true")
}

func (f *Front) enableProtection(c *call) (int, []byte, http.Header, error) {
	v := "enabled-without-cooldown"
	if strings.EqualFold(c.form.Get("WithCooldown"), "true") {
		v = "enabled-with-cooldown"
	}
	if err := f.Backend.SetProtection(c.region, c.form.Get("ImageId"), v); err != nil {
		return 0, nil, nil, err
	}
	return answer(c.action, v)
}

func (f *Front) disableProtection(c *call) (int, []byte, http.Header, error) {
	if err := f.Backend.SetProtection(c.region, c.form.Get("ImageId"), ""); err != nil {
		return 0, nil, nil, err
	}
	return answer(c.action, "disabled")
}
