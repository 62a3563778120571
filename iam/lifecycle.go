package iam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/latentworker/latentworker/awserr"
	"github.com/latentworker/latentworker/config"
	"github.com/latentworker/latentworker/fleet"
)

// API is the part of the IAM client the lifecycle uses. *iam.Client from
// the AWS SDK for Go v2 implements it.
type API interface {
	GetUser(context.Context, *awsiam.GetUserInput, ...func(*awsiam.Options)) (*awsiam.GetUserOutput, error)
	CreateUser(context.Context, *awsiam.CreateUserInput, ...func(*awsiam.Options)) (*awsiam.CreateUserOutput, error)
	TagUser(context.Context, *awsiam.TagUserInput, ...func(*awsiam.Options)) (*awsiam.TagUserOutput, error)
	GetPolicy(context.Context, *awsiam.GetPolicyInput, ...func(*awsiam.Options)) (*awsiam.GetPolicyOutput, error)
	CreatePolicy(context.Context, *awsiam.CreatePolicyInput, ...func(*awsiam.Options)) (*awsiam.CreatePolicyOutput, error)
	GetPolicyVersion(context.Context, *awsiam.GetPolicyVersionInput, ...func(*awsiam.Options)) (*awsiam.GetPolicyVersionOutput, error)
	ListPolicyVersions(context.Context, *awsiam.ListPolicyVersionsInput, ...func(*awsiam.Options)) (*awsiam.ListPolicyVersionsOutput, error)
	CreatePolicyVersion(context.Context, *awsiam.CreatePolicyVersionInput, ...func(*awsiam.Options)) (*awsiam.CreatePolicyVersionOutput, error)
	DeletePolicyVersion(context.Context, *awsiam.DeletePolicyVersionInput, ...func(*awsiam.Options)) (*awsiam.DeletePolicyVersionOutput, error)
	ListAttachedUserPolicies(context.Context, *awsiam.ListAttachedUserPoliciesInput, ...func(*awsiam.Options)) (*awsiam.ListAttachedUserPoliciesOutput, error)
	AttachUserPolicy(context.Context, *awsiam.AttachUserPolicyInput, ...func(*awsiam.Options)) (*awsiam.AttachUserPolicyOutput, error)
	ListAccessKeys(context.Context, *awsiam.ListAccessKeysInput, ...func(*awsiam.Options)) (*awsiam.ListAccessKeysOutput, error)
	CreateAccessKey(context.Context, *awsiam.CreateAccessKeyInput, ...func(*awsiam.Options)) (*awsiam.CreateAccessKeyOutput, error)
	DeleteAccessKey(context.Context, *awsiam.DeleteAccessKeyInput, ...func(*awsiam.Options)) (*awsiam.DeleteAccessKeyOutput, error)
	GetRole(context.Context, *awsiam.GetRoleInput, ...func(*awsiam.Options)) (*awsiam.GetRoleOutput, error)
	CreateRole(context.Context, *awsiam.CreateRoleInput, ...func(*awsiam.Options)) (*awsiam.CreateRoleOutput, error)
	UpdateAssumeRolePolicy(context.Context, *awsiam.UpdateAssumeRolePolicyInput, ...func(*awsiam.Options)) (*awsiam.UpdateAssumeRolePolicyOutput, error)
	GetInstanceProfile(context.Context, *awsiam.GetInstanceProfileInput, ...func(*awsiam.Options)) (*awsiam.GetInstanceProfileOutput, error)
	CreateInstanceProfile(context.Context, *awsiam.CreateInstanceProfileInput, ...func(*awsiam.Options)) (*awsiam.CreateInstanceProfileOutput, error)
	AddRoleToInstanceProfile(context.Context, *awsiam.AddRoleToInstanceProfileInput, ...func(*awsiam.Options)) (*awsiam.AddRoleToInstanceProfileOutput, error)
}

var _ API = (*awsiam.Client)(nil)

// DefaultPath is the IAM path of everything latentworker creates in IAM.
const DefaultPath = "/latentworker/"

// PropagationWait bounds the wait for an IAM entity just created to be
// visible (IAM is eventually consistent: seconds, rarely more).
const PropagationWait = 2 * time.Minute

// MaxKeys is how many access keys AWS allows an IAM user.
const MaxKeys = 2

// Name returns the IAM name of worker's user, role and instance profile:
// "latentworker-WORKER". IAM names are unique in an account whatever
// their path, so the prefix keeps them apart from everyone else's.
func Name(worker string) string { return "latentworker-" + worker }

