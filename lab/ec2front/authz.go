package ec2front

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
	"github.com/beevik/etree"

	"github.com/latentworker/latentworker/lab/iameval"
)

// Evaluator decides IAM checks (package lab/iameval's process).
type Evaluator interface {
	Evaluate(ctx context.Context, req iameval.Request) ([]iameval.Result, error)
}

// identity is the IAM user behind an access key and its policies, as moto
// has them.
type identity struct {
	user     string
	arn      string
	account  string
	policies []iameval.Policy
	fetched  time.Time
}

// identityTTL bounds how long an identity's policies are reused. Any IAM
// write through the front forgets them at once.
const identityTTL = 2 * time.Second

type authzState struct {
	mu    sync.Mutex
	ids   map[string]*identity // by access key ID
	iam   *awsiam.Client
	ec2By map[string]*ec2.Client
}

func (f *Front) labIAM() *awsiam.Client {
	f.authz.mu.Lock()
	defer f.authz.mu.Unlock()
	if f.authz.iam == nil {
		f.authz.iam = awsiam.New(awsiam.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.Moto),
			Credentials: credentials.StaticCredentialsProvider{Value: f.Credentials}})
	}
	return f.authz.iam
}

func (f *Front) labEC2(region string) *ec2.Client {
	f.authz.mu.Lock()
	defer f.authz.mu.Unlock()
	if f.authz.ec2By == nil {
		f.authz.ec2By = map[string]*ec2.Client{}
	}
	c := f.authz.ec2By[region]
	if c == nil {
		c = ec2.New(ec2.Options{Region: region, BaseEndpoint: aws.String(f.Moto),
			Credentials: credentials.StaticCredentialsProvider{Value: f.Credentials}})
		f.authz.ec2By[region] = c
	}
	return c
}

func (f *Front) forgetIdentities() {
	f.authz.mu.Lock()
	defer f.authz.mu.Unlock()
	f.authz.ids = nil
}

// identityOf finds the user of an access key and its policies in moto
// (with the lab's key). A key moto does not know, or an inactive one,
// is refused as AWS refuses it.
func (f *Front) identityOf(ctx context.Context, akid string) (*identity, error) {
	f.authz.mu.Lock()
	if id := f.authz.ids[akid]; id != nil && time.Since(id.fetched) < identityTTL {
		f.authz.mu.Unlock()
		return id, nil
	}
	f.authz.mu.Unlock()
	c := f.labIAM()
	lu, err := c.GetAccessKeyLastUsed(ctx, &awsiam.GetAccessKeyLastUsedInput{AccessKeyId: aws.String(akid)})
	if err != nil || aws.ToString(lu.UserName) == "" {
		return nil, errInvalidKey
	}
	id, err := f.userIdentity(ctx, aws.ToString(lu.UserName))
	if err != nil {
		return nil, err
	}
	keys, err := c.ListAccessKeys(ctx, &awsiam.ListAccessKeysInput{UserName: aws.String(id.user)})
	if err != nil {
		return nil, err
	}
	active := false
	for _, k := range keys.AccessKeyMetadata {
		if aws.ToString(k.AccessKeyId) == akid && k.Status == "Active" {
			active = true
		}
	}
	if !active {
		return nil, errInvalidKey
	}
	f.authz.mu.Lock()
	if f.authz.ids == nil {
		f.authz.ids = map[string]*identity{}
	}
	f.authz.ids[akid] = id
	f.authz.mu.Unlock()
	return id, nil
}

var errInvalidKey = errors.New("invalid access key")

// userIdentity reads a user's identity policies from moto: inline and
// attached, its own and its groups'.
func (f *Front) userIdentity(ctx context.Context, user string) (*identity, error) {
	c := f.labIAM()
	u, err := c.GetUser(ctx, &awsiam.GetUserInput{UserName: aws.String(user)})
	if err != nil {
		return nil, err
	}
	arn := aws.ToString(u.User.Arn)
	id := &identity{user: user, arn: arn, fetched: time.Now()}
	if parts := strings.Split(arn, ":"); len(parts) > 4 {
		id.account = parts[4]
	}
	add := func(name, doc string) {
		if d, err := url.QueryUnescape(doc); err == nil && !strings.HasPrefix(strings.TrimSpace(doc), "{") {
			doc = d
		}
		id.policies = append(id.policies, iameval.Policy{Name: name, Document: json.RawMessage(doc)})
	}
	managed := func(arns []string) error {
		for _, parn := range arns {
			p, err := c.GetPolicy(ctx, &awsiam.GetPolicyInput{PolicyArn: aws.String(parn)})
			if err != nil {
				return err
			}
			v, err := c.GetPolicyVersion(ctx, &awsiam.GetPolicyVersionInput{PolicyArn: aws.String(parn), VersionId: p.Policy.DefaultVersionId})
			if err != nil {
				return err
			}
			add(parn, aws.ToString(v.PolicyVersion.Document))
		}
		return nil
	}
	inline, err := c.ListUserPolicies(ctx, &awsiam.ListUserPoliciesInput{UserName: aws.String(user)})
	if err != nil {
		return nil, err
	}
	for _, n := range inline.PolicyNames {
		p, err := c.GetUserPolicy(ctx, &awsiam.GetUserPolicyInput{UserName: aws.String(user), PolicyName: aws.String(n)})
		if err != nil {
			return nil, err
		}
		add("user/"+n, aws.ToString(p.PolicyDocument))
	}
	att, err := c.ListAttachedUserPolicies(ctx, &awsiam.ListAttachedUserPoliciesInput{UserName: aws.String(user)})
	if err != nil {
		return nil, err
	}
	var arns []string
	for _, p := range att.AttachedPolicies {
		arns = append(arns, aws.ToString(p.PolicyArn))
	}
	if err := managed(arns); err != nil {
		return nil, err
	}
	groups, err := c.ListGroupsForUser(ctx, &awsiam.ListGroupsForUserInput{UserName: aws.String(user)})
	if err != nil {
		return nil, err
	}
	for _, g := range groups.Groups {
		gn := aws.ToString(g.GroupName)
		gi, err := c.ListGroupPolicies(ctx, &awsiam.ListGroupPoliciesInput{GroupName: aws.String(gn)})
		if err != nil {
			return nil, err
		}
		for _, n := range gi.PolicyNames {
			p, err := c.GetGroupPolicy(ctx, &awsiam.GetGroupPolicyInput{GroupName: aws.String(gn), PolicyName: aws.String(n)})
			if err != nil {
				return nil, err
			}
			add("group/"+gn+"/"+n, aws.ToString(p.PolicyDocument))
		}
		ga, err := c.ListAttachedGroupPolicies(ctx, &awsiam.ListAttachedGroupPoliciesInput{GroupName: aws.String(gn)})
		if err != nil {
			return nil, err
		}
		arns = arns[:0]
		for _, p := range ga.AttachedPolicies {
			arns = append(arns, aws.ToString(p.PolicyArn))
		}
		if err := managed(arns); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// authorize decides a request signed with a key other than the lab's. It
// returns done with the answer when the request ends here: refused, a
// DryRun, or answered by the front itself.
func (f *Front) authorize(c *call, akid string) (status int, body []byte, hdr http.Header, done bool) {
	ctx := c.r.Context()
	if c.service == "sts" && c.action == "GetCallerIdentity" {
		return 0, nil, nil, false // needs no permission
	}
	id, err := f.identityOf(ctx, akid)
	if errors.Is(err, errInvalidKey) {
		if c.service == "ec2" {
			s, b, h := errorResponse(&APIError{Status: 401, Code: "AuthFailure", Message: "AWS was not able to validate the provided access credentials"})
			return s, b, h, true
		}
		s, b, h := queryError(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
		return s, b, h, true
	}
	if err != nil {
		s, b, h := errorResponse(&APIError{Status: 500, Code: "InternalError", Message: "lab: the caller's identity: " + err.Error()})
		return s, b, h, true
	}
	// moto will see the lab's signature: the front checks the caller's.
	secret, known := f.secret(akid)
	if !known || !verifySignature(c.r, c.body, secret) {
		msg := "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
		if !known {
			msg = "lab: the key " + akid + " was not created through the lab's endpoint, so the lab cannot check its signatures"
		}
		if c.service == "ec2" {
			s, b, h := errorResponse(&APIError{Status: 401, Code: "AuthFailure", Message: msg})
			return s, b, h, true
		}
		s, b, h := queryError(403, "SignatureDoesNotMatch", msg)
		return s, b, h, true
	}
	var checks []iameval.Check
	switch c.service {
	case "ec2":
		checks, err = f.ec2Checks(ctx, c, id)
	case "iam", "sts":
		checks = f.iamChecks(c, id)
	default:
		return 0, nil, nil, false
	}
	if err != nil {
		s, b, h := errorResponse(err)
		return s, b, h, true
	}
	res, err := f.Evaluator.Evaluate(ctx, iameval.Request{Principal: id.arn, Policies: id.policies, Checks: checks})
	if err != nil {
		s, b, h := errorResponse(&APIError{Status: 500, Code: "InternalError", Message: "lab: " + err.Error()})
		return s, b, h, true
	}
	for i, r := range res {
		if r.Decision == iameval.Allowed {
			continue
		}
		if r.Decision == iameval.Error {
			s, b, h := errorResponse(&APIError{Status: 500, Code: "InternalError", Message: "lab: the IAM evaluator refused " + checks[i].Action + " on " + checks[i].Resource + ": " + r.Error})
			return s, b, h, true
		}
		s, b, h := f.denied(c, id, checks[i], r.Decision)
		return s, b, h, true
	}
	if c.service == "ec2" && strings.EqualFold(c.form.Get("DryRun"), "true") {
		s, b, h := errorResponse(&APIError{Status: http.StatusPreconditionFailed, Code: "DryRunOperation", Message: "Request would have succeeded, but DryRun flag is set."})
		return s, b, h, true
	}
	return 0, nil, nil, false
}

// denied answers a refused request as AWS does: EC2's UnauthorizedOperation
// with an encoded authorization message (sts:DecodeAuthorizationMessage
// decodes it here), IAM's and STS's AccessDenied.
func (f *Front) denied(c *call, id *identity, ch iameval.Check, decision string) (int, []byte, http.Header) {
	why := "because no identity-based policy allows the " + ch.Action + " action"
	if decision == iameval.ExplicitlyDenied {
		why = "with an explicit deny in an identity-based policy"
	}
	msg := fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", id.arn, ch.Action, ch.Resource, why)
	if c.service != "ec2" {
		return queryError(403, "AccessDenied", msg)
	}
	var conds []map[string]any
	for _, k := range sortedKeys(ch.Context) {
		vals := ch.Context[k]
		if s, ok := vals.(string); ok {
			vals = []string{s}
		}
		conds = append(conds, map[string]any{"key": k, "values": vals})
	}
	decoded, _ := json.Marshal(map[string]any{
		"allowed":      false,
		"explicitDeny": decision == iameval.ExplicitlyDenied,
		"context": map[string]any{
			"principal":  map[string]string{"arn": id.arn},
			"action":     ch.Action,
			"resource":   ch.Resource,
			"conditions": conds,
		},
	})
	return errorResponse(&APIError{Status: http.StatusForbidden, Code: "UnauthorizedOperation",
		Message: "You are not authorized to perform this operation. " + msg + ". Encoded authorization failure message: " + encodedPrefix + base64.RawURLEncoding.EncodeToString(decoded)})
}

// encodedPrefix marks the lab's encoded authorization messages: plain
// base64 of the decoded JSON, not AWS's encryption.
const encodedPrefix = "lab-"

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// queryError is an error answer of IAM and STS (the query protocol's
// ErrorResponse).
func queryError(status int, code, message string) (int, []byte, http.Header) {
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	resp := doc.CreateElement("ErrorResponse")
	e := resp.CreateElement("Error")
	e.CreateElement("Type").SetText("Sender")
	e.CreateElement("Code").SetText(code)
	e.CreateElement("Message").SetText(message)
	resp.CreateElement("RequestId").SetText(requestID())
	b, _ := doc.WriteToBytes()
	return status, b, http.Header{"Content-Type": {"text/xml"}}
}

// base is the context every request of the identity has.
func base(c *call, id *identity) map[string]any {
	region := c.region
	if region == "" {
		region = "us-east-1"
	}
	return map[string]any{
		"aws:PrincipalArn":     id.arn,
		"aws:PrincipalAccount": id.account,
		"aws:PrincipalType":    "User",
		"aws:username":         id.user,
		"aws:RequestedRegion":  region,
		"aws:SecureTransport":  "true", // AWS endpoints are HTTPS; the lab's loopback is not
		"aws:CurrentTime":      time.Now().UTC().Format(time.RFC3339),
		"aws:EpochTime":        strconv.FormatInt(time.Now().Unix(), 10),
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// tagContext adds the tags of a resource (aws:ResourceTag/K, and
// ec2:ResourceTag/K for EC2).
func tagContext(m map[string]any, tags []ec2types.Tag) map[string]any {
	for _, t := range tags {
		k := aws.ToString(t.Key)
		m["aws:ResourceTag/"+k] = aws.ToString(t.Value)
		m["ec2:ResourceTag/"+k] = aws.ToString(t.Value)
	}
	return m
}

// requestTags adds the tags a request sets (aws:RequestTag/K, aws:TagKeys).
func requestTags(m map[string]any, tags [][2]string) map[string]any {
	if len(tags) == 0 {
		return m
	}
	var keys []string
	for _, t := range tags {
		m["aws:RequestTag/"+t[0]] = t[1]
		keys = append(keys, t[0])
	}
	m["aws:TagKeys"] = keys
	return m
}

// formTags reads prefix.N.Key / prefix.N.Value.
func formTags(c *call, prefix string) [][2]string {
	var out [][2]string
	for i := 1; ; i++ {
		k, ok := c.form[fmt.Sprintf("%s.%d.Key", prefix, i)]
		if !ok || len(k) == 0 {
			return out
		}
		out = append(out, [2]string{k[0], c.form.Get(fmt.Sprintf("%s.%d.Value", prefix, i))})
	}
}

// tagSpecs reads TagSpecification.N: resource type -> tags.
func tagSpecs(c *call) map[string][][2]string {
	out := map[string][][2]string{}
	for i := 1; ; i++ {
		rt := c.form.Get(fmt.Sprintf("TagSpecification.%d.ResourceType", i))
		if rt == "" {
			return out
		}
		out[rt] = append(out[rt], formTags(c, fmt.Sprintf("TagSpecification.%d.Tag", i))...)
	}
}

// notFound turns moto's "not found" into the caller's APIError.
func notFound(err error, code, message string) error {
	var ae smithy.APIError
	if errors.As(err, &ae) && !strings.Contains(ae.ErrorCode(), "NotFound") && !strings.Contains(ae.ErrorCode(), "Malformed") && !strings.Contains(ae.ErrorCode(), "NoSuchEntity") {
		return &APIError{Status: 500, Code: "InternalError", Message: "lab: " + err.Error()}
	}
	return &APIError{Status: 400, Code: code, Message: message}
}

// ec2Checks builds the authorization of an EC2 request as EC2 does: one
// check per resource the action touches, each with the condition keys of
// that resource type, read from moto with the lab's key.
func (f *Front) ec2Checks(ctx context.Context, c *call, id *identity) ([]iameval.Check, error) {
	account := id.account
	region := c.region
	if region == "" {
		region = "us-east-1"
	}
	action := "ec2:" + c.action
	b := base(c, id)
	b["ec2:Region"] = region
	arn := func(res string) string { return fmt.Sprintf("arn:aws:ec2:%s:%s:%s", region, account, res) }
	one := func(act, res string, ctx map[string]any) iameval.Check {
		return iameval.Check{Action: act, Resource: res, Account: account, Context: ctx}
	}
	instances := func(ids []string) ([]iameval.Check, error) {
		var out []iameval.Check
		for _, id := range ids {
			ictx, err := f.instanceContext(ctx, region, id, b)
			if err != nil {
				return nil, err
			}
			out = append(out, one(action, arn("instance/"+id), ictx))
		}
		return out, nil
	}
	switch c.action {
	case "RunInstances":
		return f.runInstancesChecks(ctx, c, region, account, b)
	case "TerminateInstances", "StopInstances", "StartInstances", "RebootInstances", "MonitorInstances", "UnmonitorInstances":
		return instances(formList(c, "InstanceId"))
	case "GetConsoleOutput", "GetConsoleScreenshot", "ModifyInstanceAttribute", "ModifyInstanceMetadataOptions":
		return instances([]string{c.form.Get("InstanceId")})
	case "CreateImage":
		out, err := instances([]string{c.form.Get("InstanceId")})
		if err != nil {
			return nil, err
		}
		return append(out,
			one(action, fmt.Sprintf("arn:aws:ec2:%s::image/*", region), requestTags(with(b), tagSpecs(c)["image"])),
			one(action, fmt.Sprintf("arn:aws:ec2:%s::snapshot/*", region), requestTags(with(b), tagSpecs(c)["snapshot"]))), nil
	case "AssociateAddress":
		var out []iameval.Check
		if id := c.form.Get("InstanceId"); id != "" {
			ic, err := instances([]string{id})
			if err != nil {
				return nil, err
			}
			out = append(out, ic...)
		}
		if a := c.form.Get("AllocationId"); a != "" {
			out = append(out, one(action, arn("elastic-ip/"+a), with(b)))
		}
		return append(out, one(action, arn("network-interface/*"), with(b))), nil
	case "AttachVolume":
		out, err := instances([]string{c.form.Get("InstanceId")})
		if err != nil {
			return nil, err
		}
		return append(out, one(action, arn("volume/"+c.form.Get("VolumeId")), with(b))), nil
	case "CreateTags", "DeleteTags":
		tags := formTags(c, "Tag")
		var out []iameval.Check
		for _, rid := range formList(c, "ResourceId") {
			res, rctx, err := f.resourceContext(ctx, region, account, rid, b)
			if err != nil {
				return nil, err
			}
			if c.action == "CreateTags" {
				rctx = requestTags(rctx, tags)
			} else if len(tags) > 0 {
				var keys []string
				for _, t := range tags {
					keys = append(keys, t[0])
				}
				rctx["aws:TagKeys"] = keys
			}
			out = append(out, one(action, res, rctx))
		}
		return out, nil
	}
	// Describe* and everything not modelled: the action on "*".
	return []iameval.Check{one(action, "*", with(b))}, nil
}

// instanceContext is an existing instance's condition keys.
func (f *Front) instanceContext(ctx context.Context, region, id string, b map[string]any) (map[string]any, error) {
	out, err := f.labEC2(region).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
		return nil, notFound(err, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id))
	}
	in := out.Reservations[0].Instances[0]
	m := with(b,
		"ec2:InstanceID", id,
		"ec2:InstanceType", string(in.InstanceType),
		"ec2:Tenancy", "default",
		"ec2:RootDeviceType", orDefault(string(in.RootDeviceType), "ebs"),
		"ec2:EbsOptimized", strconv.FormatBool(aws.ToBool(in.EbsOptimized)),
		"ec2:InstanceMarketType", orDefault(string(in.InstanceLifecycle), "on-demand"),
	)
	if in.Placement != nil && in.Placement.AvailabilityZone != nil {
		m["ec2:AvailabilityZone"] = aws.ToString(in.Placement.AvailabilityZone)
	}
	if in.IamInstanceProfile != nil && aws.ToString(in.IamInstanceProfile.Arn) != "" {
		m["ec2:InstanceProfile"] = aws.ToString(in.IamInstanceProfile.Arn)
	}
	if mo := in.MetadataOptions; mo != nil {
		if mo.HttpTokens != "" {
			m["ec2:MetadataHttpTokens"] = string(mo.HttpTokens)
		}
		if mo.HttpEndpoint != "" {
			m["ec2:MetadataHttpEndpoint"] = string(mo.HttpEndpoint)
		}
	}
	return tagContext(m, in.Tags), nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// resourceContext is the ARN and condition keys of an EC2 resource named by
// its ID (CreateTags, DeleteTags).
func (f *Front) resourceContext(ctx context.Context, region, account, id string, b map[string]any) (string, map[string]any, error) {
	arn := func(res string) string { return fmt.Sprintf("arn:aws:ec2:%s:%s:%s", region, account, res) }
	prefix, _, _ := strings.Cut(id, "-")
	switch prefix {
	case "i":
		m, err := f.instanceContext(ctx, region, id, b)
		return arn("instance/" + id), m, err
	case "ami":
		return fmt.Sprintf("arn:aws:ec2:%s::image/%s", region, id), with(b, "ec2:ImageID", id), nil
	case "snap":
		return fmt.Sprintf("arn:aws:ec2:%s::snapshot/%s", region, id), with(b), nil
	case "vol":
		return arn("volume/" + id), with(b, "ec2:VolumeID", id), nil
	case "sg":
		return arn("security-group/" + id), with(b, "ec2:SecurityGroupID", id), nil
	case "subnet":
		return arn("subnet/" + id), with(b, "ec2:SubnetID", id), nil
	case "eni":
		return arn("network-interface/" + id), with(b, "ec2:NetworkInterfaceID", id), nil
	case "vpc":
		return arn("vpc/" + id), with(b, "ec2:VpcID", id), nil
	case "key":
		return arn("key-pair/" + id), with(b), nil
	}
	return "*", with(b), nil
}

// runInstancesChecks is RunInstances as EC2 authorizes it: the image, the
// instance, its network interface, security groups, subnet, volumes and key
// pair, each with its condition keys; iam:PassRole for the instance
// profile's role; and ec2:CreateTags (ec2:CreateAction=RunInstances) for
// each resource type tagged at launch.
func (f *Front) runInstancesChecks(ctx context.Context, c *call, region, account string, b map[string]any) ([]iameval.Check, error) {
	e := f.labEC2(region)
	arn := func(res string) string { return fmt.Sprintf("arn:aws:ec2:%s:%s:%s", region, account, res) }
	vpcARN := func(v string) string { return arn("vpc/" + v) }
	const action = "ec2:RunInstances"
	var checks []iameval.Check
	add := func(act, res string, m map[string]any) {
		checks = append(checks, iameval.Check{Action: act, Resource: res, Account: account, Context: m})
	}
	specs := tagSpecs(c)

	// The image.
	imageID := c.form.Get("ImageId")
	imgs, err := e.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil || len(imgs.Images) == 0 {
		return nil, notFound(err, "InvalidAMIID.NotFound", fmt.Sprintf("The image id '[%s]' does not exist", imageID))
	}
	img := imgs.Images[0]
	rootType := orDefault(string(img.RootDeviceType), "ebs")
	add(action, fmt.Sprintf("arn:aws:ec2:%s::image/%s", region, imageID), tagContext(with(b,
		"ec2:ImageID", imageID,
		"ec2:ImageType", orDefault(string(img.ImageType), "machine"),
		"ec2:Owner", aws.ToString(img.OwnerId),
		"ec2:Public", strconv.FormatBool(aws.ToBool(img.Public)),
		"ec2:RootDeviceType", rootType,
	), img.Tags))

	// The subnet: the one named, or the default VPC's default subnet.
	var subnet ec2types.Subnet
	subnetID := c.form.Get("SubnetId")
	if subnetID == "" {
		subnetID = c.form.Get("NetworkInterface.1.SubnetId")
	}
	if subnetID != "" {
		out, err := e.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{subnetID}})
		if err != nil || len(out.Subnets) == 0 {
			return nil, notFound(err, "InvalidSubnetID.NotFound", fmt.Sprintf("The subnet ID '%s' does not exist", subnetID))
		}
		subnet = out.Subnets[0]
	} else {
		filters := []ec2types.Filter{{Name: aws.String("default-for-az"), Values: []string{"true"}}}
		if az := c.form.Get("Placement.AvailabilityZone"); az != "" {
			filters = append(filters, ec2types.Filter{Name: aws.String("availability-zone"), Values: []string{az}})
		}
		out, err := e.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: filters})
		if err != nil || len(out.Subnets) == 0 {
			return nil, notFound(err, "VPCIdNotSpecified", "No default VPC for this user")
		}
		sort.Slice(out.Subnets, func(i, j int) bool {
			return aws.ToString(out.Subnets[i].AvailabilityZone) < aws.ToString(out.Subnets[j].AvailabilityZone)
		})
		subnet = out.Subnets[0]
	}
	vpc := aws.ToString(subnet.VpcId)
	az := aws.ToString(subnet.AvailabilityZone)
	add(action, arn("subnet/"+aws.ToString(subnet.SubnetId)), tagContext(with(b,
		"ec2:SubnetID", aws.ToString(subnet.SubnetId),
		"ec2:Vpc", vpcARN(vpc),
		"ec2:AvailabilityZone", az,
	), subnet.Tags))

	// The security groups: by ID, by name, or the VPC's default.
	sgIn := &ec2.DescribeSecurityGroupsInput{}
	ids := append(formList(c, "SecurityGroupId"), formList(c, "NetworkInterface.1.SecurityGroupId")...)
	names := formList(c, "SecurityGroup")
	switch {
	case len(ids) > 0:
		sgIn.GroupIds = ids
	case len(names) > 0:
		sgIn.Filters = []ec2types.Filter{{Name: aws.String("group-name"), Values: names}, {Name: aws.String("vpc-id"), Values: []string{vpc}}}
	default:
		sgIn.Filters = []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{"default"}}, {Name: aws.String("vpc-id"), Values: []string{vpc}}}
	}
	sgs, err := e.DescribeSecurityGroups(ctx, sgIn)
	want := max(len(ids), len(names), 1)
	if err != nil || len(sgs.SecurityGroups) < want {
		return nil, notFound(err, "InvalidGroup.NotFound", fmt.Sprintf("The security group '%s' does not exist", strings.Join(append(ids, names...), ", ")))
	}
	for _, sg := range sgs.SecurityGroups {
		add(action, arn("security-group/"+aws.ToString(sg.GroupId)), tagContext(with(b,
			"ec2:SecurityGroupID", aws.ToString(sg.GroupId),
			"ec2:Vpc", vpcARN(aws.ToString(sg.VpcId)),
		), sg.Tags))
	}

	// The key pair.
	if name := c.form.Get("KeyName"); name != "" {
		kps, err := e.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{name}})
		if err != nil || len(kps.KeyPairs) == 0 {
			return nil, notFound(err, "InvalidKeyPair.NotFound", fmt.Sprintf("The key pair '%s' does not exist", name))
		}
		kp := kps.KeyPairs[0]
		m := with(b, "ec2:KeyPairName", name)
		if kp.KeyType != "" {
			m["ec2:KeyPairType"] = string(kp.KeyType)
		}
		add(action, arn("key-pair/"+name), tagContext(m, kp.Tags))
	}

	// The network interface EC2 creates.
	ni := with(b, "ec2:Subnet", arn("subnet/"+aws.ToString(subnet.SubnetId)), "ec2:Vpc", vpcARN(vpc), "ec2:AvailabilityZone", az)
	if v := c.form.Get("NetworkInterface.1.AssociatePublicIpAddress"); v != "" {
		ni["ec2:AssociatePublicIpAddress"] = strings.ToLower(v)
	}
	add(action, arn("network-interface/*"), requestTags(ni, specs["network-interface"]))

	// The volumes: the root volume and every EBS mapping.
	vol := func(size, typ, encrypted string) map[string]any {
		return requestTags(with(b, "ec2:VolumeSize", size, "ec2:VolumeType", orDefault(typ, "gp2"),
			"ec2:Encrypted", orDefault(strings.ToLower(encrypted), "false"), "ec2:AvailabilityZone", az), specs["volume"])
	}
	rootSize := "8"
	for _, m := range img.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == aws.ToString(img.RootDeviceName) && m.Ebs != nil && m.Ebs.VolumeSize != nil {
			rootSize = strconv.Itoa(int(*m.Ebs.VolumeSize))
		}
	}
	rootSeen := false
	for i := 1; ; i++ {
		p := fmt.Sprintf("BlockDeviceMapping.%d.", i)
		dev := c.form.Get(p + "DeviceName")
		if dev == "" {
			break
		}
		if c.form.Get(p+"Ebs.VolumeSize") == "" && c.form.Get(p+"Ebs.VolumeType") == "" && c.form.Get(p+"Ebs.SnapshotId") == "" && dev != aws.ToString(img.RootDeviceName) {
			continue // an instance store or NoDevice mapping
		}
		size := c.form.Get(p + "Ebs.VolumeSize")
		if dev == aws.ToString(img.RootDeviceName) {
			rootSeen = true
			size = orDefault(size, rootSize)
		}
		add(action, arn("volume/*"), vol(orDefault(size, "8"), c.form.Get(p+"Ebs.VolumeType"), c.form.Get(p+"Ebs.Encrypted")))
	}
	if !rootSeen && rootType == "ebs" {
		add(action, arn("volume/*"), vol(rootSize, "", ""))
	}

	// The KMS keys EC2 uses on the caller's behalf for the volumes: the
	// image's snapshot's (moto keeps none: the lab's record) and the one
	// the launch names. A customer managed key must let the caller use it
	// through EC2 (kms:ViaService); re-encrypting is needed only when the
	// launch names another key than the image's.
	imageKey, launchKey := "", ""
	if v, ok := f.Backend.Image(imageID); ok {
		imageKey = v.KMSKeyID
	}
	if _, key := rootEncryption(c); key != "" {
		k, err := f.Backend.CheckKey(ctx, region, key)
		if err != nil {
			return nil, err
		}
		launchKey = k
	}
	via := "ec2." + region + ".amazonaws.com"
	for _, k := range slices.Compact([]string{imageKey, launchKey}) {
		if k == "" {
			continue
		}
		acts := []string{"kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext"}
		if imageKey != "" && launchKey != "" && imageKey != launchKey {
			acts = append(acts, "kms:ReEncryptFrom", "kms:ReEncryptTo")
		}
		for _, a := range acts {
			m := with(b, "kms:ViaService", via)
			if a == "kms:CreateGrant" {
				m["kms:GrantIsForAWSResource"] = "true"
			}
			checks = append(checks, iameval.Check{Action: a, Resource: k, Account: account, Context: m, ResourcePolicy: defaultKeyPolicy(k)})
		}
	}

	// The instance.
	inst := with(b,
		"ec2:InstanceType", orDefault(c.form.Get("InstanceType"), "m1.small"),
		"ec2:Tenancy", orDefault(c.form.Get("Placement.Tenancy"), "default"),
		"ec2:RootDeviceType", rootType,
		"ec2:AvailabilityZone", az,
		"ec2:EbsOptimized", orDefault(strings.ToLower(c.form.Get("EbsOptimized")), "false"),
		"ec2:InstanceMarketType", orDefault(c.form.Get("InstanceMarketOptions.MarketType"), "on-demand"),
		"ec2:MetadataHttpEndpoint", orDefault(c.form.Get("MetadataOptions.HttpEndpoint"), "enabled"),
		"ec2:MetadataHttpPutResponseHopLimit", orDefault(c.form.Get("MetadataOptions.HttpPutResponseHopLimit"), "1"),
		"ec2:InstanceMetadataTags", orDefault(c.form.Get("MetadataOptions.InstanceMetadataTags"), "disabled"),
	)
	tokens := c.form.Get("MetadataOptions.HttpTokens")
	if tokens == "" {
		tokens = "optional"
		if img.ImdsSupport == ec2types.ImdsSupportValuesV20 {
			tokens = "required"
		}
	}
	inst["ec2:MetadataHttpTokens"] = tokens
	var roles []string
	profileName, profileARN := c.form.Get("IamInstanceProfile.Name"), c.form.Get("IamInstanceProfile.Arn")
	if profileName != "" || profileARN != "" {
		if profileName == "" {
			profileName = profileARN[strings.LastIndex(profileARN, "/")+1:]
		}
		p, err := f.labIAM().GetInstanceProfile(ctx, &awsiam.GetInstanceProfileInput{InstanceProfileName: aws.String(profileName)})
		if err != nil || (profileARN != "" && aws.ToString(p.InstanceProfile.Arn) != profileARN) {
			return nil, notFound(err, "InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name", profileName))
		}
		inst["ec2:InstanceProfile"] = aws.ToString(p.InstanceProfile.Arn)
		for _, r := range p.InstanceProfile.Roles {
			roles = append(roles, aws.ToString(r.Arn))
		}
	}
	add(action, arn("instance/*"), requestTags(inst, specs["instance"]))

	// Passing the profile's role to EC2.
	for _, r := range roles {
		add("iam:PassRole", r, map[string]any{
			"iam:PassedToService":       "ec2.amazonaws.com",
			"iam:AssociatedResourceARN": arn("instance/*"),
			"aws:RequestedRegion":       b["aws:RequestedRegion"],
		})
	}

	// Tags on create.
	for _, rt := range sortedSpecKeys(specs) {
		res := arn(rt + "/*")
		add("ec2:CreateTags", res, requestTags(with(b, "ec2:CreateAction", "RunInstances"), specs[rt]))
	}
	return checks, nil
}