var workerRE = regexp.MustCompile(`^[\w+=,.@-]{1,51}$`)

// Errors callers can test with errors.Is.
var (
	// ErrKeySlotsFull: the user already has MaxKeys access keys
	// (a *KeySlotsFullError carries them).
	ErrKeySlotsFull = errors.New("both access key slots are taken")
	// ErrNoKey: the user has no access key to rotate or retire.
	ErrNoKey = errors.New("no access key")
	// ErrForeign: an IAM entity with the worker's name exists but was not
	// made by latentworker (another path or another worker's tag).
	ErrForeign = errors.New("not created by latentworker")
)

// Manager runs the IAM lifecycle of workers. Every method is idempotent
// unless it says otherwise, returns errors that name the operation and
// the IAM entity, and makes no change after its context is cancelled.
type Manager struct {
	API  API
	Path string // IAM path; "" means DefaultPath
	// UserSuffix ends the worker's IAM user name (Name(worker) +
	// UserSuffix): "-REGION" for the key of a master in a copy region
	// (handoff --region), whose policy is scoped to that region.
	UserSuffix string
	// Partition is the partition of the region the worker runs in ("":
	// aws): EC2's service principal in the role's trust policy is that
	// partition's.
	Partition string
}

func (m *Manager) partition() string {
	if m.Partition == "" {
		return "aws"
	}
	return m.Partition
}

// NewManager returns a Manager using api with DefaultPath.
func NewManager(api API) *Manager { return &Manager{API: api, Path: DefaultPath} }

func (m *Manager) path() string {
	if m.Path == "" {
		return DefaultPath
	}
	return m.Path
}

// User is a worker's IAM user.
type User struct {
	Name   string
	ARN    string
	Path   string
	Worker string
}

// KeyInfo describes an access key without its secret.
type KeyInfo struct {
	ID      string
	Status  string // "Active" or "Inactive"
	Created time.Time
}

// AccessKey is a newly created access key. Its Secret prints, logs and
// marshals as "(redacted)"; only Secret.Reveal gives the value, and AWS
// never shows it again.
type AccessKey struct {
	KeyInfo
	User   string
	Secret config.Secret
}

func isNotFound(err error) bool { return awserr.Code(err) == "NoSuchEntity" }
func isExists(err error) bool   { return awserr.Code(err) == "EntityAlreadyExists" }

func workerTags(worker string) []types.Tag {
	return []types.Tag{{Key: aws.String(fleet.TagWorker), Value: aws.String(worker)}}
}

func tagValue(tags []types.Tag, key string) (string, bool) {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value), true
		}
	}
	return "", false
}

func checkWorker(worker string) error {
	if !workerRE.MatchString(worker) {
		return fmt.Errorf("worker name %q: IAM names allow 1-51 letters, digits and _+=,.@- here", worker)
	}
	return nil
}

// checkOwned refuses an entity outside our path or tagged for another
// worker.
func (m *Manager) checkOwned(kind, name, path string, tags []types.Tag, worker string) error {
	if path != m.path() {
		return fmt.Errorf("IAM %s %s has path %s, not %s: %w; rename or delete it, or choose another worker name", kind, name, path, m.path(), ErrForeign)
	}
	if v, ok := tagValue(tags, fleet.TagWorker); ok && v != worker {
		return fmt.Errorf("IAM %s %s is tagged %s=%s, not %s: %w", kind, name, fleet.TagWorker, v, worker, ErrForeign)
	}
	return nil
}

// EnsureUser returns worker's IAM user, creating it under the Manager's
// path and tagged with fleet.TagWorker if it does not exist, and setting
// the tag if it is missing. A user of that name outside the path, or
// tagged for another worker, is an error wrapping ErrForeign: it is never
// adopted.
func (m *Manager) EnsureUser(ctx context.Context, worker string) (User, error) {
	if err := checkWorker(worker); err != nil {
		return User{}, err
	}
	name := Name(worker) + m.UserSuffix
	out, err := m.API.GetUser(ctx, &awsiam.GetUserInput{UserName: aws.String(name)})
	if isNotFound(err) {
		_, err = m.API.CreateUser(ctx, &awsiam.CreateUserInput{
			UserName: aws.String(name),
			Path:     aws.String(m.path()),
			Tags:     workerTags(worker),
		})
		if err != nil && !isExists(err) {
			return User{}, fmt.Errorf("creating IAM user %s: %w", name, err)
		}
		// IAM is eventually consistent: a Get right after the Create may
		// answer NoSuchEntity.
		out, err = awsiam.NewUserExistsWaiter(m.API).WaitForOutput(ctx, &awsiam.GetUserInput{UserName: aws.String(name)}, PropagationWait)
	}
	if err != nil {
		return User{}, fmt.Errorf("getting IAM user %s: %w", name, err)
	}
	u := out.User
	if err := m.checkOwned("user", name, aws.ToString(u.Path), u.Tags, worker); err != nil {
		return User{}, err
	}
	if _, ok := tagValue(u.Tags, fleet.TagWorker); !ok {
		if _, err := m.API.TagUser(ctx, &awsiam.TagUserInput{UserName: aws.String(name), Tags: workerTags(worker)}); err != nil {
			return User{}, fmt.Errorf("tagging IAM user %s: %w", name, err)
		}
	}
	return User{Name: name, ARN: aws.ToString(u.Arn), Path: aws.ToString(u.Path), Worker: worker}, nil
}