// defaultKeyPolicy is the key policy AWS gives a key made without one: its
// account's IAM policies decide (moto keeps the same default).
func defaultKeyPolicy(keyARN string) map[string]any {
	account := ""
	if f := strings.Split(keyARN, ":"); len(f) > 4 {
		account = f[4]
	}
	return map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Sid": "Enable IAM User Permissions", "Effect": "Allow",
		"Principal": map[string]any{"AWS": "arn:aws:iam::" + account + ":root"},
		"Action":    "kms:*", "Resource": "*",
	}}}
}

func sortedSpecKeys(m map[string][][2]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// iamChecks is an IAM or STS request: the action on the resource its
// parameters name (the caller's own user when it names none).
func (f *Front) iamChecks(c *call, id *identity) []iameval.Check {
	res := "*"
	acct := id.account
	switch {
	case c.service == "sts":
	case c.form.Get("PolicyArn") != "":
		res = c.form.Get("PolicyArn")
	case c.form.Get("RoleName") != "":
		res = fmt.Sprintf("arn:aws:iam::%s:role/%s", acct, c.form.Get("RoleName"))
	case c.form.Get("InstanceProfileName") != "":
		res = fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", acct, c.form.Get("InstanceProfileName"))
	case c.form.Get("GroupName") != "":
		res = fmt.Sprintf("arn:aws:iam::%s:group/%s", acct, c.form.Get("GroupName"))
	case c.form.Get("UserName") != "":
		res = fmt.Sprintf("arn:aws:iam::%s:user/%s", acct, c.form.Get("UserName"))
	case c.form.Get("PolicySourceArn") != "":
		res = c.form.Get("PolicySourceArn")
	case strings.Contains(c.action, "AccessKey") || strings.HasSuffix(c.action, "User") || strings.Contains(c.action, "UserPolic"):
		res = id.arn
	}
	return []iameval.Check{{Action: strings.ToLower(c.service) + ":" + c.action, Resource: res, Account: acct, Context: base(c, id)}}
}

// simulatePrincipalPolicy answers iam:SimulatePrincipalPolicy (moto has
// none) with the evaluator, for a user's policies as moto has them:
// each action on each resource (or "*") with the context entries given.
func (f *Front) simulatePrincipalPolicy(c *call) (int, []byte, http.Header) {
	ctx := c.r.Context()
	src := c.form.Get("PolicySourceArn")
	i := strings.Index(src, ":user/")
	if i < 0 {
		return queryError(400, "InvalidInput", "PolicySourceArn: the lab simulates the policies of IAM users only (arn:aws:iam::ACCOUNT:user/NAME)")
	}
	user := src[strings.LastIndex(src, "/")+1:]
	id, err := f.userIdentity(ctx, user)
	if err != nil {
		return queryError(404, "NoSuchEntity", "The user with name "+user+" cannot be found.")
	}
	policies := id.policies
	for i, doc := range memberList(c, "PolicyInputList") {
		policies = append(policies, iameval.Policy{Name: fmt.Sprintf("input-%d", i+1), Document: json.RawMessage(doc)})
	}
	cctx := map[string]any{}
	for i := 1; ; i++ {
		p := fmt.Sprintf("ContextEntries.member.%d.", i)
		k := c.form.Get(p + "ContextKeyName")
		if k == "" {
			break
		}
		vals := memberList(c, p+"ContextKeyValues")
		if strings.HasSuffix(c.form.Get(p+"ContextKeyType"), "List") {
			cctx[k] = vals
		} else if len(vals) > 0 {
			cctx[k] = vals[0]
		}
	}
	resources := memberList(c, "ResourceArns")
	if len(resources) == 0 {
		resources = []string{"*"}
	}
	var checks []iameval.Check
	for _, a := range memberList(c, "ActionNames") {
		for _, r := range resources {
			checks = append(checks, iameval.Check{Action: a, Resource: r, Account: id.account, Context: cctx})
		}
	}
	res, err := f.Evaluator.Evaluate(ctx, iameval.Request{Principal: id.arn, Policies: policies, Checks: checks})
	if err != nil {
		return queryError(500, "ServiceFailure", "lab: "+err.Error())
	}
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	resp := doc.CreateElement("SimulatePrincipalPolicyResponse")
	resp.CreateAttr("xmlns", "https://iam.amazonaws.com/doc/2010-05-08/")
	result := resp.CreateElement("SimulatePrincipalPolicyResult")
	result.CreateElement("IsTruncated").SetText("false")
	list := result.CreateElement("EvaluationResults")
	for i, r := range res {
		if r.Decision == iameval.Error {
			return queryError(400, "InvalidInput", fmt.Sprintf("%s on %s: %s", checks[i].Action, checks[i].Resource, r.Error))
		}
		m := list.CreateElement("member")
		m.CreateElement("EvalActionName").SetText(checks[i].Action)
		m.CreateElement("EvalResourceName").SetText(checks[i].Resource)
		m.CreateElement("EvalDecision").SetText(map[string]string{
			iameval.Allowed: "allowed", iameval.ImplicitlyDenied: "implicitDeny", iameval.ExplicitlyDenied: "explicitDeny",
		}[r.Decision])
		ms := m.CreateElement("MatchedStatements")
		if r.Decision == iameval.ExplicitlyDenied {
			// The evaluator says denied, not by what: name the Deny
			// statements of the action (conditions not weighed) and
			// where they start, as AWS names the matched statements.
			for _, d := range denyingPolicies(policies, checks[i].Action) {
				st := ms.CreateElement("member")
				st.CreateElement("SourcePolicyId").SetText(d.policy)
				st.CreateElement("SourcePolicyType").SetText("IAM Policy")
				start := st.CreateElement("StartPosition")
				start.CreateElement("Line").SetText(strconv.Itoa(d.line))
				start.CreateElement("Column").SetText(strconv.Itoa(d.column))
			}
		}
		m.CreateElement("MissingContextValues")
	}
	resp.CreateElement("ResponseMetadata").CreateElement("RequestId").SetText(requestID())
	b, _ := doc.WriteToBytes()
	return http.StatusOK, b, http.Header{"Content-Type": {"text/xml"}}
}

// decodeAuthorizationMessage answers sts:DecodeAuthorizationMessage for
// the lab's encoded messages (see denied).
func (f *Front) decodeAuthorizationMessage(c *call) (int, []byte, http.Header) {
	enc, ok := strings.CutPrefix(c.form.Get("EncodedMessage"), encodedPrefix)
	dec, err := base64.RawURLEncoding.DecodeString(enc)
	if !ok || err != nil {
		return queryError(400, "InvalidAuthorizationMessageException", "Message is not valid")
	}
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	resp := doc.CreateElement("DecodeAuthorizationMessageResponse")
	resp.CreateAttr("xmlns", "https://sts.amazonaws.com/doc/2011-06-15/")
	resp.CreateElement("DecodeAuthorizationMessageResult").CreateElement("DecodedMessage").SetText(string(dec))
	resp.CreateElement("ResponseMetadata").CreateElement("RequestId").SetText(requestID())
	b, _ := doc.WriteToBytes()
	return http.StatusOK, b, http.Header{"Content-Type": {"text/xml"}}
}

// memberList reads the query protocol's prefix.member.N.
func memberList(c *call, prefix string) []string {
	return formList(c, prefix+".member")
}

// denial is a Deny statement: its policy and where it starts in the
// policy's document (1-based line and column, as IAM's StartPosition).
type denial struct {
	policy       string
	line, column int
}

// denyingPolicies finds the Deny statements whose Action matches action
// (IAM's * and ? wildcards, case-insensitive) in policies.
func denyingPolicies(policies []iameval.Policy, action string) []denial {
	var out []denial
	for _, p := range policies {
		for _, st := range statements(p.Document) {
			if st.Effect != "Deny" {
				continue
			}
			for _, a := range st.Action {
				if ok, _ := path.Match(strings.ToLower(a), strings.ToLower(action)); ok {
					line, col := position(p.Document, st.offset)
					out = append(out, denial{policy: p.Name, line: line, column: col})
					break
				}
			}
		}
	}
	return out
}

// statement is what denyingPolicies reads of a policy statement.
type statement struct {
	Effect string
	Action stringList
	offset int64 // where it starts in the document
}

// stringList is a policy element that is a string or a list of them.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = []string{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(l))
}

// statements reads a policy document's statements with their offsets.
func statements(doc []byte) []statement {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil
		}
		if key != "Statement" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return nil
			}
			continue
		}
		var out []statement
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			var st statement
			off := skipSpace(doc, dec.InputOffset())
			if json.Unmarshal([]byte(strings.TrimSpace(string(doc[off:]))), &st) == nil {
				st.offset = off
			}
			return append(out, st)
		}
		for dec.More() {
			off := skipSpace(doc, dec.InputOffset())
			var st statement
			if dec.Decode(&st) != nil {
				return out
			}
			st.offset = off
			out = append(out, st)
		}
		return out
	}
	return nil
}

// skipSpace moves past white space and a comma from off.
func skipSpace(doc []byte, off int64) int64 {
	for off < int64(len(doc)) && strings.ContainsRune(" \t\r\n,", rune(doc[off])) {
		off++
	}
	return off
}

// position is the 1-based line and column of offset in doc.
func position(doc []byte, off int64) (int, int) {
	line, col := 1, 1
	for _, c := range doc[:min(off, int64(len(doc)))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