// PutPolicy makes doc the permissions of the user and reports whether
// that changed anything. The document lives in a customer managed policy
// named like the user, under the Manager's path, attached to the user: IAM
// allows a user only 2,048 characters of inline policy (whitespace not
// counted) and the scoped worker policy takes 2,200-2,800, while a managed
// policy may hold 6,144. A different document becomes a new default policy
// version (the oldest non-default version is deleted when IAM's five are
// taken), so the previous one stays visible in IAM; the same document
// writes nothing. The policy is attached if it is not.
func (m *Manager) PutPolicy(ctx context.Context, u User, doc Document) (changed bool, err error) {
	b, err := doc.JSON()
	if err != nil {
		return false, err
	}
	arn, err := m.policyARN(u)
	if err != nil {
		return false, err
	}
	pol, err := m.API.GetPolicy(ctx, &awsiam.GetPolicyInput{PolicyArn: aws.String(arn)})
	switch {
	case isNotFound(err):
		_, err := m.API.CreatePolicy(ctx, &awsiam.CreatePolicyInput{
			PolicyName:     aws.String(u.Name),
			Path:           aws.String(m.path()),
			PolicyDocument: aws.String(string(b)),
			Description:    aws.String("latentworker: the EC2 calls buildbot's EC2LatentWorker makes for worker " + u.Worker),
			Tags:           workerTags(u.Worker),
		})
		if err != nil {
			return false, fmt.Errorf("creating IAM policy %s: %w", arn, err)
		}
		changed = true
	case err != nil:
		return false, fmt.Errorf("getting IAM policy %s: %w", arn, err)
	default:
		cur, err := m.API.GetPolicyVersion(ctx, &awsiam.GetPolicyVersionInput{PolicyArn: aws.String(arn), VersionId: pol.Policy.DefaultVersionId})
		if err != nil {
			return false, fmt.Errorf("getting the default version of IAM policy %s: %w", arn, err)
		}
		if !sameDocument([]byte(decodePolicy(cur.PolicyVersion.Document)), b) {
			if err := m.newVersion(ctx, arn, b); err != nil {
				return false, err
			}
			changed = true
		}
	}
	if err := m.attach(ctx, u, arn); err != nil {
		return changed, err
	}
	return changed, nil
}

// Policy returns the default version of the user's managed policy, as
// PutPolicy last wrote it.
func (m *Manager) Policy(ctx context.Context, u User) (Document, error) {
	var doc Document
	arn, err := m.policyARN(u)
	if err != nil {
		return doc, err
	}
	pol, err := m.API.GetPolicy(ctx, &awsiam.GetPolicyInput{PolicyArn: aws.String(arn)})
	if err != nil {
		return doc, fmt.Errorf("getting IAM policy %s: %w", arn, err)
	}
	cur, err := m.API.GetPolicyVersion(ctx, &awsiam.GetPolicyVersionInput{PolicyArn: aws.String(arn), VersionId: pol.Policy.DefaultVersionId})
	if err != nil {
		return doc, fmt.Errorf("getting the default version of IAM policy %s: %w", arn, err)
	}
	if err := json.Unmarshal([]byte(decodePolicy(cur.PolicyVersion.Document)), &doc); err != nil {
		return doc, fmt.Errorf("IAM policy %s: %w", arn, err)
	}
	return doc, nil
}

// decodePolicy returns a policy document as IAM returned it, URL-decoded
// (IAM returns documents URL-encoded, RFC 3986).
func decodePolicy(p *string) string {
	text := aws.ToString(p)
	if dec, err := url.QueryUnescape(text); err == nil {
		return dec
	}
	return text
}

// policyARN returns the ARN of the user's managed policy, in the user's
// account and partition.
func (m *Manager) policyARN(u User) (string, error) {
	f := strings.SplitN(u.ARN, ":", 6)
	if len(f) != 6 || f[0] != "arn" || f[2] != "iam" {
		return "", fmt.Errorf("IAM user %s: cannot read the account from ARN %q", u.Name, u.ARN)
	}
	return fmt.Sprintf("arn:%s:iam::%s:policy%s%s", f[1], f[4], m.path(), u.Name), nil
}

// newVersion makes b the default version of the policy, deleting the
// oldest non-default version first when all five are taken.
func (m *Manager) newVersion(ctx context.Context, arn string, b []byte) error {
	vs, err := m.API.ListPolicyVersions(ctx, &awsiam.ListPolicyVersionsInput{PolicyArn: aws.String(arn)})
	if err != nil {
		return fmt.Errorf("listing versions of IAM policy %s: %w", arn, err)
	}
	if len(vs.Versions) >= 5 {
		var oldest *types.PolicyVersion
		for i, v := range vs.Versions {
			if !v.IsDefaultVersion && (oldest == nil || aws.ToTime(v.CreateDate).Before(aws.ToTime(oldest.CreateDate))) {
				oldest = &vs.Versions[i]
			}
		}
		if oldest != nil {
			if _, err := m.API.DeletePolicyVersion(ctx, &awsiam.DeletePolicyVersionInput{PolicyArn: aws.String(arn), VersionId: oldest.VersionId}); err != nil {
				return fmt.Errorf("deleting version %s of IAM policy %s: %w", aws.ToString(oldest.VersionId), arn, err)
			}
		}
	}
	if _, err := m.API.CreatePolicyVersion(ctx, &awsiam.CreatePolicyVersionInput{PolicyArn: aws.String(arn), PolicyDocument: aws.String(string(b)), SetAsDefault: true}); err != nil {
		return fmt.Errorf("creating a version of IAM policy %s: %w", arn, err)
	}
	return nil
}

// attach attaches the policy to the user unless it is attached.
func (m *Manager) attach(ctx context.Context, u User, arn string) error {
	p := awsiam.NewListAttachedUserPoliciesPaginator(m.API, &awsiam.ListAttachedUserPoliciesInput{UserName: aws.String(u.Name)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing policies attached to IAM user %s: %w", u.Name, err)
		}
		for _, a := range out.AttachedPolicies {
			if aws.ToString(a.PolicyArn) == arn {
				return nil
			}
		}
	}
	if _, err := m.API.AttachUserPolicy(ctx, &awsiam.AttachUserPolicyInput{UserName: aws.String(u.Name), PolicyArn: aws.String(arn)}); err != nil {
		return fmt.Errorf("attaching IAM policy %s to user %s: %w", arn, u.Name, err)
	}
	return nil
}

// Keys returns the user's access keys, oldest first.
func (m *Manager) Keys(ctx context.Context, u User) ([]KeyInfo, error) {
	var keys []KeyInfo
	p := awsiam.NewListAccessKeysPaginator(m.API, &awsiam.ListAccessKeysInput{UserName: aws.String(u.Name)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing access keys of IAM user %s: %w", u.Name, err)
		}
		for _, k := range out.AccessKeyMetadata {
			keys = append(keys, KeyInfo{ID: aws.ToString(k.AccessKeyId), Status: string(k.Status), Created: aws.ToTime(k.CreateDate)})
		}
	}
	slices.SortStableFunc(keys, func(a, b KeyInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, nil
}

// KeySlotsFullError is returned when a user already has MaxKeys access
// keys. It matches ErrKeySlotsFull with errors.Is.
type KeySlotsFullError struct {
	User string
	Keys []KeyInfo // oldest first
}

func (e *KeySlotsFullError) Error() string {
	var ids []string
	for _, k := range e.Keys {
		ids = append(ids, fmt.Sprintf("%s (%s, created %s)", k.ID, strings.ToLower(k.Status), k.Created.UTC().Format(time.RFC3339)))
	}
	msg := fmt.Sprintf("IAM user %s already has %d access keys, the most AWS allows: %s", e.User, len(e.Keys), strings.Join(ids, " and "))
	if len(e.Keys) > 0 {
		old := e.Keys[0].ID
		msg += fmt.Sprintf("; once the buildmaster admins use the newer key, delete the older one with --retire-old (or: aws iam delete-access-key --user-name %s --access-key-id %s), then try again", e.User, old)
	}
	return msg
}

// Is makes errors.Is(err, ErrKeySlotsFull) true.
func (e *KeySlotsFullError) Is(target error) bool { return target == ErrKeySlotsFull }

// CreateKey creates an access key for the user. When the user already has
// MaxKeys keys it creates nothing and returns a *KeySlotsFullError naming
// them. It is not idempotent: each call that succeeds makes a new key.
func (m *Manager) CreateKey(ctx context.Context, u User) (AccessKey, error) {
	keys, err := m.Keys(ctx, u)
	if err != nil {
		return AccessKey{}, err
	}
	if len(keys) >= MaxKeys {
		return AccessKey{}, &KeySlotsFullError{User: u.Name, Keys: keys}
	}
	out, err := m.API.CreateAccessKey(ctx, &awsiam.CreateAccessKeyInput{UserName: aws.String(u.Name)})
	if awserr.Code(err) == "LimitExceeded" {
		// Someone made a key since we listed them.
		if keys, lerr := m.Keys(ctx, u); lerr == nil {
			return AccessKey{}, &KeySlotsFullError{User: u.Name, Keys: keys}
		}
	}
	if err != nil {
		return AccessKey{}, fmt.Errorf("creating an access key for IAM user %s: %w", u.Name, err)
	}
	k := out.AccessKey
	return AccessKey{
		KeyInfo: KeyInfo{ID: aws.ToString(k.AccessKeyId), Status: string(k.Status), Created: aws.ToTime(k.CreateDate)},
		User:    u.Name,
		Secret:  config.NewSecret(aws.ToString(k.SecretAccessKey)),
	}, nil
}

// Rotation is the result of Rotate: the key the admins use now, which
// stays active, and the new one they switch to.
type Rotation struct {
	Old KeyInfo
	New AccessKey
}

// Rotate creates a second access key while the existing one stays active,
// so the admins can switch without downtime. The user must have exactly
// one key: with none it returns ErrNoKey (create one with CreateKey), with
// two a *KeySlotsFullError.
func (m *Manager) Rotate(ctx context.Context, u User) (Rotation, error) {
	keys, err := m.Keys(ctx, u)
	if err != nil {
		return Rotation{}, err
	}
	switch {
	case len(keys) == 0:
		return Rotation{}, fmt.Errorf("rotating the access key of IAM user %s: %w to rotate; create one first", u.Name, ErrNoKey)
	case len(keys) >= MaxKeys:
		return Rotation{}, &KeySlotsFullError{User: u.Name, Keys: keys}
	}
	k, err := m.CreateKey(ctx, u)
	if err != nil {
		return Rotation{}, err
	}
	return Rotation{Old: keys[0], New: k}, nil
}

// RetireOld deletes every access key of the user except keep, once the
// admins have switched to keep. An empty keep means the newest key; if
// two keys were created in the same second, keep must be given. With
// fewer than two keys there is nothing to retire and it returns
// (nil, ErrNoKey) wrapped. It returns the keys it deleted.
func (m *Manager) RetireOld(ctx context.Context, u User, keep string) ([]KeyInfo, error) {
	keys, err := m.Keys(ctx, u)
	if err != nil {
		return nil, err
	}
	if len(keys) < 2 {
		return nil, fmt.Errorf("retiring old access keys of IAM user %s: it has %d key(s), %w to retire", u.Name, len(keys), ErrNoKey)
	}
	if keep == "" {
		newest, prev := keys[len(keys)-1], keys[len(keys)-2]
		if newest.Created.Equal(prev.Created) {
			return nil, fmt.Errorf("retiring old access keys of IAM user %s: keys %s and %s were created at the same time; name the key to keep", u.Name, prev.ID, newest.ID)
		}
		keep = newest.ID
	}
	if !slices.ContainsFunc(keys, func(k KeyInfo) bool { return k.ID == keep }) {
		return nil, fmt.Errorf("retiring old access keys of IAM user %s: it has no key %s to keep", u.Name, keep)
	}
	var deleted []KeyInfo
	for _, k := range keys {
		if k.ID == keep {
			continue
		}
		if _, err := m.API.DeleteAccessKey(ctx, &awsiam.DeleteAccessKeyInput{UserName: aws.String(u.Name), AccessKeyId: aws.String(k.ID)}); err != nil && !isNotFound(err) {
			return deleted, fmt.Errorf("deleting access key %s of IAM user %s: %w", k.ID, u.Name, err)
		}
		deleted = append(deleted, k)
	}
	return deleted, nil
}

// InstanceProfile is a worker's dedicated instance profile and the role in
// it. EC2LatentWorker names it with instance_profile_name=Name.
type InstanceProfile struct {
	Name     string
	ARN      string
	RoleName string
	RoleARN  string
}

// EnsureInstanceProfile returns worker's instance profile, creating what
// is missing: a role under the Manager's path whose trust policy lets only
// EC2 assume it and which has no permissions, an instance profile of the
// same name, and the role in the profile. An existing role's trust policy
// is reset to EC2TrustPolicy. A role or profile of that name outside the
// path, or a profile holding another role, is an error.
func (m *Manager) EnsureInstanceProfile(ctx context.Context, worker string) (InstanceProfile, error) {
	if err := checkWorker(worker); err != nil {
		return InstanceProfile{}, err
	}
	name := Name(worker)
	trust, err := EC2TrustPolicy(m.partition()).JSON()
	if err != nil {
		return InstanceProfile{}, err
	}

	role, err := m.API.GetRole(ctx, &awsiam.GetRoleInput{RoleName: aws.String(name)})
	if isNotFound(err) {
		_, err = m.API.CreateRole(ctx, &awsiam.CreateRoleInput{
			RoleName:                 aws.String(name),
			Path:                     aws.String(m.path()),
			AssumeRolePolicyDocument: aws.String(string(trust)),
			Description:              aws.String("latentworker: identity of buildbot worker " + worker + "'s instances; no permissions"),
			Tags:                     workerTags(worker),
		})
		if err != nil && !isExists(err) {
			return InstanceProfile{}, fmt.Errorf("creating IAM role %s: %w", name, err)
		}
		role, err = awsiam.NewRoleExistsWaiter(m.API).WaitForOutput(ctx, &awsiam.GetRoleInput{RoleName: aws.String(name)}, PropagationWait)
	}
	if err != nil {
		return InstanceProfile{}, fmt.Errorf("getting IAM role %s: %w", name, err)
	}
	r := role.Role
	if err := m.checkOwned("role", name, aws.ToString(r.Path), r.Tags, worker); err != nil {
		return InstanceProfile{}, err
	}
	if !sameDocument([]byte(decodePolicy(r.AssumeRolePolicyDocument)), trust) {
		if _, err := m.API.UpdateAssumeRolePolicy(ctx, &awsiam.UpdateAssumeRolePolicyInput{RoleName: aws.String(name), PolicyDocument: aws.String(string(trust))}); err != nil {
			return InstanceProfile{}, fmt.Errorf("updating the trust policy of IAM role %s: %w", name, err)
		}
	}

	prof, err := m.API.GetInstanceProfile(ctx, &awsiam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
	if isNotFound(err) {
		_, err = m.API.CreateInstanceProfile(ctx, &awsiam.CreateInstanceProfileInput{
			InstanceProfileName: aws.String(name),
			Path:                aws.String(m.path()),
			Tags:                workerTags(worker),
		})
		if err != nil && !isExists(err) {
			return InstanceProfile{}, fmt.Errorf("creating IAM instance profile %s: %w", name, err)
		}
		prof, err = awsiam.NewInstanceProfileExistsWaiter(m.API).WaitForOutput(ctx, &awsiam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)}, PropagationWait)
	}
	if err != nil {
		return InstanceProfile{}, fmt.Errorf("getting IAM instance profile %s: %w", name, err)
	}
	p := prof.InstanceProfile
	if err := m.checkOwned("instance profile", name, aws.ToString(p.Path), p.Tags, worker); err != nil {
		return InstanceProfile{}, err
	}
	switch {
	case len(p.Roles) == 0:
		_, err := m.API.AddRoleToInstanceProfile(ctx, &awsiam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(name), RoleName: aws.String(name)})
		if err != nil && awserr.Code(err) != "LimitExceeded" {
			return InstanceProfile{}, fmt.Errorf("adding IAM role %s to instance profile %s: %w", name, name, err)
		}
	case aws.ToString(p.Roles[0].RoleName) != name:
		return InstanceProfile{}, fmt.Errorf("IAM instance profile %s holds role %s, not %s: %w", name, aws.ToString(p.Roles[0].RoleName), name, ErrForeign)
	}
	return InstanceProfile{Name: name, ARN: aws.ToString(p.Arn), RoleName: name, RoleARN: aws.ToString(r.Arn)}, nil
}
